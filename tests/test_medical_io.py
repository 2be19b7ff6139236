"""DICOM and NIfTI conversion on real files (pydicom's and nibabel's bundled test data): 8-bit
output, windowing, MONOCHROME1, orientation, clear errors, and no header value outside the
allow-list in any output, log or message — directly and through a builder run by the CLI."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

np = pytest.importorskip("numpy")
pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

from nibabel.testing import data_path as NIBABEL_DATA  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

from medmim_eval.dataset_builders.dicom_io import (  # noqa: E402
    ALLOWED_FIELDS, allowed_fields, dicom_to_image, read_dicom,
)
from medmim_eval.dataset_builders.nifti_io import load_axial_volume, nifti_axial_image  # noqa: E402
from medmim_eval.errors import DataError, MissingBackendError  # noqa: E402

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "InstitutionName",
               "InstitutionAddress", "ReferringPhysicianName", "OperatorsName", "AccessionNumber", "StudyID",
               "StudyDate", "StudyTime", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def identifying_values(*paths: Path) -> set[str]:
    """Header values that must never reach an output: identifying fields, and every PN component."""
    values: set[str] = set()
    for path in paths:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in IDENTIFYING:
            value = dataset.get(keyword)
            if value not in (None, ""):
                values.add(str(value))
                values.update(part for part in str(value).replace("=", "^").split("^"))
    return {v.strip() for v in values if len(v.strip()) >= 4}


def leaks(values: set[str], *texts: str, folder: Path | None = None) -> list[str]:
    blobs = [t.encode() for t in texts]
    if folder is not None:
        paths = list(folder.rglob("*"))
        blobs += [p.read_bytes() for p in paths if p.is_file()] + [str(p).encode() for p in paths]
    return sorted(v for v in values if any(v.encode() in blob for blob in blobs))


@pytest.fixture
def dicoms(tmp_path: Path) -> dict[str, Path]:
    """Real pydicom test files, plus variants written from them (MONOCHROME1, windowed CT, truncated)."""
    folder = tmp_path / "dicom"
    folder.mkdir()
    files = {name: Path(shutil.copy(get_testdata_file(f"{name}.dcm"), folder)) for name in ("CT_small", "MR_small")}
    mono1 = pydicom.dcmread(files["MR_small"])
    mono1.PhotometricInterpretation = "MONOCHROME1"
    files["MR_mono1"] = folder / "MR_mono1.dcm"
    mono1.save_as(files["MR_mono1"])
    windowed = pydicom.dcmread(files["CT_small"])
    windowed.WindowCenter, windowed.WindowWidth = 40, 400  # a soft-tissue window in Hounsfield units
    files["CT_window"] = folder / "CT_window.dcm"
    windowed.save_as(files["CT_window"])
    raw = files["CT_small"].read_bytes()
    files["CT_truncated"] = folder / "CT_truncated.dcm"
    files["CT_truncated"].write_bytes(raw[: len(raw) - 20000])
    return files


def test_allowed_fields_keep_only_the_allow_list(dicoms: dict[str, Path]) -> None:
    fields = allowed_fields(read_dicom(dicoms["CT_small"]))
    assert set(fields) <= set(ALLOWED_FIELDS)
    assert fields["Modality"] == "CT" and fields["Rows"] == 128 and fields["PhotometricInterpretation"] == "MONOCHROME2"
    json.dumps(fields)  # plain values only
    assert not leaks(identifying_values(dicoms["CT_small"]), json.dumps(fields))


def test_the_leak_check_finds_a_patient_name_when_there_is_one(dicoms: dict[str, Path]) -> None:
    values = identifying_values(dicoms["CT_small"])
    assert "CompressedSamples^CT1" in values
    assert leaks(values, "file for CompressedSamples^CT1.png")


def test_window_is_applied_to_modality_lut_output(dicoms: dict[str, Path]) -> None:
    dataset = pydicom.dcmread(dicoms["CT_window"])
    hounsfield = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    # DICOM PS3.3 C.11.2.1.2.1, LINEAR: centre 40, width 400, mapped to 0-255.
    expected = np.clip(((hounsfield - 39.5) / 399 + 0.5), 0, 1) * 255
    image = dicom_to_image(dicoms["CT_window"])
    assert image.mode == "L" and image.size == (128, 128)
    assert np.abs(np.asarray(image, dtype=float) - expected).max() <= 1.0


def test_voi_window_from_the_file_is_used_not_min_max(dicoms: dict[str, Path]) -> None:
    dataset = pydicom.dcmread(dicoms["MR_small"])  # Window Center 600, Width 1600 in the header
    expected = np.clip(((dataset.pixel_array - 599.5) / 1599 + 0.5), 0, 1) * 255
    assert np.abs(np.asarray(dicom_to_image(dicoms["MR_small"]), dtype=float) - expected).max() <= 1.0


def test_monochrome1_is_inverted(dicoms: dict[str, Path]) -> None:
    normal = np.asarray(dicom_to_image(dicoms["MR_small"]), dtype=int)
    inverted = np.asarray(dicom_to_image(dicoms["MR_mono1"]), dtype=int)
    assert normal.std() > 10
    assert np.array_equal(inverted, 255 - normal)


def test_compressed_without_decoder_is_one_clear_error(tmp_path: Path) -> None:
    from pydicom.pixels import get_decoder

    path = Path(shutil.copy(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), tmp_path))
    syntax = pydicom.dcmread(path).file_meta.TransferSyntaxUID
    if get_decoder(syntax).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(MissingBackendError) as info:
        dicom_to_image(path)
    message = str(info.value)
    assert str(path) in message and "pylibjpeg" in message and "python-gdcm" in message
    assert "\n" not in message and not leaks(identifying_values(path), message)


def test_unreadable_dicom_errors_name_the_file_and_no_header_value(
        dicoms: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_text("not a DICOM file")
    caplog.set_level(logging.DEBUG)
    messages = []
    for path in (dicoms["CT_truncated"], not_dicom):
        with pytest.raises(DataError) as info:
            dicom_to_image(path)
        messages.append(str(info.value))
        assert str(path) in messages[-1]
    captured = capsys.readouterr()
    values = identifying_values(dicoms["CT_small"])
    assert not leaks(values, *messages, captured.out, captured.err, caplog.text)


# -- NIfTI ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["example4d.nii.gz", "anatomical.nii"])
def test_nibabel_test_images_convert_to_8_bit_axial_slices(name: str) -> None:
    path = Path(NIBABEL_DATA) / name
    canonical = nib.as_closest_canonical(nib.load(path))
    image = nifti_axial_image(path)
    assert image.mode == "L"
    assert image.size == canonical.shape[:2]  # width = left-right, height = posterior-anterior
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255 and pixels.std() > 10


def _marker_volume() -> tuple["np.ndarray", "np.ndarray"]:
    """A RAS+ volume, 20 (L->R) x 30 (P->A) x 10 (I->S), with a bright right-anterior marker."""
    data = np.full((20, 30, 10), 10.0, dtype=np.float32)
    data[15, 25, 5] = 1000.0
    return data, np.diag([2.0, 2.0, 3.0, 1.0])


def test_non_canonical_affine_gives_the_same_picture_as_ras(tmp_path: Path) -> None:
    data, affine = _marker_volume()
    ras = nib.Nifti1Image(data, affine)
    nib.save(ras, tmp_path / "ras.nii.gz")
    # The same physical volume stored posterior-superior-left: other voxel order, other affine.
    orientations = nib.orientations
    to_psl = orientations.ornt_transform(orientations.io_orientation(affine), orientations.axcodes2ornt("PSL"))
    reoriented = ras.as_reoriented(to_psl)
    assert nib.aff2axcodes(reoriented.affine) == ("P", "S", "L")
    nib.save(reoriented, tmp_path / "psl.nii.gz")
    from_ras = np.asarray(nifti_axial_image(tmp_path / "ras.nii.gz", 5))
    from_psl = np.asarray(nifti_axial_image(tmp_path / "psl.nii.gz", 5))
    assert np.array_equal(from_ras, from_psl)
    # Display: anterior at the top, the patient's right on the image's right (np.rot90 of RAS+).
    row, col = np.unravel_index(np.argmax(from_psl), from_psl.shape)
    assert (row, col) == (30 - 1 - 25, 15)


def test_empty_volume_and_all_zero_slice_are_clear_errors(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), dtype=np.float32), np.eye(4)), tmp_path / "empty.nii.gz")
    with pytest.raises(DataError, match="empty volume") as info:
        load_axial_volume(tmp_path / "empty.nii.gz")
    assert str(tmp_path / "empty.nii.gz") in str(info.value)
    data = np.zeros((8, 8, 4), dtype=np.float32)
    data[:, :, 2] = 5.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "one.nii.gz")
    volume = load_axial_volume(tmp_path / "one.nii.gz")
    assert np.asarray(volume.axial_image(2)).max() == 255
    with pytest.raises(DataError, match="slice 0 is all zero"):
        volume.axial_image(0)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes((Path(NIBABEL_DATA) / "example4d.nii.gz").read_bytes()[:2000])
    with pytest.raises(DataError, match="not a readable NIfTI"):
        load_axial_volume(truncated)


# -- through a builder and the CLI ----------------------------------------------------------------

PROBE = '''"""A throw-away builder: converts the files listed in files.csv with the medical I/O modules."""
import csv
import json

from medmim_eval.errors import MedmimError
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import BuilderEntry


def build(options, writer):
    from medmim_eval.dataset_builders.dicom_io import allowed_fields, dicom_to_image, read_dicom
    from medmim_eval.dataset_builders.nifti_io import nifti_axial_image

    table = options.source / "files.csv"
    writer.record_input(table)
    with open(table, newline="") as handle:
        for row_number, row in enumerate(csv.DictReader(handle), start=2):
            path = options.source / row["file"]
            try:
                if path.suffix == ".dcm":
                    image, fields = dicom_to_image(path), allowed_fields(read_dicom(path))
                else:
                    image, fields = nifti_axial_image(path), {}
            except MedmimError as exc:
                raise type(exc)(f"{table} row {row_number}: {exc}") from None
            rel = writer.add_image(image, f"images/row{row_number}.png")
            writer.add_item("probe", "probe", item_id=f"row{row_number}", images=[rel], answer="an image",
                            question="What is shown? " + json.dumps(fields), source_tag="PROBE")


@hookimpl
def register_dataset_builders(register):
    register(BuilderEntry("io-probe", "converts the files in files.csv", builder=build))
'''


@pytest.fixture
def probe_site(tmp_path: Path) -> Path:
    """A plugin distribution (module + dist-info with an entry point) to put on PYTHONPATH."""
    site = tmp_path / "probe-site"
    dist = site / "medmim_io_probe-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "medmim_io_probe.py").write_text(PROBE)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: medmim-io-probe\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[medmim_eval]\nio-probe = medmim_io_probe\n")
    return site


def _probe_source(folder: Path, files: list[Path]) -> Path:
    folder.mkdir()
    names = []
    for path in files:
        shutil.copy(path, folder / path.name)
        names.append(path.name)
    (folder / "files.csv").write_text("file\n" + "\n".join(names) + "\n")
    return folder


def test_converted_output_holds_no_identifying_header_value(dicoms: dict[str, Path], probe_site: Path,
                                                            tmp_path: Path) -> None:
    inputs = [dicoms["CT_small"], dicoms["MR_small"], dicoms["MR_mono1"], Path(get_testdata_file("JPEG2000.dcm")),
              Path(NIBABEL_DATA) / "anatomical.nii"]
    source, out = _probe_source(tmp_path / "raw", inputs), tmp_path / "out"
    result = run_cli("data", "build", "io-probe", "--source", str(source), "--out", str(out), pythonpath=[probe_site])
    assert result.returncode == 0, result.stderr
    items = json.loads((out / "probe.json").read_text())
    assert len(items) == 5 and '"Modality": "CT"' in items[0]["conversation"][0]["content"]
    values = identifying_values(*inputs[:4])
    assert {"CompressedSamples^CT1", "1CT1", "CompressedSamples^MR1"} <= values
    assert not leaks(values, result.stdout, result.stderr, folder=out)


@pytest.mark.parametrize("bad", ["truncated dicom", "empty nifti"])
def test_bad_medical_file_fails_the_build_naming_file_and_row(dicoms: dict[str, Path], probe_site: Path,
                                                              tmp_path: Path, bad: str) -> None:
    if bad == "empty nifti":
        broken = tmp_path / "empty.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((6, 6, 3), dtype=np.int16), np.eye(4)), broken)
    else:
        broken = dicoms["CT_truncated"]
    source, out = _probe_source(tmp_path / "raw", [dicoms["CT_small"], broken]), tmp_path / "out"
    result = run_cli("data", "build", "io-probe", "--source", str(source), "--out", str(out), pythonpath=[probe_site])
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "files.csv row 3" in lines[0] and broken.name in lines[0], result.stderr
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))
    assert not leaks(identifying_values(dicoms["CT_small"]), result.stdout, result.stderr)


def test_listing_builders_imports_no_medical_library(tmp_path: Path) -> None:
    site = tmp_path / "poisoned"
    for name in ("pydicom", "nibabel", "openpyxl"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(f"raise ImportError('{name} must not be imported')\n")
    result = run_cli("list", pythonpath=[site])
    assert result.returncode == 0 and "mim-rad" in result.stdout and "mim-odir" in result.stdout
    assert "must not be imported" not in result.stdout + result.stderr
