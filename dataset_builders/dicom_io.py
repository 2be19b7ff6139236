"""DICOM -> 8-bit PIL image, and the only header fields a builder may ever write out.

Privacy contract: nothing from a DICOM header reaches an output (file names, JSON, cards, logs or
error messages) unless its keyword is in :data:`ALLOWED_FIELDS`, and :func:`allowed_fields` is
the only way this module hands header values out. Errors name the file (a path the user chose)
and a fixed description of the problem, never an exception's text, which may quote a header value;
pydicom's own warnings and log records are silenced while a file is read or converted, for the
same reason.

Conversion (docs/task-format.md, "Raw datasets"): the modality LUT (rescale slope/intercept or a Modality LUT), then
``pydicom.pixels.apply_voi_lut`` (a VOI LUT, else window centre/width; float output), MONOCHROME1
inverted here (``apply_voi_lut`` does not), then scaled to 0-255: a VOI transform's output range
maps to 0-255 as the standard says, pixels without one are min-max scaled. Colour images (RGB,
YBR converted by pydicom, PALETTE COLOR through its palette) are returned as RGB. Needs the
``medical`` extra (pydicom>=3, numpy); pydicom is imported on first use. The only non-allow-listed
value an error may name is the transfer syntax (a technical UID name from the file meta).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmim_eval.errors import DataError, MissingBackendError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image
    from pydicom.dataset import Dataset

# Technical fields that describe the picture, never the person, the place or the time.
ALLOWED_FIELDS: tuple[str, ...] = (
    "Modality", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "PresentationLUTShape", "ViewPosition",
    "ImageLaterality", "Laterality", "BodyPartExamined", "PixelSpacing", "ImagerPixelSpacing",
    "SliceThickness", "PatientOrientation",
)
DECODER_HINT = ("pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (JPEG, JPEG-LS, JPEG 2000), "
                "or pip install python-gdcm")


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise MissingBackendError("reading DICOM needs pydicom: pip install 'medmim-eval[medical]'") from None
    return pydicom


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records, whose text may quote header values.

    The level is raised on the ``pydicom`` logger itself, so its child loggers (which keep the
    default NOTSET level) are silenced too, including ones created inside the block.
    """
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def read_dicom(path: Path) -> Dataset:
    """Read a DICOM file (header and pixel data, not decoded); ``DataError`` naming the file if unreadable."""
    pydicom = _pydicom()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: DICOM file not found")
    with _quiet_pydicom():
        try:
            return pydicom.dcmread(path)
        except Exception as exc:  # any parser failure; its text may quote header values
            raise DataError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None


def allowed_fields(dataset: Dataset) -> dict[str, Any]:
    """The header fields in :data:`ALLOWED_FIELDS` that are present, as plain JSON-able values."""
    found: dict[str, Any] = {}
    with _quiet_pydicom():
        for keyword in ALLOWED_FIELDS:
            try:
                value = dataset.get(keyword)
            except Exception:  # a malformed element is simply left out
                continue
            if value is None or value == "":
                continue
            found[keyword] = _plain(value)
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str)):
        # pydicom's DS/IS values subclass float/int/str; keep the plain type.
        for kind in (int, float, str):
            if isinstance(value, kind):
                return kind(value)
    return str(value)


def dicom_to_image(path: Path, *, frame: int = 0) -> Image.Image:
    """Convert one DICOM file (``frame`` of a multi-frame file) to an 8-bit PIL image.

    Returns mode ``"L"`` for MONOCHROME1/2 (MONOCHROME1 inverted so that high = bright) and
    ``"RGB"`` for colour. Raises ``MissingBackendError`` when the transfer syntax is compressed and
    no installed decoder handles it (naming the packages to install and the file), and
    ``DataError`` naming the file for anything else that cannot be read or decoded.
    """
    dataset = read_dicom(path)
    pixels = _pixels(dataset, Path(path), frame)
    with _quiet_pydicom():
        try:
            return _to_image(pixels, dataset)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            raise DataError(f"{path}: pixel values cannot be converted to 8 bits ({type(exc).__name__}); "
                            "check the modality LUT / VOI LUT attributes") from None


def _pixels(dataset: Dataset, path: Path, frame: int) -> np.ndarray:
    import numpy as np

    if "PixelData" not in dataset:
        raise DataError(f"{path}: DICOM file holds no image (no Pixel Data element)")
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    with _quiet_pydicom():
        if syntax is not None and syntax.is_compressed and not _decoder_available(syntax):
            raise MissingBackendError(f"{path}: pixel data is compressed ({syntax.name}) and no installed "
                                      f"decoder reads it; {DECODER_HINT}")
        try:
            pixels = dataset.pixel_array
        except Exception as exc:  # truncated or corrupt pixel data; the text may quote header values
            raise DataError(f"{path}: pixel data cannot be decoded ({type(exc).__name__}); "
                            "the file may be truncated or corrupt") from None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        if not 0 <= frame < frames:
            raise DataError(f"{path}: frame {frame} asked for, but the file has {frames} frames")
        pixels = pixels[frame]
    return np.asarray(pixels)


def _decoder_available(syntax: Any) -> bool:
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(syntax).is_available)
    except (ImportError, NotImplementedError, ValueError):
        return False


def _to_image(pixels: np.ndarray, dataset: Dataset) -> Image.Image:
    import numpy as np
    from PIL import Image
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR" and pixels.ndim == 2:
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, dataset)
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # colour: pydicom already converted YBR to RGB
        rgb = pixels if pixels.dtype == np.uint8 else _scale(pixels.astype(np.float64), None)
        return Image.fromarray(np.ascontiguousarray(rgb))
    if pixels.ndim != 2:
        raise ValueError("expected a 2-D greyscale frame")
    values = apply_modality_lut(pixels, dataset)
    output_range = _voi_output_range(dataset)
    values = apply_voi_lut(values, dataset, index=0, prefer_lut=True)
    grey = _scale(np.asarray(values, dtype=np.float64), output_range)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey)  # uint8 2-D: mode "L"


def _voi_output_range(dataset: Dataset) -> tuple[float, float] | None:
    """The value range ``apply_voi_lut`` maps into, or None when it will leave the pixels alone."""
    voi = dataset.get("VOILUTSequence")
    if voi and voi[0].get("LUTDescriptor") is not None and voi[0].get("LUTData") is not None:
        bits = int(voi[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if dataset.get("WindowCenter") is None or dataset.get("WindowWidth") is None:
        return None
    # Windowing maps into the stored value range, moved by the rescale (as pydicom computes it).
    if dataset.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** int(dataset.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(dataset.PixelRepresentation) == 0:
        low, high = 0.0, 2.0 ** int(dataset.BitsStored) - 1
    else:
        low, high = -(2.0 ** (int(dataset.BitsStored) - 1)), 2.0 ** (int(dataset.BitsStored) - 1) - 1
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _scale(values: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """Map ``value_range`` (or the values' own min-max) linearly to 0-255 as uint8."""
    import numpy as np

    low, high = value_range if value_range is not None else (float(np.min(values)), float(np.max(values)))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) / (high - low) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
