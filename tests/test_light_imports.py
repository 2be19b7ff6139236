"""Light commands never import torch, transformers or vllm; the plugin folders install under
``medmim_eval`` only."""
from __future__ import annotations

import json
import os
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


SCORING_MODULES = ("torch", "transformers", "bert_score", "rouge_score", "nltk", "sacrebleu")


@pytest.fixture
def poisoned_scoring(tmp_path: Path) -> Path:
    """A folder where importing any open-metric backend fails."""
    site = tmp_path / "poisoned-scoring"
    for name in SCORING_MODULES:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(POISON.format(name=name))
    return site


def _closed_and_open_task(folder: Path) -> Path:
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8), 128).save(folder / name)
    closed = {"id": "c", "images": ["a.png", "b.png"], "source": "T",
              "conversation": [{"role": "user", "content": "<image><image>Same?\nA: yes\nB: no\n"},
                               {"role": "assistant", "content": "A: yes"}]}
    opened = {"id": "o", "images": ["a.png", "b.png"], "source": "T",
              "conversation": [{"role": "user", "content": "<image><image>What changed?"},
                               {"role": "assistant", "content": "Nothing changed between the two images."}]}
    path = folder / "task.json"
    path.write_text(json.dumps([closed, opened]))
    return path


def test_rerunning_a_finished_run_imports_no_scoring_backend(poisoned_scoring: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDMIM_OPEN_METRICS", "components=bleu+rougeL")
    task, out = _closed_and_open_task(tmp_path), tmp_path / "run"
    args = ("run", "-m", "random", "-t", str(task), "-o", str(out), "-q")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    again = run_cli(*args, pythonpath=[poisoned_scoring], subprocess_=True)
    assert again.returncode == 0 and "must not be imported" not in again.stderr, again.stderr
    assert "2 already done" in again.stderr
    # The poison works: each backend fails to import from that path (a run loads them only to score
    # a non-empty open answer; the random baseline gives empty ones, which score 0 without them).
    for name in SCORING_MODULES:
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], env={**os.environ, "PYTHONPATH": str(poisoned_scoring)},
                               capture_output=True, text=True)
        assert "must not be imported" in probe.stderr, name


def test_default_bertscore_missing_offline_is_named_before_torch_loads(poisoned: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDMIM_OPEN_METRICS")  # the default: bert-score's roberta-large
    task, out = _closed_and_open_task(tmp_path), tmp_path / "run"
    result = run_cli("run", "-m", "random", "-t", str(task), "-o", str(out), "-q", pythonpath=[poisoned],
                     env={"HF_HOME": str(tmp_path / "empty-hf-home"), "HF_HUB_OFFLINE": "1"}, subprocess_=True)
    assert result.returncode == 2, result.stderr
    assert "must not be imported" not in result.stderr and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "'roberta-large' is not in the Hugging Face cache" in line and str(tmp_path / "empty-hf-home") in line
    assert "bertscore.model=minilm" in line and "components=bleu+rougeL" in line
    assert not (out / "samples.jsonl").exists()


def test_a_cached_bertscore_model_passes_the_offline_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medmim_eval.weights import hub_weights_present

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "hub" / "models--roberta-large" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert not hub_weights_present("roberta-large")  # a config without weights is not enough
    (snapshot / "model.safetensors").write_bytes(b"")
    assert hub_weights_present("roberta-large") and not hub_weights_present("roberta-base")
