"""Light commands never import torch, transformers or vllm; the plugin folders install under
``medmim_eval`` only."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

POISON = "raise ImportError('{name} must not be imported by this command')\n"


@pytest.fixture
def poisoned(tmp_path: Path) -> Path:
    """A folder where importing torch, transformers or vllm fails."""
    site = tmp_path / "poisoned"
    for name in ("torch", "transformers", "vllm"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(POISON.format(name=name))
    return site


def _run_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    cell = {"model": "random", "task": "held-out-rad", "kind": "closed", "n": 10, "n_scored": 10, "score": 30.0}
    (out / "results.json").write_text(json.dumps({"version": 1, "run_id": "r", "cells": [cell]}))
    return out


@pytest.mark.parametrize("args", [["--help"], ["list"], ["plugins"], ["data", "status"], ["run", "--help"],
                                  ["explain", "--help"]])
def test_light_commands_work_where_torch_cannot_import(poisoned: Path, args: list[str]) -> None:
    result = run_cli(*args, pythonpath=[poisoned], subprocess_=True)
    assert result.returncode == 0, result.stderr
    assert "must not be imported" not in result.stderr


def test_leaderboard_works_where_torch_cannot_import(poisoned: Path, tmp_path: Path) -> None:
    result = run_cli("leaderboard", str(_run_dir(tmp_path)), "--format", "markdown", pythonpath=[poisoned],
                     subprocess_=True)
    assert result.returncode == 0, result.stderr
    assert "**30.00**" in result.stdout


def test_poison_is_real(poisoned: Path) -> None:
    probe = subprocess.run([sys.executable, "-c", "import torch"], env={"PYTHONPATH": str(poisoned)},
                           capture_output=True, text=True)
    assert "must not be imported" in probe.stderr


def test_light_commands_import_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from medmim_eval.cli import main\n"
        "for argv in (['list'], ['plugins'], ['--help'], ['run', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'openai') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_plugin_folders_install_only_under_medmim_eval(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u\n"
        "print([n for n in ('adapters', 'tasks', 'dataset_builders', 'training_recipes') if u.find_spec(n)])\n"
        "print([n for n in ('adapters', 'tasks', 'dataset_builders', 'training_recipes') if u.find_spec('medmim_eval.' + n)])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "['adapters', 'tasks', 'dataset_builders', 'training_recipes']"
