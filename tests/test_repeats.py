"""``run --repeat K``: K seeded runs into OUTPUT/repeat-N, with the spread of each cell and the items
whose outcome flips, checked against the repeat directories' own records."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

TASKS = "synth-temporal:closed,synth-reasoning:closed"


def _records(run: Path) -> dict[tuple[str, str], dict]:
    out = {}
    for line in (run / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[(record["model"], record["key"])] = record
    return out


@pytest.mark.slow
def test_repeat_runs_k_seeded_runs_and_reports_spread_and_flips(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = run_cli("run", "-m", "random,majority", "-t", TASKS, "--limit", "30", "--repeat", "3",
                     "--temperature", "0.7", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "3 runs with seeds 0..2" in result.stderr and "3x the requests" in result.stderr
    runs = [out / f"repeat-{i}" for i in (1, 2, 3)]
    assert all((r / "results.json").exists() for r in runs)
    manifests = [json.loads((r / "manifest.json").read_text()) for r in runs]
    assert [m["seed"] for m in manifests] == [0, 1, 2]
    summary = json.loads((out / "repeats.json").read_text())
    assert summary["settings"]["seeds"] == [0, 1, 2] and summary["settings"]["temperature"] == 0.7
    cells = {(c["model"], c["task"]): c for c in summary["cells"]}
    records = [_records(r) for r in runs]
    for (model, task), cell in cells.items():
        keys = [k for (m, k), rec in records[0].items() if m == model and rec["task"] == task]
        outcomes = [[rs[(model, k)]["correct"] for rs in records] for k in keys]
        assert cell["items"] == len(keys) == 30
        assert cell["flipped"] == sum(len(set(o)) > 1 for o in outcomes)
        scores = [100 * sum(o[i] for o in outcomes) / len(keys) for i in range(3)]
        assert cell["scores"] == scores and cell["low"] == min(scores) and cell["high"] == max(scores)
    # The random baseline draws again with each seed; the majority baseline does not.
    assert cells[("random", "synth-temporal")]["flipped"] > 0 and cells[("random", "synth-temporal")]["sd"] > 0
    assert cells[("majority", "synth-temporal")]["flipped"] == 0 and cells[("majority", "synth-temporal")]["sd"] == 0
    assert "Across 3 repeats" in result.stdout

    again = run_cli("run", "-m", "random,majority", "-t", TASKS, "--limit", "30", "--repeat", "3",
                    "--temperature", "0.7", "-o", str(out), "-q")
    assert again.returncode == 0, again.stderr
    assert all(len((r / "samples.jsonl").read_text().splitlines()) == 120 for r in runs)  # nothing duplicated
    assert json.loads((out / "repeats.json").read_text())["cells"] == summary["cells"]


@pytest.mark.slow
def test_greedy_repeats_say_that_they_will_not_vary(tmp_path: Path) -> None:
    result = run_cli("run", "-m", "majority", "-t", "synth-temporal:closed", "--limit", "5", "--repeat", "2",
                     "-o", str(tmp_path / "rep"), "-q")
    assert result.returncode == 0, result.stderr
    assert "--temperature 0 is greedy decoding" in result.stderr
