"""``medmim-eval sweep``: (model, task) cells as ordinary run directories on local processes, a real Ray
cluster and submitit, resumed cell by cell; resources derived from the registry; the sbatch script."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.adapter import parse_model_specs
from medmim_eval.errors import MedmimError
from medmim_eval.leaderboard import cells_from_runs
from medmim_eval.plugins import create_plugin_host
from medmim_eval.records import RecordStore
from medmim_eval.sweep.executors import ExecutorSpec, _check_reachable, make_executor, sbatch_script
from medmim_eval.sweep.resources import Resources, cell_resources

FAST = ["--limit", "2", "--open-metrics", "components=bleu+rougeL", "--no-cache"]
TWO_TASKS = "synth-temporal,synth-comparison"


def cells_of(sweep_dir: Path) -> dict[tuple[str, str], dict]:
    data = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    return {(c["model"], c["task"]): c for c in data["cells"]}


def scores(run_dirs: list[Path]) -> dict[tuple[str, str, str], tuple[float | None, int]]:
    return {(c.model, c.task, c.kind): (c.score, c.n) for c in cells_from_runs(run_dirs)}


# ------------------------------------------------------------------------------- planning (no cells run)
def test_executor_specs_parse_and_bad_ones_name_the_fix() -> None:
    spec = ExecutorSpec.parse("ray:10.0.0.1:6379,retries=2")
    assert (spec.name, spec.address, spec.options) == ("ray", "10.0.0.1:6379", {"retries": "2"})
    slurm = ExecutorSpec.parse("slurm,partition=gpu,time=90")
    assert slurm.address is None and slurm.options == {"partition": "gpu", "time": "90"}
    for bad, words in (("kubernetes", "unknown executor"), ("slurm,partition", "not key=value"),
                       ("local:host:1", "only ray takes an address")):
        with pytest.raises(MedmimError, match=words):
            ExecutorSpec.parse(bad)
    with pytest.raises(MedmimError, match="does not answer"):  # in seconds: Ray alone retries for minutes
        _check_reachable("127.0.0.1:1", "the Ray cluster at 127.0.0.1:1")


def test_resources_come_from_the_registry_entry_and_its_tp_dp_options() -> None:
    host = create_plugin_host()

    def gpus(text: str, **kwargs: object) -> int:
        (spec,) = parse_model_specs(text)
        return cell_resources(spec, host.adapters.get(spec.adapter), **kwargs).gpus  # type: ignore[arg-type]

    assert gpus("random") == gpus("majority") == 0
    assert gpus("openai:gpt-4o") == 0
    assert gpus("vllm:/models/x,tp=2,dp=2") == 4
    assert gpus("vllm-offline:/models/x,tp=2") == 2
    assert gpus("vllm:served,base_url=http://127.0.0.1:8000/v1") == 0  # attached to a server: nothing here
    assert gpus("hf-llava:/models/x") == 1 and gpus("hf-llava:/models/x,device=cpu") == 0
    assert gpus("hf-llava:/models/x,label=big", gpu_overrides={"big": 4}) == 4


def test_the_sbatch_script_asks_for_the_cells_resources(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    spec = ExecutorSpec.parse("slurm,partition=gpu,time=90,account=lab,mem_gb=64")
    script = sbatch_script(spec, Resources(gpus=2, cpus=8), tmp_path)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=90", "#SBATCH --account=lab", "#SBATCH --mem=64GB", "#SBATCH --nodes=1"):
        assert line in script, (line, script)
    cpu_only = sbatch_script(ExecutorSpec.parse("slurm,partition=cpu"), Resources(gpus=0, cpus=1), tmp_path)
    assert "--gpus-per-node" not in cpu_only and "#SBATCH --partition=cpu" in cpu_only
    with pytest.raises(MedmimError, match="unknown option"):
        sbatch_script(ExecutorSpec.parse("slurm,partitoin=gpu"), Resources(), tmp_path)
    if shutil.which("sbatch") is None:  # no Slurm here: one line saying where to run from instead
        with pytest.raises(MedmimError, match="no sbatch on this machine"):
            make_executor(ExecutorSpec.parse("slurm,partition=gpu"), tmp_path)


# ------------------------------------------------------------------------------- local executor
@pytest.mark.slow
def test_a_local_sweep_runs_every_cell_reports_a_failed_one_and_skips_finished_ones(
        plugin_site: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", "-m", "random,echo-test,fail=synth,label=broken", "-t", "synth-temporal", *FAST,
            "-x", "local,cpus=2", "-o", str(sweep_dir)]
    env = {"PYTHONPATH": str(plugin_site)}
    first = run_cli(*args, pythonpath=[plugin_site], env=env)
    assert first.returncode == 2, first.stderr
    cells = cells_of(sweep_dir)
    assert set(cells) == {("random", "synth-temporal"), ("broken", "synth-temporal")}
    broken, fine = cells[("broken", "synth-temporal")], cells[("random", "synth-temporal")]
    assert broken["state"] == "failed" and "ended in errors" in broken["error"] and fine["state"] == "done"
    log = broken["log"]
    assert f"log: {log}" in first.stderr and "1 cell(s) failed" in first.stderr
    assert Path(log).is_file() and "=== exit status 2" in Path(log).read_text()
    # the live view in plain lines (stderr is not a terminal): cell events and the sweep's status
    assert "started: random · synth-temporal (1 CPU)" in first.stderr and "done: random · synth-temporal" in first.stderr
    status = re.findall(r"^sweep: (\d+) pending · (\d+) running · (\d+) done · (\d+) failed; (\d+)/(\d+) samples, "
                        r"[\d.]+ samples/s", first.stderr, re.M)
    assert status and status[-1] == ("0", "0", "1", "1", "8", "8"), first.stderr
    # one leaderboard and one report over the cells, each cell an ordinary run directory
    assert "random" in (sweep_dir / "leaderboard.md").read_text() and (sweep_dir / "report.html").stat().st_size > 1000
    run_dirs = [Path(c["run_dir"]) for c in cells.values()]
    assert all((d / "manifest.json").is_file() for d in run_dirs)
    assert scores([Path(fine["run_dir"])])[("random", "synth-temporal", "closed")][1] == 2

    done_log = Path(fine["log"]).read_text()
    second = run_cli(*args, "--quiet", pythonpath=[plugin_site], env=env)
    assert second.returncode == 2
    assert "0 cell(s) run, 1 already finished, 1 failed" in second.stderr
    assert "failed: broken · synth-temporal" in second.stderr  # --quiet: failures and the last line only
    assert "started:" not in second.stderr and "pending ·" not in second.stderr
    assert Path(fine["log"]).read_text() == done_log  # the finished cell was not started again
    assert Path(log).read_text().count("=== exit status 2") == 2  # the failed one was tried again
    invocations = json.loads((sweep_dir / "sweep.json").read_text())["invocations"]
    assert [i["status"] for i in invocations] == ["finished with failures"] * 2


def test_bad_task_names_fail_before_any_cell_runs(tmp_path: Path) -> None:
    result = run_cli("sweep", "-m", "random", "-t", "synth-temporal,no-such-task", "-o", str(tmp_path / "s"))
    assert result.returncode == 2 and "no-such-task" in result.stderr
    assert not (tmp_path / "s" / "cells").exists()


# ------------------------------------------------------------------------------- submitit
@pytest.mark.slow
def test_the_slurm_path_runs_through_submitits_local_executor(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    sweep_dir = tmp_path / "sweep"
    result = run_cli("sweep", "-m", "random,majority", "-t", TWO_TASKS, *FAST, "-x", "slurm,cluster=local,array=1",
                     "-o", str(sweep_dir))
    assert result.returncode == 0, result.stderr
    cells = cells_of(sweep_dir)
    assert len(cells) == 4 and all(c["state"] == "done" for c in cells.values())
    assert list((sweep_dir / "slurm").rglob("*_result.pkl")), "submitit kept no job results"
    assert scores([Path(c["run_dir"]) for c in cells.values()])


# ------------------------------------------------------------------------------- a real Ray cluster
@pytest.fixture(scope="session")
def ray_cluster():  # type: ignore[no-untyped-def]
    """One local Ray instance (2 CPUs) for the session; the sweeps join it by its address."""
    ray = pytest.importorskip("ray")
    for attempt in range(3):  # Ray gives a new node 30 s to register: a busy machine may need another try
        try:
            context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            if ray.is_initialized():
                ray.shutdown()
            if attempt == 2:
                raise
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_ckpt() -> Path:
    pytest.importorskip("transformers")
    from tiny_models import tiny_llava

    return tiny_llava()


@pytest.mark.slow
def test_a_ray_sweep_gives_the_leaderboard_of_the_same_cells_run_one_by_one(
        ray_cluster: str, tiny_ckpt: Path, tmp_path: Path) -> None:
    tiny = f"hf-llava:{tiny_ckpt},format=mantis_llama3,device=cpu,label=tiny"
    models = f"random,majority,{tiny}"
    sweep_dir = tmp_path / "sweep"
    result = run_cli("sweep", "-m", models, "-t", "synth", *FAST, "--max-new-tokens", "6", "-x", f"ray:{ray_cluster}",
                     "-o", str(sweep_dir))
    assert result.returncode == 0, result.stderr
    cells = cells_of(sweep_dir)
    assert len(cells) == 3 * 4 and all(c["state"] == "done" for c in cells.values())
    assert all(c["resources"] == {"gpus": 0, "cpus": 1} for c in cells.values())
    one_by_one = []
    for (model, task), cell in sorted(cells.items()):
        spec = tiny if model == "tiny" else model
        out = tmp_path / "alone" / f"{model}-{task}"
        alone = run_cli("run", "-m", spec, "-t", task, *FAST, "--max-new-tokens", "6", "-o", str(out), "-q")
        assert alone.returncode == 0, alone.stderr
        one_by_one.append(out)
    swept = scores([Path(c["run_dir"]) for c in cells.values()])
    assert swept == scores(one_by_one) and len(swept) == 3 * 4 * 2


def _wait_for(condition, what: str, timeout: float = 600) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_ray_worker_killed_mid_cell_is_resumed_by_a_rerun_with_nothing_lost_or_duplicated(
        ray_cluster: str, plugin_site: Path, tmp_path: Path) -> None:
    gate, answered = tmp_path / "gate", tmp_path / "answered.jsonl"
    models = f"random,echo-test,batch=1,gate={gate},after=3,log={answered},label=echo"
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", "-m", models, "-t", "synth-temporal", "--limit", "4", "--open-metrics", "components=bleu+rougeL",
            "--no-cache", "-x", f"ray:{ray_cluster}", "-o", str(sweep_dir)]
    env = {"PYTHONPATH": str(plugin_site)}
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_cli(*args, pythonpath=[plugin_site], env=env)))
    thread.start()
    echo_dir = sweep_dir / "cells" / "echo__synth-temporal"
    _wait_for(lambda: (echo_dir / "cell.started").is_file() and len(RecordStore(echo_dir).load(repair=False)) >= 3,
              "the echo cell to record 3 samples and block")
    started = json.loads((echo_dir / "cell.started").read_text())
    os.kill(started["worker_pid"], signal.SIGKILL)  # the Ray worker running the cell, mid-cell
    thread.join(timeout=600)
    first = outcome["result"]
    assert first.returncode == 2, first.stderr  # type: ignore[attr-defined]
    cells = cells_of(sweep_dir)
    assert cells[("echo", "synth-temporal")]["state"] == "failed"
    assert "Ray" in cells[("echo", "synth-temporal")]["error"]
    assert cells[("random", "synth-temporal")]["state"] == "done"
    _wait_for(lambda: not _alive(started["run_pid"]), "the run of the killed worker to die with it", 30)
    kept = len(RecordStore(echo_dir).load(repair=False))
    assert kept == 3

    gate.write_text("open")
    second = run_cli(*args, pythonpath=[plugin_site], env=env)
    assert second.returncode == 0, second.stderr
    assert "1 cell(s) run, 1 already finished, 0 failed" in second.stderr
    lines = (echo_dir / "samples.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys)) == 8  # 4 closed + 4 open, one line each
    asked = [json.loads(line)["key"] for line in answered.read_text().splitlines()]
    assert sorted(asked) == sorted(keys)  # every sample asked exactly once over both invocations
    assert cells_of(sweep_dir)[("echo", "synth-temporal")]["state"] == "done"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").is_dir() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


class _SlowPolls:
    """The driver's ``time`` module with a poll interval long enough for a cell to start and end
    between two polls."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def sleep(_seconds: float) -> None:
        time.sleep(10.0)


@pytest.mark.slow
def test_a_cell_that_starts_and_ends_between_two_polls_is_reported_started_then_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medmim_eval.sweep import driver

    monkeypatch.setattr(driver, "time", _SlowPolls())
    sweep_dir = tmp_path / "sweep"
    result = run_cli("sweep", "-m", "random", "-t", "synth-temporal", *FAST, "-x", "local,cpus=1", "-o", str(sweep_dir))
    assert result.returncode == 0, result.stderr
    started = result.stderr.find("started: random · synth-temporal (1 CPU)")
    done = result.stderr.find("done: random · synth-temporal")
    assert 0 <= started < done, result.stderr
