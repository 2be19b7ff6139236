"""Leaderboard tables: Table-1 layout, best bold, second underlined, missing cells as a dash."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

from medmim_eval.leaderboard import MISSING, build_tables, cells_from_runs, to_markdown
from medmim_eval.schema import ResultCell


def cell(model: str, task: str, kind: str, score: float | None, errors: int = 0) -> ResultCell:
    return ResultCell(model=model, task=task, kind=kind, n=10, n_scored=10 - errors, score=score, errors=errors)


CELLS = [
    cell("alpha", "held-out-rad", "closed", 50.0), cell("beta", "held-out-rad", "closed", 40.0),
    cell("gamma", "held-out-rad", "closed", 30.0), cell("alpha", "held-out-rad", "open", 10.0),
    cell("beta", "held-out-odir", "closed", 33.333, errors=2),
    cell("alpha", "synth-temporal", "closed", 90.0), cell("beta", "my-task", "open", 12.0),
]


def test_table_layout_and_placement() -> None:
    tables = {t.title: t for t in build_tables(CELLS)}
    assert list(tables) == ["Med-MIM benchmark (Table 1 layout)", "Synthetic suite", "Other tasks"]
    medmim = tables["Med-MIM benchmark (Table 1 layout)"]
    assert [c.header for c in medmim.columns][:2] == ["Temporal C", "Temporal O"]
    assert [c.group for c in medmim.columns][8:] == ["Held-out"] * 4
    rad_c = [c.task + c.kind for c in medmim.columns].index("held-out-radclosed")
    assert medmim.rows["alpha"][rad_c] == 50.0 and medmim.rows["alpha"][0] is None
    assert medmim.ranks(rad_c) == ({"alpha"}, {"beta"})
    assert any("2 sample(s) ended in a model error" in n for n in medmim.notes)


def test_markdown_marks_best_and_second_and_dashes_missing() -> None:
    text = to_markdown(build_tables(CELLS))
    row = next(line for line in text.splitlines() if line.startswith("| alpha |"))
    assert "**50.00**" in row and MISSING in row
    beta = next(line for line in text.splitlines() if line.startswith("| beta |"))
    assert "<u>40.00</u>" in beta and "**33.33**" in beta
    gamma = next(line for line in text.splitlines() if line.startswith("| gamma |"))
    assert "30.00" in gamma and "**30.00**" not in gamma and "<u>30.00</u>" not in gamma


def test_two_runs_with_the_same_model_are_told_apart(tmp_path: Path) -> None:
    for name, score in (("run1", 10.0), ("run2", 20.0)):
        (tmp_path / name).mkdir()
        payload = {"version": 1, "run_id": name, "cells": [cell("m", "held-out-rad", "closed", score).model_dump()]}
        (tmp_path / name / "results.json").write_text(json.dumps(payload))
    cells = cells_from_runs([tmp_path / "run1", tmp_path / "run2"])
    assert sorted(c.model for c in cells) == ["m [run1]", "m [run2]"]


def test_leaderboard_command_recomputes_from_samples_when_results_are_absent(tmp_path: Path) -> None:
    from test_plugins import _tiny_task

    out = tmp_path / "run"
    assert run_cli("run", "-m", "random,majority", "-t", str(_tiny_task(tmp_path)), "-o", str(out), "-q").returncode == 0
    expected = run_cli("leaderboard", str(out), "--format", "markdown").stdout
    (out / "results.json").unlink()
    again = run_cli("leaderboard", str(out), "--format", "markdown")
    assert again.returncode == 0 and again.stdout == expected
    assert "| majority |" in expected and "tiny C" in expected
    rich = run_cli("leaderboard", str(out))
    assert rich.returncode == 0 and "majority" in rich.stdout


def test_leaderboard_on_a_folder_that_is_no_run(tmp_path: Path) -> None:
    result = run_cli("leaderboard", str(tmp_path))
    assert result.returncode == 2 and "no results.json or samples.jsonl" in result.stderr


def test_chance_mode_shows_chance_normalised_closed_values_and_maps_their_intervals() -> None:
    closed = ResultCell(model="m", task="held-out-rad", kind="closed", n=10, n_scored=10, score=60.0,
                        chance=20.0, chance_normalised=50.0, ci_low=40.0, ci_high=80.0)
    opened = ResultCell(model="m", task="held-out-rad", kind="open", n=10, n_scored=10, score=12.0, ci_low=10.0, ci_high=14.0)
    table = build_tables([closed, opened], value="chance_normalised")[0]
    rad_c = [c.task + c.kind for c in table.columns].index("held-out-radclosed")
    assert table.rows["m"][rad_c] == 50.0 and table.rows["m"][rad_c + 1] == 12.0
    assert table.interval("m", rad_c) == (25.0, 75.0)  # 100 * (40 - 20) / 80, 100 * (80 - 20) / 80
    assert table.interval("m", rad_c + 1) == (10.0, 14.0)
    assert "chance-normalised" in table.title and "chance-normalised" in table.notes[0]


def test_values_equal_to_two_decimals_share_a_rank() -> None:
    cells = [cell("a", "my-task", "closed", 1e-14), cell("b", "my-task", "closed", -1e-14), cell("c", "my-task", "closed", -5.0)]
    table = build_tables(cells)[0]
    assert table.ranks(0) == ({"a", "b"}, {"c"})
    assert "-0.00" not in to_markdown([table])


def test_by_source_columns_follow_the_sources_present() -> None:
    cells = [
        ResultCell(model="m", task="held-in-temporal", kind="closed", source="EMBED", n=4, n_scored=4, score=25.0),
        ResultCell(model="m", task="held-in-temporal", kind="closed", source="LUMIERE", n=2, n_scored=2, score=50.0),
        ResultCell(model="m", task="held-in-temporal", kind="open", source="LUMIERE", n=2, n_scored=2, score=9.0),
    ]
    table = build_tables(cells, by_source=True)[0]
    assert [c.header for c in table.columns] == ["Temporal · EMBED C", "Temporal · LUMIERE C", "Temporal · LUMIERE O"]
    assert table.rows["m"] == [25.0, 50.0, 9.0]


def test_two_runs_rename_clashing_models_in_per_source_cells_too(tmp_path: Path) -> None:
    from medmim_eval.leaderboard import load_runs

    for name in ("run1", "run2"):
        (tmp_path / name).mkdir()
        base = cell("m", "held-out-rad", "closed", 10.0).model_dump()
        payload = {"version": 1, "run_id": name, "cells": [base], "by_source": [{**base, "source": "VQA-RAD"}]}
        (tmp_path / name / "results.json").write_text(json.dumps(payload))
    runs = load_runs([tmp_path / "run1", tmp_path / "run2"], by_source=True)
    assert [c.model for run in runs for c in run.by_source] == ["m [run1]", "m [run2]"]
    assert runs[1].names == {"m": "m [run2]"}


def test_samples_with_too_many_images_are_noted_apart_from_other_errors() -> None:
    from medmim_eval.exports.metric_notes import not_scored_lines
    from medmim_eval.leaderboard import RunData

    flagged = [cell("alpha", "held-out-rad", "closed", 50.0, errors=3).model_copy(update={"too_many_images": 2}),
               cell("beta", "held-out-rad", "closed", 40.0)]
    (table,) = build_tables(flagged)
    assert any("1 sample(s) ended in a model error" in n for n in table.notes)
    assert any("2 sample(s) have more images than their model accepts" in n for n in table.notes)
    run = RunData(run_dir=Path("r"), run_id="r", cells=flagged, by_source=[])
    assert not_scored_lines([run]) == [
        "Samples not scored, per model:",
        "  alpha: 2 not evaluated because they have more images than the model accepts (nothing sent, never "
        "truncated); 1 errored otherwise (rerun to retry)"]
    assert not_scored_lines([RunData(run_dir=Path("r"), run_id="r", cells=flagged[1:], by_source=[])]) == []
