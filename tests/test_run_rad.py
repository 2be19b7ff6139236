"""The real MIM-RAD task end to end with the random baseline, through the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.schema import RunManifest, SampleRecord


def test_random_on_real_mim_rad(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("run", "--models", "random", "--tasks", "held-out-rad", "--output", str(out),
                     "--data-dir", str(shared_data))
    assert result.returncode == 0, result.stderr
    records = [SampleRecord.model_validate_json(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 366
    assert len({r.key for r in records}) == 366
    assert all(r.n_images in (2, 3) and r.sent and r.sent.n_images == r.n_images for r in records)
    closed = [r for r in records if r.kind == "closed"]
    assert len(closed) == 293
    accuracy = sum(r.correct for r in closed) / len(closed)
    band = 3 * math.sqrt((1 / 3) * (2 / 3) / len(closed))
    assert abs(accuracy - 1 / 3) < band, accuracy
    assert all(r.extracted in "ABC" for r in closed)  # the baseline answers with a bare letter

    results = json.loads((out / "results.json").read_text())
    cells = {(c["task"], c["kind"]): c for c in results["cells"]}
    assert cells[("held-out-rad", "closed")]["n"] == 293
    assert abs(cells[("held-out-rad", "closed")]["score"] - 100 * accuracy) < 1e-9
    assert cells[("held-out-rad", "open")]["score"] == 0.0  # empty open answers
    closed_cell = cells[("held-out-rad", "closed")]
    assert closed_cell["chance"] == pytest.approx(100 / 3)
    assert closed_cell["chance_normalised"] == pytest.approx((100 * accuracy - 100 / 3) / (100 - 100 / 3) * 100)
    assert closed_cell["ci_low"] < closed_cell["score"] < closed_cell["ci_high"]
    assert 8 < closed_cell["ci_high"] - closed_cell["ci_low"] < 16  # about +-2 binomial standard errors
    assert results["bootstrap"]["seed"] == 0 and results["bootstrap"]["n_resamples"] == 1000
    assert {c["source"] for c in results["by_source"]} == {"VQA-RAD"}
    manifest = RunManifest.model_validate_json((out / "manifest.json").read_text())
    assert manifest.tasks[0].name == "held-out-rad" and manifest.tasks[0].n_samples == 366
    assert manifest.models[0].fingerprint == {"adapter": "random", "seed": 0}
    assert manifest.metrics["extraction_rule_version"]
    assert "MIM-RAD" in result.stdout  # the leaderboard printed at the end


def test_majority_uses_the_most_frequent_gold_letter(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("run", "--models", "majority", "--tasks", "held-out-rad:closed", "--output", str(out),
                     "--data-dir", str(shared_data), "--quiet")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    golds = [r["gold"] for r in records]
    top = max(set(golds), key=golds.count)
    assert {r["output"] for r in records} == {top}
    assert sum(r["correct"] for r in records) == golds.count(top)
