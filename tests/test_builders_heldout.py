"""The held-out builders: mim-rad on the real VQA-RAD, mim-odir on raw ODIR-5K files in the real
format (an .xlsx written with openpyxl, and the CSV variant), and bad raw input through the CLI."""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image

RAD_JSON = "VQA_RAD Dataset Public.json"
RAD_IMAGES = "VQA_RAD Image Folder"
ORDINALS = ("first", "second", "third")


# -- mim-rad on the real VQA-RAD ------------------------------------------------------------------

@pytest.fixture(scope="module")
def vqa_rad(shared_data: Path) -> Path:
    folder = shared_data / "vqa-rad"
    if not (folder / RAD_JSON).is_file():
        pytest.skip(f"{folder / RAD_JSON} is absent")
    return folder


@pytest.fixture(scope="module")
def rad_rows(vqa_rad: Path) -> dict[str, dict]:
    """The raw VQA-RAD rows by qid (as text)."""
    return {str(row["qid"]): row for row in json.loads((vqa_rad / RAD_JSON).read_text(encoding="utf-8"))}


def _build(name: str, source: Path, out: Path, *args: str, pythonpath: list[Path] | None = None) -> list[dict]:
    result = run_cli("data", "build", name, "--source", str(source), "--out", str(out), *args, pythonpath=pythonpath)
    assert result.returncode == 0, result.stderr
    return json.loads((out / f"{name.replace('-', '_')}.json").read_text(encoding="utf-8"))


def _qids(item: dict) -> list[str]:
    return item["id"].removeprefix("VQA_RAD").split("-")


@pytest.fixture
def no_medical_libs(tmp_path: Path) -> Path:
    """A folder where importing pydicom, nibabel or openpyxl fails: mim-rad needs none of them."""
    site = tmp_path / "poisoned"
    for name in ("pydicom", "nibabel", "openpyxl"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(f"raise ImportError('{name} must not be imported')\n")
    return site


def test_mim_rad_builds_300_closed_and_300_open_items_of_2_to_3_distinct_existing_images(
        vqa_rad: Path, rad_rows: dict[str, dict], tmp_path: Path, no_medical_libs: Path) -> None:
    out = tmp_path / "mim-rad"
    items = _build("mim-rad", vqa_rad, out, pythonpath=[no_medical_libs])
    closed = [i for i in items if "\nA: " in i["conversation"][0]["content"]]
    assert len(items) == 600 and len(closed) == 300
    for item in items:
        assert 2 <= len(item["images"]) <= 3
        assert len(set(item["images"])) == len(item["images"])
        assert all((out / image).is_file() for image in item["images"])
        assert item["conversation"][0]["content"].count("<image>") == len(item["images"])
        rows = [rad_rows[q] for q in _qids(item)]
        # Each image is the one its composed sub-question was asked about, in order.
        assert [r["image_name"] for r in rows] == item["images"]
        types = {r["question_type"].split(",")[0].strip().upper() for r in rows}
        assert len({r["image_organ"] for r in rows}) == 1 and len(types - {"ATRIB", "PRSE"}) <= 1
        # The default split is VQA-RAD's test split.
        assert all(r["phrase_type"] in ("test_freeform", "test_para") for r in rows)
    card = json.loads((out / "dataset_card.json").read_text())
    assert card["files"] == {"mim_rad": 600}
    assert {(c["kind"], c["n"]) for c in card["counts"]} == {("closed", 300), ("open", 300)}
    assert {c["source"] for c in card["counts"]} == {"VQA-RAD"}


def test_mim_rad_closed_gold_matches_the_raw_answers_and_open_reference_quotes_them(
        vqa_rad: Path, rad_rows: dict[str, dict], tmp_path: Path) -> None:
    items = _build("mim-rad", vqa_rad, tmp_path / "out", "--limit", "40")
    assert len(items) == 80
    for item in items:
        user, gold = item["conversation"][0]["content"], item["conversation"][1]["content"]
        rows = [rad_rows[q] for q in _qids(item)]
        for position, row in zip(ORDINALS, rows):
            assert f"In the {position} image, " in user
        if "\nA: " in user:
            options = re.findall(r"^([A-C]): (.*)$", user, re.M)
            assert [letter for letter, _ in options] == ["A", "B", "C"]  # three options, as in MIM-RAD
            assert len({text for _, text in options}) == 3
            truth = "; ".join(f"{p} image: {str(r['answer']).strip().lower()}" for p, r in zip(ORDINALS, rows))
            assert gold.split(": ", 1)[1].lower() == truth
        else:
            for row in rows:
                assert " ".join(str(row["answer"]).split()).rstrip(".") in gold


def test_mim_rad_output_runs_in_the_harness_at_chance(vqa_rad: Path, tmp_path: Path) -> None:
    out = tmp_path / "mim-rad"
    _build("mim-rad", vqa_rad, out)
    run = tmp_path / "run"
    result = run_cli("run", "--models", "random", "--tasks", str(out / "mim_rad.json"), "--output", str(run), "--quiet")
    assert result.returncode == 0, result.stderr
    cells = {c["kind"]: c for c in json.loads((run / "results.json").read_text())["cells"]}
    assert cells["closed"]["n"] == 300 and cells["open"]["n"] == 300
    band = 100 * 3 * math.sqrt((1 / 3) * (2 / 3) / 300)
    assert abs(cells["closed"]["score"] - 100 / 3) < band
    assert cells["closed"]["chance"] == pytest.approx(100 / 3)


def test_mim_rad_is_byte_identical_for_a_seed_and_differs_across_seeds(vqa_rad: Path, tmp_path: Path) -> None:
    def build(name: str, seed: str) -> bytes:
        _build("mim-rad", vqa_rad, tmp_path / name, "--seed", seed, "--limit", "50")
        return (tmp_path / name / "mim_rad.json").read_bytes()

    first, again, other = build("a", "7"), build("b", "7"), build("c", "8")
    assert first == again
    assert first != other


def test_mim_rad_split_train_uses_only_training_questions(vqa_rad: Path, rad_rows: dict[str, dict],
                                                          tmp_path: Path) -> None:
    items = _build("mim-rad", vqa_rad, tmp_path / "out", "--option", "split=train", "--limit", "30")
    phrase_types = Counter(rad_rows[q]["phrase_type"] for item in items for q in _qids(item))
    assert set(phrase_types) <= {"freeform", "para"} and len(items) == 60


def _rad_source(tmp_path: Path, vqa_rad: Path, rows: list[dict]) -> Path:
    source = tmp_path / "raw"
    source.mkdir()
    (source / RAD_IMAGES).symlink_to(vqa_rad / RAD_IMAGES, target_is_directory=True)
    (source / RAD_JSON).write_text(json.dumps(rows), encoding="utf-8")
    return source


def _assert_failed_without_output(result, out: Path, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no staging left


def test_mim_rad_missing_field_names_the_file_and_item(vqa_rad: Path, tmp_path: Path) -> None:
    rows = json.loads((vqa_rad / RAD_JSON).read_text(encoding="utf-8"))[:40]
    del rows[17]["answer"]
    source, out = _rad_source(tmp_path, vqa_rad, rows), tmp_path / "out"
    result = run_cli("data", "build", "mim-rad", "--source", str(source), "--out", str(out))
    _assert_failed_without_output(result, out, RAD_JSON, "item 17", "'answer'")


def test_mim_rad_image_listed_but_absent_names_the_file_item_and_image(vqa_rad: Path, tmp_path: Path) -> None:
    rows = json.loads((vqa_rad / RAD_JSON).read_text(encoding="utf-8"))
    test_index = next(i for i, r in enumerate(rows) if r["phrase_type"] == "test_freeform")
    rows[test_index]["image_name"] = "synpic99999999.jpg"
    source, out = _rad_source(tmp_path, vqa_rad, rows), tmp_path / "out"
    result = run_cli("data", "build", "mim-rad", "--source", str(source), "--out", str(out))
    _assert_failed_without_output(result, out, RAD_JSON, f"item {test_index}", "synpic99999999.jpg")


# -- mim-odir on raw files in the ODIR-5K format --------------------------------------------------

HEADER = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords",
          "Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O"]
# (ID, left keywords, right keywords) in the release's spelling: full-width commas, an ASCII comma
# in a few cells, and notes on image quality among the keywords.
PATIENTS = [
    (0, "cataract", "normal fundus"),
    (1, "normal fundus", "normal fundus"),
    (2, "laser spot，moderate non proliferative retinopathy", "moderate non proliferative retinopathy"),
    (3, "lens dust，normal fundus", "normal fundus"),
    (4, "low image quality", "glaucoma"),
    (5, "pathological myopia", "no fundus image"),
    (6, "anterior segment image", "anterior segment image"),
    (8, "dry age-related macular degeneration", "dry age-related macular degeneration"),
    (9, "hypertensive retinopathy", "normal fundus"),
    (10, "epiretinal membrane，lens dust", "cataract"),
    (11, "glaucoma", "glaucoma"),
    (12, "mild nonproliferative retinopathy", "normal fundus"),
    (13, "normal fundus", "drusen"),
    (15, "cataract", "cataract"),
    (16, "optic disk photographically invisible", "normal fundus"),
    (17, "image offset，cataract", "low image quality,maculopathy"),
    (18, "normal fundus", "image offset"),
]
SPECIAL = ("anterior segment image", "no fundus image", "lens dust", "low image quality", "image offset",
           "optic disk photographically invisible")


def _truth(keywords: str) -> str:
    return ", ".join(k.strip() for k in re.split("[，,]", keywords) if k.strip() not in SPECIAL)


def _odir_rows() -> list[list[object]]:
    rows = []
    for pid, left, right in PATIENTS:
        labels = [0] * 8
        rows.append([pid, 50 + pid, "Female" if pid % 2 else "Male", f"{pid}_left.jpg", f"{pid}_right.jpg",
                     left, right, *labels])
    return rows


def make_odir(folder: Path, fmt: str = "xlsx", header: list[str] = HEADER) -> Path:
    """A raw ODIR-5K folder: the annotation table (xlsx via openpyxl, or csv) + Training Images/."""
    images = folder / "Training Images"
    images.mkdir(parents=True)
    for pid, _, _ in PATIENTS:
        for side, shade in (("left", 90), ("right", 160)):
            Image.new("RGB", (32, 32), (shade, pid * 10, 40)).save(images / f"{pid}_{side}.jpg", quality=90)
    keep = [HEADER.index(name) for name in header]
    rows = [[row[i] for i in keep] for row in _odir_rows()]
    if fmt == "xlsx":
        from openpyxl import Workbook

        book = Workbook()
        sheet = book.active
        sheet.append(header)
        for row in rows:
            sheet.append(row)
        book.save(folder / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx")
    else:
        with open(folder / "odir_annotations.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return folder


def test_mim_odir_asks_about_left_then_right_eye_with_keyword_options(tmp_path: Path) -> None:
    source, out = make_odir(tmp_path / "odir"), tmp_path / "out"
    items = _build("mim-odir", source, out, "--limit", "5")
    truth = {pid: (_truth(left), _truth(right)) for pid, left, right in PATIENTS}
    closed = [i for i in items if i["id"].endswith("-closed")]
    opened = [i for i in items if i["id"].endswith("-open")]
    assert len(closed) == 5 and len(opened) == 5
    patients = [int(i["id"].split("-")[1]) for i in items]
    assert len(set(patients)) == len(patients)  # one patient per item
    assert 6 not in patients  # both eyes carry only special keywords
    for item, pid in zip(items, patients):
        assert item["images"] == [f"Training Images/{pid}_left.jpg", f"Training Images/{pid}_right.jpg"]
        assert all((out / image).is_file() for image in item["images"])
        text = json.dumps(item)
        assert not any(special in text for special in SPECIAL)
    for item in closed:
        pid = int(item["id"].split("-")[1])
        user, gold = item["conversation"][0]["content"], item["conversation"][1]["content"]
        options = re.findall(r"^([A-D]): (.*)$", user, re.M)
        assert len(options) == 4 and len({t for _, t in options}) == 4
        answer = gold.split(": ", 1)[1]
        if "first fundus image?" in user:
            assert answer == truth[pid][0] and truth[pid][0]
        elif "second fundus image?" in user:
            assert answer == truth[pid][1] and truth[pid][1]
        else:
            assert "What are the diagnoses for the first and second fundus images?" in user
            assert answer == f"First: {truth[pid][0]}, Second: {truth[pid][1]}"
    for item in opened:
        pid = int(item["id"].split("-")[1])
        user, reference = item["conversation"][0]["content"], item["conversation"][1]["content"]
        eye = next((i for i, name in enumerate(ORDINALS[:2]) if f"diagnostic result for the {name} image?" in user), None)
        if eye is not None:
            assert reference == f"The diagnostic result for the {ORDINALS[eye]} image is {truth[pid][eye]}."
            continue
        same = truth[pid][0] == truth[pid][1]
        if user.endswith("different?") and not user.endswith("or different?"):
            assert reference.startswith("No, both" if same else "Yes, the first image")
        elif user.endswith(("the same?", "share the same diagnosis?")):
            assert reference.startswith("Yes, both" if same else "No, the first image")
        assert truth[pid][0] in reference and truth[pid][1] in reference


def test_mim_odir_special_only_eyes_are_never_asked_about(tmp_path: Path) -> None:
    items = _build("mim-odir", make_odir(tmp_path / "odir"), tmp_path / "out")
    asked = {(int(i["id"].split("-")[1]), i["conversation"][0]["content"]) for i in items}
    # These eyes carry only notes on image quality: no question names them, and their patients get
    # no two-eye question.
    for pid, eye in ((4, "first"), (5, "second"), (16, "first"), (18, "second")):
        assert not [q for p, q in asked if p == pid and (f"the {eye} fundus image?" in q or f"the {eye} image?" in q
                                                         or "first and second" in q)]
    card = json.loads((tmp_path / "out" / "dataset_card.json").read_text())
    assert any("fewer than the 300" in note for note in card["notes"])  # a small table: fewer items, said so


def test_mim_odir_csv_and_xlsx_give_the_same_items(tmp_path: Path) -> None:
    from_xlsx = _build("mim-odir", make_odir(tmp_path / "x"), tmp_path / "out-x", "--seed", "3")
    from_csv = _build("mim-odir", make_odir(tmp_path / "c", fmt="csv"), tmp_path / "out-c", "--seed", "3")
    assert from_xlsx == from_csv


def test_mim_odir_is_byte_identical_for_a_seed_and_differs_across_seeds(tmp_path: Path) -> None:
    source = make_odir(tmp_path / "odir")

    def build(name: str, seed: str) -> bytes:
        _build("mim-odir", source, tmp_path / name, "--seed", seed)
        return (tmp_path / name / "mim_odir.json").read_bytes()

    assert build("a", "1") == build("b", "1")
    assert build("a2", "1") != build("c", "2")


def test_mim_odir_missing_column_names_the_table(tmp_path: Path) -> None:
    header = [h for h in HEADER if h != "Right-Diagnostic Keywords"]
    source, out = make_odir(tmp_path / "odir", header=header), tmp_path / "out"
    result = run_cli("data", "build", "mim-odir", "--source", str(source), "--out", str(out))
    _assert_failed_without_output(result, out, "ODIR-5K_Training_Annotations(Updated)_V2.xlsx",
                                  "'Right-Diagnostic Keywords'")


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_mim_odir_image_listed_but_missing_names_the_table_row_and_image(tmp_path: Path, fmt: str) -> None:
    source, out = make_odir(tmp_path / "odir", fmt=fmt), tmp_path / "out"
    (source / "Training Images" / "3_right.jpg").unlink()
    result = run_cli("data", "build", "mim-odir", "--source", str(source), "--out", str(out))
    table = "odir_annotations.csv" if fmt == "csv" else "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
    # Patient 3 is the fifth row of the table (the header is row 1).
    _assert_failed_without_output(result, out, table, "row 5", "Training Images/3_right.jpg")


def test_a_failed_rebuild_keeps_the_previous_output(tmp_path: Path) -> None:
    source, out = make_odir(tmp_path / "odir"), tmp_path / "out"
    before = json.dumps(_build("mim-odir", source, out, "--limit", "3"))
    shutil.rmtree(source / "Training Images")
    (source / "Training Images").mkdir()
    result = run_cli("data", "build", "mim-odir", "--source", str(source), "--out", str(out))
    assert result.returncode != 0 and "row 2" in result.stderr
    assert json.dumps(json.loads((out / "mim_odir.json").read_text())) == before
