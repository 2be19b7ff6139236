"""A run checks the open metrics before any model call without loading them; where its process holds
no torch (a served model), BERTScore loads and scores in a child process (MiniLM without torch) with
the in-process numbers; the console script exits without teardown yet runs the ``atexit`` hooks and flushes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

RECORDER = '''import atexit, json, os, sys
def _record():
    with open(os.environ["MEDMIM_TEST_IMPORTS"], "a") as handle:
        handle.write(json.dumps({"argv0": sys.argv[0], "torch": "torch" in sys.modules}) + "\\n")
if os.environ.get("MEDMIM_TEST_IMPORTS"):
    atexit.register(_record)
'''
POISON = "raise ImportError('{name} must not be imported by this command')\n"
REFERENCES = ["The lesion grows steadily, so it will be larger at the next visit.",
              "The first image is bright and the second one is dark.", "stable", "A bright image first, then a dark one."]


def _open_task(folder: Path) -> Path:
    """Four open questions with different references; echo-test answers each 'a bright first image'."""
    from PIL import Image

    Image.new("L", (8, 8), 230).save(folder / "a.png")
    Image.new("L", (8, 8), 20).save(folder / "b.png")
    items = [{"id": f"o{i}", "images": ["a.png", "b.png"], "source": "T_conv",
              "conversation": [{"role": "user", "content": "<image><image>Describe the images."},
                               {"role": "assistant", "content": reference}]} for i, reference in enumerate(REFERENCES)]
    path = folder / "open.json"
    path.write_text(json.dumps(items))
    return path


@pytest.mark.slow
def test_a_run_without_torch_scores_bertscore_in_a_child_process_with_in_process_numbers(plugin_site: Path,
                                                                                           tmp_path: Path) -> None:
    from medmim_eval.metrics import OpenMetricsConfig, OpenScorer

    recorder, imports = tmp_path / "recorder", tmp_path / "imports.jsonl"
    recorder.mkdir()
    (recorder / "sitecustomize.py").write_text(RECORDER)
    out = tmp_path / "out"
    result = run_cli("run", "-m", "echo-test", "-t", str(_open_task(tmp_path)), "-o", str(out), "-q",
                     "--open-metrics", "bertscore.model=minilm", pythonpath=[plugin_site, recorder],
                     env={"MEDMIM_TEST_IMPORTS": str(imports)}, subprocess_=True)
    assert result.returncode == 0, result.stderr
    processes = [json.loads(line) for line in imports.read_text().splitlines()]
    cli = [p for p in processes if p["argv0"].endswith("medmim-eval")]
    worker = [p for p in processes if p["argv0"].endswith("bertscore_worker.py")]
    assert cli == [{"argv0": cli[0]["argv0"], "torch": False}], processes  # atexit hooks ran despite the fast exit
    assert len(worker) == 1 and not worker[0]["torch"], processes  # MiniLM runs in numpy: the server keeps the CPU
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == len(REFERENCES) and all(r["scores_pending"] == [] for r in records)
    by_reference = {r["gold"]: r["scores"]["bertscore_recall"] for r in records}
    expected = OpenScorer(OpenMetricsConfig(bertscore_model="minilm")).bertscore_recall(
        ["a bright first image"] * len(REFERENCES), REFERENCES)
    assert [by_reference[r] for r in REFERENCES] == pytest.approx(expected, abs=1e-4)
    assert len(set(expected)) == len(REFERENCES)  # four different numbers, not one value for all
    results = json.loads((out / "results.json").read_text())
    assert results["cells"][0]["metrics"]["bertscore_recall"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)


def test_missing_bertscore_weights_are_named_before_any_model_call_without_importing_torch(
        plugin_site: Path, tmp_path: Path) -> None:
    poisoned = tmp_path / "poisoned"
    for name in ("torch", "transformers", "bert_score"):
        (poisoned / name).mkdir(parents=True)
        (poisoned / name / "__init__.py").write_text(POISON.format(name=name))
    log = tmp_path / "calls.jsonl"
    missing = tmp_path / "no-such-model"
    result = run_cli("run", "-m", f"echo-test,log={log}", "-t", "toy-shapes", "-o", str(tmp_path / "out"),
                     "--open-metrics", f"bertscore.model={missing},bertscore.layer=6",
                     pythonpath=[plugin_site, poisoned], subprocess_=True)
    assert result.returncode == 2, result.stderr
    assert f"bertscore.model={missing}: no model folder with a config.json" in result.stderr
    assert "must not be imported" not in result.stderr and "Traceback" not in result.stderr
    assert not log.exists()


def test_the_console_script_exit_code_and_output_survive_the_fast_exit(tmp_path: Path) -> None:
    listed = run_cli("list", subprocess_=True)
    assert listed.returncode == 0 and "held-out-rad" in listed.stdout, listed.stderr
    bad = run_cli("run", "-m", "random", "-t", "no-such-task", "-o", str(tmp_path / "out"), subprocess_=True)
    assert bad.returncode == 2 and "no-such-task" in bad.stderr
