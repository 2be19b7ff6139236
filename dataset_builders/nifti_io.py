"""NIfTI volume -> 2-D axial 8-bit PIL image (nibabel), with orientation handled explicitly.

Conventions (docs/task-format.md, "Raw datasets"): the volume is reoriented with ``nibabel.as_closest_canonical`` to RAS+
(first axis towards the patient's Right, second Anterior, third Superior), so ``data[:, :, k]``
is an axial slice whatever the file's own voxel order; ``np.rot90`` turns it for display:
anterior at the top and the patient's left on the image's left (neurological convention).
Intensities are normalised robustly: the 0.5th and 99.5th percentiles of the volume's non-zero
finite voxels map to 0 and 255 (one mapping for all slices of a volume, so slices and weeks stay
comparable), values outside are clipped, non-finite voxels count as 0. An empty volume (no
non-zero voxel) or an all-zero slice is a ``DataError`` naming the file (and the slice).
Needs the ``medical`` extra (nibabel, numpy); both are imported on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmim_eval.errors import DataError, MissingBackendError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class AxialVolume:
    """One RAS+ volume ready to be sliced: ``data[:, :, k]`` is axial slice ``k`` (inferior first)."""

    path: Path
    data: np.ndarray  # float32, 3-D, RAS+
    low: float  # intensity mapped to 0
    high: float  # intensity mapped to 255

    @property
    def n_axial(self) -> int:
        return int(self.data.shape[2])

    def axial_image(self, index: int | None = None) -> Image.Image:
        """Axial slice ``index`` (default: the middle one) as an 8-bit ``"L"`` image for display."""
        import numpy as np
        from PIL import Image

        k = self.n_axial // 2 if index is None else index
        if not 0 <= k < self.n_axial:
            raise DataError(f"{self.path}: axial slice {k} asked for, but the volume has {self.n_axial} "
                            f"(0-{self.n_axial - 1})")
        plane = self.data[:, :, k]
        if not np.any(plane):
            raise DataError(f"{self.path}: axial slice {k} is all zero; pick another slice")
        scaled = (np.clip(plane, self.low, self.high) - self.low) / (self.high - self.low) * 255.0
        display = np.rot90(np.round(scaled).astype(np.uint8))
        return Image.fromarray(np.ascontiguousarray(display))


def load_axial_volume(path: Path, *, volume: int = 0) -> AxialVolume:
    """Load a NIfTI file as a RAS+ 3-D volume (``volume`` picks one of a 4-D series).

    Raises ``DataError`` naming the file when it cannot be read, is not 3-D/4-D, or has no
    non-zero voxel; ``MissingBackendError`` when nibabel is not installed.
    """
    nib = _nibabel()
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: NIfTI file not found")
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib and numpy errors
        raise DataError(f"{path}: not a readable NIfTI volume ({type(exc).__name__})") from None
    if data.ndim == 4:
        if not 0 <= volume < data.shape[3]:
            raise DataError(f"{path}: volume {volume} asked for, but the series has {data.shape[3]}")
        data = data[..., volume]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D or 4-D volume, found {data.ndim}-D with shape {data.shape}")
    data = np.where(np.isfinite(data), data, 0).astype(np.float32)
    voxels = data[data != 0]
    if voxels.size == 0:
        raise DataError(f"{path}: empty volume (no non-zero voxel)")
    low, high = (float(v) for v in np.percentile(voxels, PERCENTILES))
    if high <= low:  # a constant volume (a mask): map its one value to white
        low, high = min(0.0, float(voxels.min())), float(voxels.max())
        if high <= low:
            low, high = float(voxels.min()) - 1.0, float(voxels.max())
    return AxialVolume(path=path, data=data, low=low, high=high)


def nifti_axial_image(path: Path, index: int | None = None, *, volume: int = 0) -> Image.Image:
    """Axial slice ``index`` (default: middle) of a NIfTI file as an 8-bit display image."""
    return load_axial_volume(path, volume=volume).axial_image(index)


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError:
        raise MissingBackendError("reading NIfTI needs nibabel: pip install 'medmim-eval[medical]'") from None
    return nibabel
