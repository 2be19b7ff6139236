"""The instruction builders (composed, ms-cxr-t, embed, lumiere) on small raw fixtures in the real formats.

Each fixture is written here with the dataset's own file format: DICOM through pydicom with real
identifying tags, NIfTI through nibabel, CSV files with the real headers and their quirks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

PHI = ("DOE^JANE", "MRN-7781234", "SMITH^JOHN", "MRN-5550199")
FINDINGS = ("consolidation", "edema", "pleural_effusion", "pneumonia", "pneumothorax")
MSCXRT_HEADER = ["subject_id", "study_id", "dicom_id", "previous_study_id", "previous_dicom_id",
                 *(f"{f}_progression" for f in FINDINGS)]
RATING_HEADER = ("Rating (according to RANO, PD: Progressive disease, SD: Stable disease, PR: Partial response, "
                 "CR: Complete response, Pre-Op: Pre-Operative, Post-Op: Post-Operative)")


# --------------------------------------------------------------------------- raw fixtures
def write_dicom(path: Path, *, name: str, patient_id: str, study_uid: str, view: str = "PA", laterality: str = "",
                photometric: str = "MONOCHROME2", seed: int = 0, modality: str = "DX") -> Path:
    """A small 12-bit greyscale DICOM with identifying tags and a window."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2" if modality == "MG" else "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, "19600101"
    ds.InstitutionName, ds.ReferringPhysicianName = "General Hospital", "HOUSE^GREGORY"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.StudyDate, ds.AccessionNumber, ds.Modality = "20200101", "ACC998877", modality
    ds.ViewPosition, ds.ImageLaterality = view, laterality
    rng = np.random.default_rng(seed)
    pixels = (rng.random((24, 20)) * 4095).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_llava_med(root: Path, n: int = 7) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        Image.new("RGB", (16, 16), (i * 30 % 255, 80, 120)).save(root / f"img{i}.png")
        question = f"What organ is shown in scan {i}?"
        first = f"<image>\n{question}" if i % 2 else f"{question}\n<image>"
        turns = [{"from": "human", "value": first}, {"from": "gpt", "value": f"The organ {i}."}]
        if i == 3:
            turns += [{"from": "human", "value": "And its size?"}, {"from": "gpt", "value": "Small."}]
        items.append({"id": f"pmc-{i}", "image": f"img{i}.png", "conversations": turns})
    items.append({"id": "pmc-twin", "image": "img0.png", "conversations": [
        {"from": "human", "value": "<image>\nIs there a fracture?"}, {"from": "gpt", "value": "No"}]})
    path = root / "llava_med_vqa.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def make_ms_cxr_t(root: Path) -> Path:
    rows = []
    pairs = [("10000032", "50414267", "59000001", "monochrome"), ("17950066", "59393382", "58659819", "jpg")]
    for i, (subject, study, prev_study, kind) in enumerate(pairs):
        current = f"p{subject[:2]}/p{subject}/s{study}/aa{i}-current"
        previous = f"p{subject[:2]}/p{subject}/s{prev_study}/bb{i}-previous"
        for rel, photometric in ((current, "MONOCHROME1"), (previous, "MONOCHROME2")):
            if kind == "jpg":
                target = root / "files" / f"{rel}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (20, 24), 90).save(target)
            else:
                write_dicom(root / "files" / f"{rel}.dcm", name=PHI[0], patient_id=PHI[1], study_uid=f"1.2.3.{i}",
                            photometric=photometric, seed=i)
        labels = ["worsening", "", "Stable ", "improving", ""] if i == 0 else ["", "improving", "", "", "worsening"]
        rows.append([subject, study, current, prev_study, previous, *labels])
    write_csv(root / "MS_CXR_T_temporal_image_classification_v1.0.0.csv", MSCXRT_HEADER, rows)
    return root


EMBED_CLINICAL = ["empi_anon", "acc_anon", "study_date_anon", "asses", "side", "tissueden", "path_severity", "age_at_study"]
EMBED_METADATA = ["empi_anon", "acc_anon", "anon_dicom_path", "ViewPosition", "ImageLateralityFinal", "FinalImageType", "spot_mag"]


def make_embed(root: Path) -> Path:
    clinical, metadata = [], []
    visits = [("14581551", "6001", "2015-01-03", "N", "B", "61.2"), ("14581551", "6002", "2016-01-10", "B", "L", "62.2"),
              ("14581551", "6003", "2017-02-01", "S", "L", "63.3"), ("25548754", "7001", "2018-05-05", "A", "", "55.0")]
    for n, (empi, acc, date, asses, side, age) in enumerate(visits):
        clinical.append([empi, acc, date, asses, side, "2", "", age])
        study = f"1.2.846.113973.3.58.1.{n}"
        for k, (view, lat) in enumerate((("CC", "L"), ("MLO", "L"), ("CC", "R"), ("MLO", "R"))):
            series, sop = f"1.2.846.113688.{n}.{k}", f"1.2.826.0.1.3680043.8.498.{n}{k}"
            tail = f"cohort_1/{empi}/{study}/{series}/{sop}.dcm"
            write_dicom(root / tail, name=PHI[2], patient_id=PHI[3], study_uid=study, view=view, laterality=lat,
                        modality="MG", photometric="MONOCHROME1" if k % 2 else "MONOCHROME2", seed=n * 4 + k)
            metadata.append([empi, acc, f"/mnt/NAS2/mammo/anon_dicom/{tail}", view, lat, "2D", ""])
    metadata.append(["14581551", "6001", "/mnt/NAS2/mammo/anon_dicom/cohort_1/14581551/x/y/cview.dcm", "CC", "L", "cview", ""])
    clinical.append(["25548754", "7001", "2018-05-05", "X", "L", "2", "", "55.0"])  # not a BI-RADS code: skipped
    write_csv(root / "EMBED_OpenData_clinical.csv", EMBED_CLINICAL, clinical)
    write_csv(root / "EMBED_OpenData_metadata.csv", EMBED_METADATA, metadata)
    return root


def write_nifti(path: Path, *, empty: bool = False, seed: int = 0) -> Path:
    data = np.zeros((12, 14, 10), dtype=np.float32)
    if not empty:
        data[2:10, 2:12, :] = np.random.default_rng(seed).random((8, 10, 10)) * 900 + 100
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def make_lumiere(root: Path) -> Path:
    rows = [["Patient-001", "week-000-1", "Pre-Op", ""], ["Patient-001", "week-000-2", "Post-Op ", "CRET"],
            ["Patient-001", "week-044", "SD", "stable"], ["Patient-001", "week-056", "PD", "new lesion"],
            ["Patient-002", "week-000", "Pre-Op", ""], ["Patient-002", "week-003", "Post-Op/PD", "PRET"],
            ["Patient-002", "week-010", "n/a", ""]]
    for n, (patient, date, _, _) in enumerate(rows):
        for k, seq in enumerate(("CT1", "T1", "T2", "FLAIR")):
            if not (patient == "Patient-002" and seq == "T2"):
                write_nifti(root / "Imaging" / patient / date / f"{seq}.nii.gz", seed=n * 4 + k)
    write_csv(root / "LUMIERE-ExpertRating-v202211.csv", ["Patient", "Date", "LessThan3Months", RATING_HEADER,
                                                          "Rating rationale (CRET: complete resection of the enhancing tumor, PRET: partial resection)"],
              [[p, d, "", r, why] for p, d, r, why in rows])
    return root


# --------------------------------------------------------------------------- helpers
def build(name: str, source: Path, out: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_cli("data", "build", name, "--source", str(source), "--out", str(out), *args)


def items(out: Path, stem: str) -> list[dict]:
    return json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))


def folder_text(folder: Path) -> bytes:
    """Every byte of every file under ``folder``, plus the file names."""
    chunks = []
    for path in sorted(folder.rglob("*")):
        chunks.append(str(path.relative_to(folder)).encode())
        if path.is_file():
            chunks.append(path.read_bytes())
    return b"\n".join(chunks)


def assert_no_phi(out: Path, *texts: str) -> None:
    blob = folder_text(out)
    for value in PHI + ("HOUSE^GREGORY", "General Hospital", "ACC998877", "19600101"):
        assert value.encode() not in blob, f"{value} leaked into {out}"
        assert all(value not in t for t in texts), f"{value} leaked into the CLI output"


def assert_well_formed(data: list[dict]) -> None:
    for item in data:
        assert 1 <= len(item["images"]) <= 3 and len(set(item["images"])) == len(item["images"])
        assert item["conversation"][0]["content"].count("<image>") == len(item["images"])


# --------------------------------------------------------------------------- composed
def test_composed_groups_single_image_pairs_with_location_prefixes(tmp_path: Path) -> None:
    make_llava_med(tmp_path / "raw")
    result = build("composed", tmp_path / "raw", tmp_path / "out", "--seed", "3")
    assert result.returncode == 0, result.stderr
    data = items(tmp_path / "out", "composed_coreference")
    assert_well_formed(data)
    assert all(2 <= len(i["images"]) <= 3 for i in data)
    used = [img for i in data for img in i["images"]]
    assert len(used) >= 6  # 8 pairs on 7 images; at most one left over
    for item in data:
        user, answer = item["conversation"][0]["content"], item["conversation"][1]["content"]
        assert "first image, " in user and "second image, " in user
        assert answer.startswith("First image: ") and "<image>" not in answer
        assert "And its size" not in user  # only the first exchange of a multi-turn item


def test_composed_is_deterministic_per_seed_and_accepts_the_json_file(tmp_path: Path) -> None:
    raw = make_llava_med(tmp_path / "raw")
    for out, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert build("composed", raw, tmp_path / out, "--seed", seed, "--option", f"images={raw.parent}").returncode == 0
    a, b, c = (items(tmp_path / x, "composed_coreference") for x in "abc")
    assert a == b
    assert a != c


def test_composed_never_repeats_an_image_in_a_sample() -> None:
    from medmim_eval.dataset_builders.composed import SingleQA, compose_groups

    pairs = [SingleQA(i, str(i), f"img{i % 3}.png", f"Q{i}?", "A") for i in range(30)]
    groups, leftover = compose_groups(pairs, seed=7)
    assert all(len({qa.image for qa in g}) == len(g) and 2 <= len(g) <= 3 for g in groups)
    assert sum(len(g) for g in groups) + leftover == 30
    assert len({qa.index for g in groups for qa in g}) == 30 - leftover
    assert compose_groups(pairs, seed=7) == (groups, leftover)


def test_composed_missing_image_is_an_error_unless_skipped(tmp_path: Path) -> None:
    raw = make_llava_med(tmp_path / "raw")
    (raw.parent / "img5.png").unlink()
    result = build("composed", raw.parent, tmp_path / "out")
    assert result.returncode != 0 and "item 5 (id pmc-5): image" in result.stderr
    skipped = build("composed", raw.parent, tmp_path / "out", "--option", "missing_images=skip", "--limit", "1")
    assert skipped.returncode == 0, skipped.stderr
    assert len(items(tmp_path / "out", "composed_coreference")) == 1
    assert "1 items skipped: image file absent" in (tmp_path / "out" / "DATASET_CARD.md").read_text()


def test_composed_bad_item_names_file_and_item_and_leaves_no_output(tmp_path: Path) -> None:
    raw = make_llava_med(tmp_path / "raw")
    data = json.loads(raw.read_text())
    del data[2]["conversations"]
    raw.write_text(json.dumps(data))
    result = build("composed", tmp_path / "raw", tmp_path / "out")
    assert result.returncode != 0
    assert "llava_med_vqa.json: item 2 (id pmc-2)" in result.stderr and "conversations" in result.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


# --------------------------------------------------------------------------- ms-cxr-t
def test_ms_cxr_t_builds_previous_current_pairs_without_identifiers(tmp_path: Path) -> None:
    make_ms_cxr_t(tmp_path / "raw")
    result = build("ms-cxr-t", tmp_path / "raw", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    data = items(tmp_path / "out", "ms_cxr_t_comparison")
    assert_well_formed(data)
    closed = [i for i in data if "\nA: " in i["conversation"][0]["content"]]
    assert len(closed) == len(data) - len(closed) == 5  # five non-empty labels, closed + open each
    for item in closed:
        assert item["conversation"][0]["content"].count("\n") >= 3  # three options
    first = next(i for i in closed if i["id"] == "ms-cxr-t-consolidation-2")
    assert first["images"] == ["p10/p10000032/s59000001/bb0-previous.png", "p10/p10000032/s50414267/aa0-current.png"]
    assert first["conversation"][1]["content"].endswith("The consolidation is worsening.")
    assert any(i["id"] == "ms-cxr-t-pleural_effusion-2" and "stable" in i["conversation"][1]["content"] for i in closed)
    assert Image.open(tmp_path / "out" / first["images"][0]).mode == "L"
    assert_no_phi(tmp_path / "out", result.stdout, result.stderr)


@pytest.mark.parametrize("damage, message", [
    ("column", "missing column(s) edema_progression"),
    ("label", "row 3: pneumothorax_progression is 'better'"),
    ("dicom", "not a readable DICOM file"),
])
def test_ms_cxr_t_bad_raw_input_is_a_clear_error_without_output(tmp_path: Path, damage: str, message: str) -> None:
    raw = make_ms_cxr_t(tmp_path / "raw")
    csv_path = raw / "MS_CXR_T_temporal_image_classification_v1.0.0.csv"
    text = csv_path.read_text()
    if damage == "column":
        csv_path.write_text(text.replace("edema_progression", "oedema"))
    elif damage == "label":
        csv_path.write_text(text.replace("improving,,,worsening", "improving,,,better"))
    else:
        (raw / "files/p10/p10000032/s50414267/aa0-current.dcm").write_bytes(b"DICM but not really")
    result = build("ms-cxr-t", raw, tmp_path / "out")
    assert result.returncode != 0
    assert message in result.stderr
    if damage == "dicom":
        assert "aa0-current.dcm" in result.stderr and "row 2" in result.stderr
    assert not (tmp_path / "out").exists()
    for value in PHI:
        assert value not in result.stderr


# --------------------------------------------------------------------------- embed
def test_embed_builds_reasoning_coreference_and_temporal_items(tmp_path: Path) -> None:
    make_embed(tmp_path / "raw")
    result = build("embed", tmp_path / "raw", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    reasoning, coref, temporal = (items(out, s) for s in ("embed_reasoning", "embed_coreference", "embed_temporal"))
    for data in (reasoning, coref, temporal):
        assert_well_formed(data)
        for item in data:
            for image in item["images"]:
                parts = image.split("/")
                assert parts[0] == "cohort_1" and len(parts) == 5 and image.endswith(".png")
    closed = [i for i in reasoning if "\nG: " in i["conversation"][0]["content"]]
    assert closed and all(i["conversation"][0]["content"].count("(BI-RADS ") == 7 for i in closed)
    # exam 6002 has side L only: the left breast is BI-RADS 2; the right breast has no finding.
    left = next(i for i in closed if i["id"] == "embed-reasoning-14581551-6002-L")
    assert left["conversation"][1]["content"].endswith("(BI-RADS 2)")
    assert not any(i["id"] == "embed-reasoning-14581551-6002-R" for i in reasoning)
    # side B and empty side apply to both breasts
    assert {i["id"] for i in closed} >= {"embed-reasoning-14581551-6001-L", "embed-reasoning-14581551-6001-R",
                                         "embed-reasoning-25548754-7001-R"}
    forecast = next(i for i in temporal if "\nA: " in i["conversation"][0]["content"])
    assert "63.3" in forecast["conversation"][0]["content"] and "62.2" in forecast["conversation"][0]["content"]
    assert "BI-RADS 4-6" in forecast["conversation"][1]["content"]
    assert all("view" in i["conversation"][0]["content"] or "projection" in i["conversation"][0]["content"] for i in coref)
    assert "cview" not in json.dumps(coref)
    assert "1 clinical rows skipped: asses 'X'" in (out / "DATASET_CARD.md").read_text()
    assert_no_phi(out, result.stdout, result.stderr)


def test_embed_missing_metadata_column_names_file(tmp_path: Path) -> None:
    raw = make_embed(tmp_path / "raw")
    meta = raw / "EMBED_OpenData_metadata.csv"
    meta.write_text(meta.read_text().replace("ImageLateralityFinal", "Laterality", 1))
    result = build("embed", raw, tmp_path / "out")
    assert result.returncode != 0
    assert "EMBED_OpenData_metadata.csv: missing column(s) ImageLateralityFinal" in result.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- lumiere
def test_lumiere_builds_sequence_prepost_and_progression_items(tmp_path: Path) -> None:
    make_lumiere(tmp_path / "raw")
    result = build("lumiere", tmp_path / "raw", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    coref, comparison, temporal = (items(out, s) for s in ("lumiere_coreference", "lumiere_comparison", "lumiere_temporal"))
    for data in (coref, comparison, temporal):
        assert_well_formed(data)
    assert any("week-000-1.png" in img for i in coref for img in i["images"])
    ids = {i["id"] for i in comparison}
    # "Post-Op " (trailing space) and "Post-Op/PD" both count as post-operative
    assert {"lumiere-postop-Patient-001-week-000-2", "lumiere-postop-Patient-002-week-003"} <= ids
    resection = {i["id"]: i["conversation"][1]["content"][3:] for i in comparison if i["id"].startswith("lumiere-resection")}
    assert resection == {"lumiere-resection-Patient-001-week-000-2": "completely resected",
                         "lumiere-resection-Patient-002-week-003": "partially resected"}
    answers = {i["id"]: i["conversation"][1]["content"] for i in temporal if "\nA: " in i["conversation"][0]["content"]}
    assert set(answers) == {"lumiere-temporal-Patient-001-week-044", "lumiere-temporal-Patient-001-week-056"}
    assert answers["lumiere-temporal-Patient-001-week-056"].endswith("progressive disease")
    card = (out / "DATASET_CARD.md").read_text()
    assert "rating 'n/a'" in card and "header unverified" in card
    assert Image.open(out / temporal[0]["images"][0]).size == (12, 14)  # x (R-L) across, y (A-P) down


def test_lumiere_empty_volume_names_file_and_row(tmp_path: Path) -> None:
    raw = make_lumiere(tmp_path / "raw")
    write_nifti(raw / "Imaging/Patient-001/week-044/CT1.nii.gz", empty=True)
    result = build("lumiere", raw, tmp_path / "out")
    assert result.returncode != 0
    assert "Patient-001/week-044/CT1.nii.gz: empty volume" in result.stderr
    assert "LUMIERE-ExpertRating-v202211.csv row 4" in result.stderr
    assert not (tmp_path / "out").exists()


def test_lumiere_without_a_rating_column_lists_the_headers(tmp_path: Path) -> None:
    raw = make_lumiere(tmp_path / "raw")
    csv_path = raw / "LUMIERE-ExpertRating-v202211.csv"
    csv_path.write_text(csv_path.read_text().replace("Rating (according", "Score (according"))
    result = build("lumiere", raw, tmp_path / "out")
    assert result.returncode != 0 and "expected one RANO rating column" in result.stderr


# --------------------------------------------------------------------------- all builders
def test_outputs_are_deterministic_and_run_through_the_harness(tmp_path: Path) -> None:
    sources = {"composed": make_llava_med(tmp_path / "llava").parent, "ms-cxr-t": make_ms_cxr_t(tmp_path / "cxr"),
               "embed": make_embed(tmp_path / "embed"), "lumiere": make_lumiere(tmp_path / "lumiere")}
    tasks = []
    for name, source in sources.items():
        for copy in ("1", "2"):
            result = build(name, source, tmp_path / f"{name}-{copy}", "--seed", "5", "--limit", "4")
            assert result.returncode == 0, result.stderr
        first, second = tmp_path / f"{name}-1", tmp_path / f"{name}-2"
        for path in sorted(first.glob("*.json")):
            if path.name != "dataset_card.json":
                assert path.read_text() == (second / path.name).read_text(), f"{name}: {path.name} differs"
                tasks.append(str(path))
        assert {p.relative_to(first) for p in first.rglob("*.png")} == {p.relative_to(second) for p in second.rglob("*.png")}
    result = run_cli("run", "--models", "random", "--tasks", ",".join(tasks), "--output", str(tmp_path / "runs"), "-q")
    assert result.returncode == 0, result.stderr + result.stdout
    for value in PHI:
        assert value not in result.stdout + result.stderr


def test_an_unknown_option_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    raw = make_llava_med(tmp_path / "raw")
    result = build("composed", raw.parent, tmp_path / "out", "--option", "imagez=/tmp")
    assert result.returncode != 0
    assert "unknown --option imagez" in result.stderr and "images:" in result.stderr and "review:" in result.stderr
