"""Resuming: a SIGKILL at any moment loses nothing finished, and nothing finished is recomputed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLI, run_cli

from medmim_eval.records import RecordStore
from medmim_eval.schema import SampleRecord


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]


def _run_held_at_gate_then_killed(argv: list[str], plugin_site: Path, out: Path, answered: int) -> int:
    """Run ``medmim-eval ARGV`` (its spec holds every batch at a gate after ``answered`` prompts),
    SIGKILL it once that many records are written (the kill lands mid-run however slowly this
    process polls, as on a machine under load) and return the process id."""
    env = dict(os.environ, PYTHONPATH=str(plugin_site))
    process = subprocess.Popen([CLI, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = out / "samples.jsonl"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (not samples.exists() or samples.read_text().count("\n") < answered):
            assert process.poll() is None, "the run ended before it was killed"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return process.pid


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_completes_without_recomputing(plugin_site: Path, shared_data: Path, tmp_path: Path) -> None:
    out, log, gate = tmp_path / "run", tmp_path / "calls.jsonl", tmp_path / "never-created"
    spec = f"echo-test,delay=0.02,batch=2,concurrency=2,log={log}"
    args = ["--tasks", "held-out-rad", "--output", str(out), "--data-dir", str(shared_data), "--no-cache", "--quiet"]
    pid = _run_held_at_gate_then_killed(["run", "--models", f"{spec},gate={gate},after=60", *args], plugin_site, out, 60)
    samples = out / "samples.jsonl"
    first_run = {r["key"] for r in _records(out)}
    assert 60 <= len(first_run) < 366, "the kill must land mid-run"
    with open(samples, "a") as handle:  # what a kill in the middle of a write leaves behind
        handle.write('{"version": 1, "key": "torn')

    result = run_cli("run", "--models", spec, *args, pythonpath=[plugin_site])
    assert result.returncode == 0, result.stderr
    records = [SampleRecord.model_validate(r) for r in _records(out)]
    # Once the run has finished, one line per sample: none lost, none answered twice.
    assert len(records) == len({r.key for r in records}) == 366
    latest = RecordStore(out).load()
    assert all(r.done and not r.scores_pending for r in latest.values())
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    second_pid = {c["pid"] for c in calls} - {pid}
    recomputed = {c["key"] for c in calls if c["pid"] in second_pid} & first_run
    assert not recomputed
    assert json.loads((out / "results.json").read_text())["cells"][0]["n"] in (293, 73)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["status"] for i in manifest["invocations"]] == ["running", "finished"]


def test_torn_last_line_is_dropped_and_truncated(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    good = SampleRecord(key="k1", task="t", model="m", kind="closed", ability="a", source="s", item_id="i",
                        n_images=2, gold="A", output="A", extracted="A", correct=True)
    store.append(good)
    store.close()
    with open(store.path, "a") as handle:
        handle.write('{"key": "k2", "tas')
    loaded = RecordStore(tmp_path).load()
    assert list(loaded) == [("m", "k1")]
    assert store.path.read_text().endswith("\n") and store.path.read_text().count("\n") == 1


def test_errored_samples_are_retried_with_attempts_counted(plugin_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = ["run", "--tasks", "toy-shapes", "--output", str(out), "--no-cache", "--quiet"]
    failing = run_cli(*base, "--models", "echo-test,fail=#3#,label=echo", pythonpath=[plugin_site])
    assert failing.returncode != 0 and "1 sample(s) ended in errors" in failing.stderr
    errored = [r for r in _records(out) if r["error"]]
    assert len(errored) == 1
    assert errored[0]["error"] == {"type": "RuntimeError", "message": errored[0]["error"]["message"], "attempts": 1}
    assert errored[0]["correct"] is None and errored[0]["extracted"] is None  # not scored as wrong
    cells = json.loads((out / "results.json").read_text())["cells"]
    closed = next(c for c in cells if c["kind"] == "closed")
    assert closed["errors"] == 1 and closed["n_scored"] == closed["n"] - 1 and closed["score"] == 100.0

    again = run_cli(*base, "--models", "echo-test,fail=#3#,label=echo", pythonpath=[plugin_site])
    assert again.returncode != 0
    latest = RecordStore(out).load()
    assert [r.error.attempts for r in latest.values() if r.error] == [2]
    fixed = run_cli(*base, "--models", "echo-test,label=echo", pythonpath=[plugin_site])
    assert fixed.returncode == 0, fixed.stderr
    assert not [r for r in RecordStore(out).load().values() if r.error]


def test_response_cache_serves_another_run(plugin_site: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    spec = f"echo-test,log={log}"
    first = run_cli("run", "--models", spec, "--tasks", "toy-shapes", "-o", str(tmp_path / "a"), "-q", pythonpath=[plugin_site])
    assert first.returncode == 0, first.stderr
    calls_after_first = len(log.read_text().splitlines())
    assert calls_after_first == 13
    second = run_cli("run", "--models", spec, "--tasks", "toy-shapes", "-o", str(tmp_path / "b"), "-q", pythonpath=[plugin_site])
    assert second.returncode == 0, second.stderr
    assert len(log.read_text().splitlines()) == calls_after_first  # every answer came from the cache
    latest = RecordStore(tmp_path / "b").load()
    assert all(r.cached for r in latest.values()) and len(latest) == 13
    third = run_cli("run", "--models", spec, "--tasks", "toy-shapes", "-o", str(tmp_path / "c"), "-q", "--no-cache",
                    pythonpath=[plugin_site])
    assert third.returncode == 0 and len(log.read_text().splitlines()) == 2 * calls_after_first


def test_a_different_model_under_the_same_name_is_refused(tmp_path: Path) -> None:
    from test_plugins import _tiny_task

    task = _tiny_task(tmp_path)
    out = tmp_path / "run"
    assert run_cli("run", "-m", "random,seed=1", "-t", str(task), "-o", str(out), "-q").returncode == 0
    clash = run_cli("run", "-m", "random,seed=2", "-t", str(task), "-o", str(out), "-q")
    assert clash.returncode == 2 and "different fingerprint" in clash.stderr


def test_an_adapter_is_closed_even_when_its_model_is_refused(tmp_path: Path) -> None:
    """A refused model (another fingerprint under the same name) must not leave its server running."""
    from test_plugins import _tiny_task

    from medmim_eval.adapter import Capabilities, GenerationResult, ModelSpec
    from medmim_eval.datadir import DataPaths
    from medmim_eval.errors import MedmimError
    from medmim_eval.hookspecs import hookimpl
    from medmim_eval.plugins import create_plugin_host
    from medmim_eval.registry import AdapterEntry
    from medmim_eval.run_setup import RunOptions, prepare_run
    from medmim_eval.runner import run_prepared
    from medmim_eval.tasks_api import select_tasks

    closed: list[str] = []

    class Holder:
        capabilities = Capabilities()

        def __init__(self, version: str) -> None:
            self.model_id, self.version = "holder", version

        def fingerprint(self) -> dict[str, str]:
            return {"version": self.version}

        async def generate(self, requests):  # type: ignore[no-untyped-def]
            return [GenerationResult("A") for _ in requests]

        async def aclose(self) -> None:
            closed.append(self.version)

    class Plugin:
        @hookimpl
        def register_adapters(self, register):  # type: ignore[no-untyped-def]
            register(AdapterEntry(name="holder", description="x", factory=lambda t, o, c: Holder(o["v"])))

    host = create_plugin_host(autoload=False, extra_plugins=(Plugin(),))
    task = _tiny_task(tmp_path)

    def run(version: str) -> None:
        options = RunOptions(models=[ModelSpec("holder", None, (("v", version),))], tasks=select_tasks(str(task), host),
                             output=tmp_path / "out", data=DataPaths.resolve(tmp_path), use_cache=False)
        run_prepared(prepare_run(options, host), host)

    run("1")
    with pytest.raises(MedmimError, match="different fingerprint"):
        run("2")
    assert closed == ["1", "2"]


@pytest.mark.slow
def test_a_killed_and_resumed_run_writes_the_results_of_an_uninterrupted_one(plugin_site: Path, tmp_path: Path) -> None:
    """Only the order of the records differs (concurrent batches finish out of order): no number may."""
    common = ["--tasks", "synth-temporal,synth-reasoning", "--no-cache", "--quiet"]
    straight = run_cli("run", "--models", "echo-test,batch=1,concurrency=1", "--output", str(tmp_path / "straight"),
                       *common, pythonpath=[plugin_site])
    assert straight.returncode == 0, straight.stderr
    out, gate = tmp_path / "resumed", tmp_path / "never-created"
    spec = "echo-test,batch=1,concurrency=4,jitter=0.01"
    _run_held_at_gate_then_killed(["run", "--models", f"{spec},gate={gate},after=100", "--output", str(out), *common],
                                  plugin_site, out, 100)
    assert 100 <= len(_records(out)) < 320, "the kill must land mid-run"
    resumed = run_cli("run", "--models", spec, "--output", str(out), *common, pythonpath=[plugin_site])
    assert resumed.returncode == 0, resumed.stderr

    def first_seen(run: Path) -> list[str]:
        return list(dict.fromkeys(r["key"] for r in _records(run)))

    assert first_seen(out) != first_seen(tmp_path / "straight")  # the premise: the records were written in another order
    assert sorted(first_seen(out)) == sorted(first_seen(tmp_path / "straight"))
    results = [json.loads((run / "results.json").read_text()) for run in (tmp_path / "straight", out)]
    for result in results:
        result.pop("run_id")  # named after the folder and its start time
    assert results[0] == results[1]
    assert all(c["ci_low"] is not None for c in results[0]["cells"])
