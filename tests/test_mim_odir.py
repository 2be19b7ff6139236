"""mim-odir against the official MIM-ODIR file: the same mix of questions and the same phrasing;
all missing images counted and ``--skip-missing``; a built file fills the MIM-ODIR column.

Raw input is a real ODIR-5K-layout spreadsheet written by openpyxl (see test_builders_heldout).
"""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image
from test_builders_heldout import HEADER, PATIENTS, _assert_failed_without_output, _build, make_odir

OFFICIAL_ODIR = "Med_MIM_benchmark_Held_out_ODIR.json"
FAST_METRICS = ["--open-metrics", "components=bleu+rougeL"]
KEYWORDS = ("normal fundus", "cataract", "glaucoma", "drusen", "pathological myopia", "hypertensive retinopathy",
            "mild nonproliferative retinopathy", "moderate non proliferative retinopathy", "epiretinal membrane",
            "laser spot，moderate non proliferative retinopathy", "dry age-related macular degeneration")


def _question(item: dict) -> str:
    """The question of an item, without image tokens, options or the stray quote of some official items."""
    return item["conversation"][0]["content"].replace("<image>", "").split("\nA: ")[0].strip().rstrip('"')


def _variant(item: dict) -> tuple[str, str]:
    """(closed|open, first|second|both): which eyes an item asks about."""
    kind = "closed" if "\nA: " in item["conversation"][0]["content"] else "open"
    question = _question(item)
    for eye in ("first", "second"):
        if re.search(rf"for the {eye} (fundus )?image\?$", question):
            return kind, eye
    return kind, "both"


def _big_odir(folder: Path, n_patients: int) -> Path:
    """An ODIR-5K-layout folder (xlsx written by openpyxl + Training Images/) of ``n_patients`` patients."""
    from openpyxl import Workbook

    images = folder / "Training Images"
    images.mkdir(parents=True)
    book = Workbook()
    sheet = book.active
    sheet.append(HEADER)
    for pid in range(n_patients):
        left = KEYWORDS[pid % len(KEYWORDS)]
        right = KEYWORDS[(pid * 7 // 3) % len(KEYWORDS)]
        if pid % 13 == 0:
            left = "lens dust，" + left
        sheet.append([pid, 40 + pid % 40, "Male", f"{pid}_left.jpg", f"{pid}_right.jpg", left, right, *[0] * 8])
        for side in ("left", "right"):
            Image.new("RGB", (8, 8), (pid % 256, 30, 60 if side == "left" else 90)).save(images / f"{pid}_{side}.jpg")
    book.save(folder / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx")
    return folder


@pytest.fixture(scope="module")
def official_odir(shared_data: Path) -> list[dict]:
    path = shared_data / "med-mim" / OFFICIAL_ODIR
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def full_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """300 closed + 300 open items built from a 700-patient spreadsheet."""
    base = tmp_path_factory.mktemp("odir-full")
    out = base / "out"
    items = _build("mim-odir", _big_odir(base / "odir", 700), out)
    return out, items


def test_the_mix_of_questions_is_the_official_one(official_odir: list[dict], full_build: tuple[Path, list[dict]]) -> None:
    official = Counter(map(_variant, official_odir))
    built = Counter(map(_variant, full_build[1]))
    assert official[("open", "first")] + official[("open", "second")] == 100  # the fact the mix is built on
    assert built == official


def test_every_question_is_phrased_as_in_the_official_file(official_odir: list[dict],
                                                           full_build: tuple[Path, list[dict]]) -> None:
    official_questions = {_question(item) for item in official_odir}
    assert {_question(item) for item in full_build[1]} <= official_questions


def test_options_and_answers_follow_the_official_forms(full_build: tuple[Path, list[dict]]) -> None:
    for item in full_build[1]:
        kind, eye = _variant(item)
        user, answer = item["conversation"][0]["content"], item["conversation"][1]["content"]
        if kind == "closed" and eye == "both":
            options = re.findall(r"^[A-D]: (.*)$", user, re.M)
            assert len(options) == 4 and all(re.fullmatch(r"First: .+, Second: .+", o) for o in options), user
        elif kind == "open" and eye != "both":
            assert re.fullmatch(rf"The diagnostic result for the {eye} image is .+\.", answer), answer
        elif kind == "open":
            assert re.fullmatch(r"(Yes, |No, |They are (the same|different); )?"
                                r"(both the first and second images are diagnosed with .+"
                                r"|the first image is diagnosed with .+, while the second image is diagnosed with .+)\.",
                                answer, flags=re.I), answer
    assert not any("lens dust" in json.dumps(item) for item in full_build[1])


def test_quality_notes_never_become_diagnoses_and_an_ascii_comma_splits(tmp_path: Path) -> None:
    from medmim_eval.dataset_builders.odir_table import diagnoses_of

    assert diagnoses_of("low image quality,maculopathy") == ("maculopathy",)
    assert diagnoses_of("image offset，cataract") == ("cataract",)
    assert diagnoses_of("optic disk photographically invisible") == ()
    assert diagnoses_of("laser spot，moderate non proliferative retinopathy") == (
        "laser spot", "moderate non proliferative retinopathy")
    items = _build("mim-odir", make_odir(tmp_path / "odir"), tmp_path / "out")
    text = json.dumps(items)
    for note in ("image offset", "optic disk photographically invisible", "low image quality"):
        assert note not in text


# -- missing images -----------------------------------------------------------------------------

def _remove_images(source: Path) -> None:
    for name in ("3_right.jpg", "9_left.jpg", "9_right.jpg", "12_left.jpg", "15_left.jpg"):
        (source / "Training Images" / name).unlink()


def test_missing_images_are_counted_with_the_first_few_named(tmp_path: Path) -> None:
    source, out = make_odir(tmp_path / "odir"), tmp_path / "out"
    _remove_images(source)
    result = run_cli("data", "build", "mim-odir", "--source", str(source), "--out", str(out))
    # Patients 3, 9, 12, 15 are rows 5, 10, 13, 15 of the table (the header is row 1).
    _assert_failed_without_output(result, out, f"5 listed image(s) of 4 of {len(PATIENTS)} patient(s)",
                                  "row 5: Training Images/3_right.jpg",
                                  "row 10: Training Images/9_left.jpg, Training Images/9_right.jpg",
                                  "row 13: Training Images/12_left.jpg", "and 1 more patient(s)", "--skip-missing")


def test_skip_missing_leaves_those_patients_out_and_counts_them_in_the_card(tmp_path: Path) -> None:
    source, out = make_odir(tmp_path / "odir"), tmp_path / "out"
    _remove_images(source)
    items = _build("mim-odir", source, out, "--skip-missing")
    patients = {int(item["id"].split("-")[1]) for item in items}
    assert patients and not patients & {3, 9, 12, 15}
    card = json.loads((out / "dataset_card.json").read_text())
    assert any(note.startswith("4 patient(s) left out (--skip-missing): 5 listed image(s) absent") for note in card["notes"])
    assert "4 patient(s) left out" in (out / "DATASET_CARD.md").read_text()


# -- the MIM-ODIR column ------------------------------------------------------------------------

def _markdown_row(text: str, model: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
    return [part.strip() for part in line.strip().strip("|").split("|")]


def _odir_cells(run_dir: Path) -> dict[str, dict]:
    results = json.loads((run_dir / "results.json").read_text())
    return {c["kind"]: c for c in results["cells"] if c["task"] == "held-out-odir"}


def test_a_built_file_fills_the_mim_odir_column(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build("mim-odir", make_odir(tmp_path / "odir"), out)
    assert json.loads((out / "dataset_card.json").read_text())["stands_for"] == {"mim_odir": "held-out-odir"}
    run = tmp_path / "run"
    result = run_cli("run", "-m", "random", "-t", str(out / "mim_odir.json"), "-o", str(run), "-q", *FAST_METRICS)
    assert result.returncode == 0, result.stderr
    cells = _odir_cells(run)
    assert set(cells) == {"closed", "open"}
    board = run_cli("leaderboard", str(run), "--format", "markdown").stdout
    header = _markdown_row(board, "Model")
    assert _markdown_row(board, "random")[header.index("Held-out: MIM-ODIR C")].strip("*") == f"{cells['closed']['score']:.2f}"
    assert "Other tasks" not in board
    assert f"evaluated from {out / 'mim_odir.json'}" in board and "not the official benchmark file" in board


def test_as_names_the_column_of_a_file_without_a_card_and_without_it_the_file_is_another_task(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build("mim-odir", make_odir(tmp_path / "odir"), out)
    (out / "dataset_card.json").unlink()
    plain = tmp_path / "plain"
    assert run_cli("run", "-m", "random", "-t", str(out / "mim_odir.json"), "-o", str(plain), "-q", *FAST_METRICS).returncode == 0
    assert not _odir_cells(plain)
    assert "Other tasks" in run_cli("leaderboard", str(plain), "--format", "markdown").stdout
    named = tmp_path / "named"
    result = run_cli("run", "-m", "random", "-t", str(out / "mim_odir.json"), "--as", "held-out-odir", "-o", str(named),
                     "-q", *FAST_METRICS)
    assert result.returncode == 0, result.stderr
    assert set(_odir_cells(named)) == {"closed", "open"}


def test_a_file_standing_for_a_task_that_is_also_selected_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build("mim-odir", make_odir(tmp_path / "odir"), out)
    result = run_cli("run", "-m", "random", "-t", f"held-out-odir,{out / 'mim_odir.json'}", "-o", str(tmp_path / "run"))
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert "two tasks would both be named 'held-out-odir'" in result.stderr
    bad = run_cli("run", "-m", "random", "-t", "synth-temporal", "--as", "held-out-odir", "-o", str(tmp_path / "r2"))
    assert bad.returncode != 0 and "found 0 file(s)" in bad.stderr


# -- nothing a user reads names an internal issue ------------------------------------------------

def test_no_user_facing_text_names_an_internal_issue_number() -> None:
    root = Path(__file__).parent.parent
    folders = ("medmim_eval", "adapters", "tasks", "dataset_builders", "training_recipes")
    offenders = [f"{path.relative_to(root)}:{n}" for folder in folders for path in (root / folder).rglob("*.py")
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if re.search(r"\bissue \d+", line, re.I)]
    offenders += [f"README.md:{n}" for n, line in enumerate((root / "README.md").read_text(encoding="utf-8").splitlines(), 1)
                  if re.search(r"\bissue \d+", line, re.I)]
    assert not offenders


def test_data_status_names_the_builder_without_an_issue_number(shared_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(shared_data / "med-mim", data / "med-mim")  # no odir/ folder: its images are missing
    result = run_cli("data", "status", "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert "builder: medmim-eval data build mim-odir" in result.stdout
    assert not re.search(r"issue \d+", result.stdout, re.I)
