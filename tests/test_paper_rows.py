"""The paper's reported Table 1 beside measured runs: ``leaderboard --with-paper`` and ``--vs-paper``.

The bundled table is checked (its † rows recomputed, its names mapped to registered paper
models), every format marks the reported rows, a wrong † value in a copy is refused, and
``--vs-paper`` shows measured minus reported for a model named like a paper model.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.leaderboard import fmt
from medmim_eval.paper_view import band
from medmim_eval.paper_table import IMPROVEMENT, PAPER_TO_REGISTRY, REPORTED, bundled_path, load_paper_table

ROOT = Path(__file__).parent.parent
FAST_METRICS = ["--open-metrics", "components=bleu+rougeL"]
MARK = "(paper, reported)"


def _raw_table() -> dict:
    return json.loads(bundled_path().read_text(encoding="utf-8"))


def _hand_made_run(folder: Path, cells: list[dict]) -> Path:
    folder.mkdir(parents=True)
    full = [{"n": 10, "n_scored": 10, "ci_low": None, "ci_high": None, **c} for c in cells]
    (folder / "results.json").write_text(json.dumps({"version": 1, "run_id": folder.name, "metrics": {}, "cells": full}))
    return folder


@pytest.fixture
def gpt_run(tmp_path: Path) -> Path:
    """A run whose model is labelled like a paper model (gpt-4o) beside one that is not (alpha)."""
    return _hand_made_run(tmp_path / "run", [
        {"model": "gpt-4o", "task": "held-out-rad", "kind": "closed", "score": 70.0},
        {"model": "gpt-4o", "task": "held-out-rad", "kind": "open", "score": 30.0},
        {"model": "alpha", "task": "held-out-rad", "kind": "closed", "score": 50.0},
    ])


def _markdown_row(text: str, model: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
    return [part.strip() for part in line.strip().strip("|").split("|")]


def _markdown_header(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("| Model |"))
    return [part.strip() for part in line.strip().strip("|").split("|")]


# ------------------------------------------------------------------------------------------ the table itself

def test_bundled_table_is_the_shared_copy_and_its_dagger_rows_are_the_differences_of_their_models() -> None:
    raw = _raw_table()
    table = load_paper_table()
    assert [r.name for r in table.rows] == [m["name"] for m in raw["models"]]
    rows = {m["name"]: m for m in raw["models"]}
    daggers = [m for m in raw["models"] if m["kind"] == IMPROVEMENT]
    assert {m["name"] for m in daggers} == {"LLaVA-Med†", "Mantis†"}
    for dagger in daggers:
        tuned, base = (rows[name]["scores"] for name in dagger["of"])
        for task, cell in dagger["scores"].items():
            for kind, printed in cell.items():
                assert abs(printed - (tuned[task][kind] - base[task][kind])) <= 0.01 + 1e-9, (dagger["name"], task, kind)


def test_reported_mim_rad_closed_scores_are_multiples_of_one_in_300() -> None:
    """The fact behind the footer's caveat: the paper scored 300 closed MIM-RAD items, not 293."""
    for row in load_paper_table().rows:
        if row.kind == REPORTED:
            correct = row.scores[("held-out-rad", "closed")] * 3  # items right out of 300
            assert abs(correct - round(correct)) < 0.011, row.name


def test_every_reported_model_maps_to_a_registered_paper_model() -> None:
    from medmim_eval.plugins import create_plugin_host

    host = create_plugin_host()
    reported = [r for r in load_paper_table().rows if r.kind == REPORTED]
    assert {r.name for r in reported} == set(PAPER_TO_REGISTRY)
    for row in reported:
        assert row.registry_name in host.models, row.name
        assert host.models.get(row.registry_name).paper, row.name


def test_a_wrong_dagger_value_in_a_copy_of_the_table_is_refused_with_one_line(gpt_run: Path, tmp_path: Path) -> None:
    raw = _raw_table()
    dagger = next(m for m in raw["models"] if m["name"] == "Mantis†")
    dagger["scores"]["held-out-odir"]["open"] = 21.12  # printed 20.12 = 41.32 - 21.20
    copy = tmp_path / "table1_copy.json"
    copy.write_text(json.dumps(raw), encoding="utf-8")
    result = run_cli("leaderboard", str(gpt_run), "--with-paper", "--paper-table", str(copy))
    assert result.returncode != 0
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in result.stderr
    assert str(copy) in line and "Mantis†" in line and "held-out-odir open" in line
    assert "printed 21.12" in line and "Med-Mantis - Mantis-8B = 20.12" in line
    # The unchanged copy is accepted.
    copy.write_text(json.dumps(_raw_table()), encoding="utf-8")
    assert run_cli("leaderboard", str(gpt_run), "--with-paper", "--paper-table", str(copy)).returncode == 0


def test_a_dagger_row_naming_a_missing_model_is_refused(tmp_path: Path) -> None:
    from medmim_eval.errors import MedmimError

    raw = _raw_table()
    raw["models"] = [m for m in raw["models"] if m["name"] != "Mantis-8B"]
    copy = tmp_path / "t.json"
    copy.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(MedmimError, match="'Mantis-8B', which the table lacks"):
        load_paper_table(copy)


# ------------------------------------------------------------------------------------------ every format

def test_markdown_marks_reported_rows_and_never_ranks_them(gpt_run: Path) -> None:
    result = run_cli("leaderboard", str(gpt_run), "--with-paper", "--format", "markdown")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    header = _markdown_header(text)
    rad = header.index("Held-out: MIM-RAD C")
    for row in load_paper_table().rows:
        cells = _markdown_row(text, f"{row.name} {MARK}")
        assert cells[rad] == fmt(row.scores[("held-out-rad", "closed")])  # plain: never bold or underlined
    assert _markdown_row(text, "gpt-4o")[rad] == "**70.00**" and _markdown_row(text, "alpha")[rad] == "<u>50.00</u>"
    assert "300 closed items" in text and "293 closed" in text
    assert "LLaVA-Med† = MIM-LLaVA-Med − LLaVA-Med-7B" in text
    assert "BERTScore model/layer" in text


def test_rich_terminal_marks_reported_rows(gpt_run: Path) -> None:
    result = run_cli("leaderboard", str(gpt_run), "--with-paper")
    assert result.returncode == 0, result.stderr
    for row in load_paper_table().rows:
        assert f"{row.name} {MARK}" in result.stdout
    assert "293 closed" in result.stdout


def test_csv_and_json_mark_reported_and_improvement_rows(gpt_run: Path) -> None:
    result = run_cli("leaderboard", str(gpt_run), "--with-paper", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    table = load_paper_table()
    paper_rows = [r for r in rows if r["origin"] != "measured"]
    assert len(paper_rows) == 12 * len(table.rows) and {r["run"] for r in paper_rows} == {"paper"}
    for row in table.rows:
        mine = {(r["task"], r["kind"]): r for r in paper_rows if r["model"] == row.name}
        assert {k: float(r["score"]) for k, r in mine.items()} == row.scores
        assert {r["origin"] for r in mine.values()} == {row.kind}
    assert next(r for r in paper_rows if r["model"] == "Mantis†")["of"] == "Med-Mantis - Mantis-8B"
    assert {r["origin"] for r in rows if r["run"] == "run"} == {"measured"}

    data = json.loads(run_cli("leaderboard", str(gpt_run), "--with-paper", "--format", "json").stdout)
    origins = {(r["model"], r["origin"]) for r in data["rows"]}
    assert ("GPT-4o", "reported") in origins and ("LLaVA-Med†", "improvement") in origins
    assert ("gpt-4o", "measured") in origins
    assert data["paper"]["notes"] == table.notes and "Table 1" in data["paper"]["source"]
    assert any("293" in n for n in data["notes"])


def test_latex_and_html_mark_reported_rows(gpt_run: Path) -> None:
    tex = run_cli("leaderboard", str(gpt_run), "--with-paper", "--format", "latex").stdout
    assert "\\textit{GPT-4o (paper, reported)} & " in tex
    assert "\\textit{LLaVA-Med\\textdagger{} (paper, reported)}" in tex
    assert "Held\\_out\\_RAD file has 293 closed" in tex
    html = run_cli("leaderboard", str(gpt_run), "--with-paper", "--format", "html", "--max-records", "0").stdout
    assert '<tr class="ref reported"><td>GPT-4o (paper, reported)</td>' in html
    assert '<tr class="ref improvement"><td>Mantis† (paper, reported)</td>' in html
    assert "293 closed" in html


# ------------------------------------------------------------------------------------------ --vs-paper

def test_vs_paper_puts_the_reported_row_and_the_difference_under_the_matching_model(gpt_run: Path) -> None:
    result = run_cli("leaderboard", str(gpt_run), "--vs-paper", "--format", "markdown")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    header = _markdown_header(text)
    rad_c, rad_o = header.index("Held-out: MIM-RAD C"), header.index("Held-out: MIM-RAD O")
    gpt = load_paper_table().for_model("gpt-4o")
    assert gpt is not None and gpt.name == "GPT-4o"
    model_rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert model_rows == ["Model", "alpha", "gpt-4o", f"GPT-4o {MARK}", "Δ gpt-4o − paper"]  # only the matched row
    delta = _markdown_row(text, "Δ gpt-4o − paper")
    assert delta[rad_c] == fmt(70.0 - gpt.scores[("held-out-rad", "closed")])
    assert delta[rad_o] == fmt(30.0 - gpt.scores[("held-out-rad", "open")])
    assert delta[1] == "—"  # no measured temporal cell, so no difference
    assert "no paper model for alpha" in text

    rows = list(csv.DictReader(io.StringIO(run_cli("leaderboard", str(gpt_run), "--vs-paper", "--format", "csv").stdout)))
    cell = next(r for r in rows if (r["model"], r["task"], r["kind"]) == ("gpt-4o", "held-out-rad", "closed"))
    assert float(cell["paper_score"]) == gpt.scores[("held-out-rad", "closed")]
    assert float(cell["paper_difference"]) == pytest.approx(70.0 - gpt.scores[("held-out-rad", "closed")])
    assert cell["paper_band"] == band(70.0 - gpt.scores[("held-out-rad", "closed")])


@pytest.mark.parametrize("difference,expected", [(0.0, "matches"), (-2.5, "matches"), (2.51, "close"), (-5.0, "close"),
                                                 (5.01, "differs"), (-30.0, "differs"), (None, None)])
def test_bands_follow_the_stated_thresholds(difference: float | None, expected: str | None) -> None:
    assert band(difference) == expected


def test_vs_paper_bands_every_measured_cell_and_states_the_thresholds(tmp_path: Path) -> None:
    gpt = load_paper_table().for_model("gpt-4o")
    assert gpt is not None
    closed, opened = gpt.scores[("held-out-rad", "closed")], gpt.scores[("held-out-rad", "open")]
    run = _hand_made_run(tmp_path / "run", [
        {"model": "gpt-4o", "task": "held-out-rad", "kind": "closed", "score": closed + 2.0},
        {"model": "gpt-4o", "task": "held-out-rad", "kind": "open", "score": opened - 7.0},
    ])
    text = run_cli("leaderboard", str(run), "--vs-paper", "--format", "markdown").stdout
    line = next(line for line in text.splitlines() if "gpt-4o vs paper:" in line)
    assert "matches 1 (Held-out MIM-RAD closed +2.00)" in line, line
    assert "close 0" in line and "differs 1 (Held-out MIM-RAD open -7.00)" in line, line
    assert "≤ 2.5 points" in text and "≤ 5 \"close\"" in text

@pytest.mark.parametrize("flag", ["--chance", "--by-source"])
def test_paper_rows_refuse_views_the_paper_does_not_report(gpt_run: Path, flag: str) -> None:
    result = run_cli("leaderboard", str(gpt_run), "--with-paper", flag)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert flag in result.stderr and "Traceback" not in result.stderr


def test_vs_paper_on_a_real_mim_rad_run_of_the_baselines(shared_data: Path, tmp_path: Path) -> None:
    """The random baseline labelled as mantis-8b on the real MIM-RAD data, beside the paper's Mantis-8B row."""
    out = tmp_path / "run"
    ran = run_cli("run", "--models", "random,label=mantis-8b,majority", "--tasks", "held-out-rad",
                  "--data-dir", str(shared_data), "--output", str(out), "--quiet", *FAST_METRICS)
    assert ran.returncode == 0, ran.stderr
    results = json.loads((out / "results.json").read_text())
    measured = {(c["model"], c["kind"]): c for c in results["cells"]}
    assert measured[("mantis-8b", "closed")]["n"] == 293
    result = run_cli("leaderboard", str(out), "--vs-paper", "--format", "markdown")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    header = _markdown_header(text)
    mantis = load_paper_table().for_model("mantis-8b")
    assert mantis is not None and mantis.name == "Mantis-8B"
    for kind, letter in (("closed", "C"), ("open", "O")):
        column = header.index(f"Held-out: MIM-RAD {letter}")
        assert _markdown_row(text, f"Mantis-8B {MARK}")[column] == fmt(mantis.scores[("held-out-rad", kind)])
        expected = measured[("mantis-8b", kind)]["score"] - mantis.scores[("held-out-rad", kind)]
        assert _markdown_row(text, "Δ mantis-8b − paper")[column] == fmt(expected)
    assert "no paper model for majority" in text
    assert "300 closed items" in text and "293 closed" in text


# ------------------------------------------------------------------------------------------ packaging

@pytest.mark.slow
def test_a_built_wheel_carries_the_paper_table(tmp_path: Path) -> None:
    """A non-editable install gets the table: the wheel holds medmim_eval/data/paper_table1.json."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("medmim_eval-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = archive.read("medmim_eval/data/paper_table1.json").decode("utf-8")
    assert json.loads(packed) == _raw_table()
