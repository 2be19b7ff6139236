"""The definitions behind the reported figures (chance, the controls view) are written into
``manifest.json`` and ``results.json`` beside the scoring definitions, and a run directory written
before they were recorded still resumes and compares."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.control_view import VERDICT_RULE
from medmim_eval.controls import CONTROLS, POSITION_RULE, POSITION_RULE_VERSION

ARGS = ("-m", "random", "-t", "synth-temporal:closed", "-q", "--seed", "3")


def _strip(run_dir: Path) -> None:
    """Make the run look written by a harness that did not record chance and controls."""
    for name in ("manifest.json", "results.json"):
        path = run_dir / name
        data = json.loads(path.read_text())
        for key in ("chance", "controls"):
            data["metrics"].pop(key)
        path.write_text(json.dumps(data))


@pytest.mark.slow
def test_chance_and_control_definitions_are_recorded_and_older_runs_still_resume_and_compare(tmp_path: Path) -> None:
    env = {"MEDMIM_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    new = tmp_path / "new"
    assert run_cli("run", *ARGS, "-o", str(new), env=env).returncode == 0
    for name in ("manifest.json", "results.json"):
        metrics = json.loads((new / name).read_text())["metrics"]
        controls = metrics["controls"]
        assert controls["controls"] == CONTROLS and controls["verdict"] == VERDICT_RULE
        assert controls["position_rule"] == {"version": POSITION_RULE_VERSION, "rule": POSITION_RULE}
        assert metrics["chance"]["normalised"] == "100 x (accuracy - chance) / (100 - chance)"

    old = tmp_path / "old"
    shutil.copytree(new, old)
    _strip(old)
    resumed = run_cli("run", *ARGS, "-o", str(old), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "controls" in json.loads((old / "manifest.json").read_text())["metrics"]
    _strip(old)
    compared = run_cli("compare", str(old), str(new), "--json")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert json.loads(compared.stdout)["problems"] == []
    footer = run_cli("leaderboard", str(new), "--format", "markdown").stdout
    assert "Metric definitions:" in footer and "verdict" not in footer  # the footer stays one readable line
