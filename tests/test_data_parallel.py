"""Data-parallel runs (torchrun / accelerate launch, gloo on CPU) and samples flagged for too many images.

Two ranks must write the same records as one process; a run killed under two ranks resumes under
one without redoing a finished sample; a rank that fails is reported, not waited for forever.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from mixed_tasks import mixed_task

from medmim_eval.distributed import RankInfo, rank_info
from medmim_eval.errors import MedmimError
from medmim_eval.records import RecordStore, merge_shards, shard_name, shard_paths
from medmim_eval.schema import SampleRecord

# What may differ between two runs of the same samples: timing, cache use and record order.
VOLATILE = ("finished_at", "latency_s", "cached")


def launch(nproc: int, *args: str, pythonpath: list[Path] | None = None, timeout: float = 600,
           launcher: str = "torchrun") -> subprocess.CompletedProcess[str]:
    """``python -m torch.distributed.run`` (or ``accelerate launch``) of ``-m medmim_eval ARGS``."""
    pytest.importorskip("torch")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    if launcher == "torchrun":
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    else:  # accelerate: --multi_gpu is its multi-process mode; the ranks talk over gloo, no GPU needed
        head = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(_free_port())]
    return subprocess.run([*head, "-m", "medmim_eval", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def final_records(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest record per (model, key), without the fields that legitimately differ."""
    return {k: r.model_dump(exclude=set(VOLATILE)) for k, r in RecordStore(out).load(repair=False).items()}


def assert_same_records(one: Path, other: Path) -> None:
    a, b = final_records(one), final_records(other)
    assert a.keys() == b.keys() and a
    for key in a:
        left, right = dict(a[key]), dict(b[key])
        left_scores, right_scores = left.pop("scores"), right.pop("scores")
        assert left == right, key
        assert left_scores.keys() == right_scores.keys(), key
        for name, value in left_scores.items():  # BERTScore batches differ by float noise only
            assert right_scores[name] == pytest.approx(value, abs=1e-4), (key, name)


@pytest.fixture(scope="module")
def llava_ckpt() -> Path:
    pytest.importorskip("transformers")
    from tiny_models import tiny_llava

    return tiny_llava()


@pytest.mark.slow
def test_two_ranks_write_the_same_records_as_one_process(llava_ckpt: Path, tmp_path: Path) -> None:
    task = mixed_task(tmp_path / "data", [2, 3, 2, 3, 2])
    common = ["run", "--models", f"hf-llava:{llava_ckpt},format=mantis_llama3,batch=1,label=tiny", "--tasks",
              str(task), "--max-new-tokens", "6", "--no-cache", "--quiet"]
    single = run_cli(*common, "--output", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    parallel = launch(2, *common, "--output", str(tmp_path / "two"))
    assert parallel.returncode == 0, parallel.stderr[-3000:]

    assert_same_records(tmp_path / "one", tmp_path / "two")
    assert not shard_paths(tmp_path / "two")  # merged into samples.jsonl, then removed
    assert "[rank 1]" in parallel.stderr and "computed on 2 ranks" in parallel.stderr
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert [i["world_size"] for i in manifest["invocations"]] == [2]
    cells = {(c["kind"]): c for c in json.loads((tmp_path / "two" / "results.json").read_text())["cells"]}
    assert cells["closed"]["n"] == cells["open"]["n"] == 5 and cells["open"]["n_scored"] == 5
    records = RecordStore(tmp_path / "two").load().values()
    assert all(r.done and not r.scores_pending and r.sent is not None for r in records)


@pytest.mark.slow
def test_accelerate_launch_gives_the_same_records_as_one_process(plugin_site: Path, tmp_path: Path) -> None:
    task = mixed_task(tmp_path / "data", [2, 3, 3, 2])
    common = ["run", "--models", "echo-test,batch=1", "--tasks", str(task), "--no-cache", "--quiet"]
    single = run_cli(*common, "--output", str(tmp_path / "one"), pythonpath=[plugin_site])
    assert single.returncode == 0, single.stderr
    parallel = launch(2, *common, "--output", str(tmp_path / "two"), pythonpath=[plugin_site], launcher="accelerate")
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert_same_records(tmp_path / "one", tmp_path / "two")
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["invocations"][-1]["world_size"] == 2


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left for the init process to reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_a_run_killed_under_two_ranks_resumes_under_one(plugin_site: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    task = mixed_task(tmp_path / "data", [2, 3] * 6)  # 24 samples
    out, log, gate = tmp_path / "run", tmp_path / "calls.jsonl", tmp_path / "never-created"
    held = ["run", "--models", f"echo-test,batch=1,concurrency=1,log={log},gate={gate},after=3,label=echo",
            "--tasks", str(task), "--output", str(out), "--no-cache", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(plugin_site), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "medmim_eval",
         *held], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    shards = [out / shard_name(0), out / shard_name(1)]
    try:
        # Each rank answers 3 prompts, then holds at the gate: wait until both shards hold them.
        deadline = time.time() + 300
        while time.time() < deadline and not all(p.exists() and p.read_text().count("\n") >= 3 for p in shards):
            assert process.poll() is None, "the launched run ended before it was killed"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and both ranks
        process.wait()
    assert all(p.read_text().count("\n") >= 3 for p in shards), "both ranks must have written records"
    before = {r.key for p in shards for r in RecordStore(out, p.name).iter_records()}
    assert 6 <= len(before) < 24
    first_pids = {json.loads(line)["pid"] for line in log.read_text().splitlines()}
    # torchrun puts each rank in a session of its own: the ranks must die with their launcher.
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(pid) for pid in first_pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in first_pids), "a rank outlived its SIGKILLed launcher"

    resumed = run_cli("run", "--models", f"echo-test,batch=1,log={log},label=echo", "--tasks", str(task),
                      "--output", str(out), "--no-cache", "--quiet", pythonpath=[plugin_site])
    assert resumed.returncode == 0, resumed.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    redone = {c["key"] for c in calls if c["pid"] not in first_pids} & before
    assert not redone
    assert not shard_paths(out)

    fresh = run_cli("run", "--models", "echo-test,batch=1,label=echo", "--tasks", str(task),
                    "--output", str(tmp_path / "fresh"), "--no-cache", "--quiet", pythonpath=[plugin_site])
    assert fresh.returncode == 0, fresh.stderr
    assert_same_records(tmp_path / "fresh", out)
    lines = [SampleRecord.model_validate_json(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    answered = {(r.key, r.finished_at, r.output) for r in lines}
    assert len(answered) == len({r.key for r in lines}) == 24  # no sample answered twice


@pytest.mark.slow
def test_a_rank_that_fails_is_reported_by_rank_0_and_the_others_records_are_kept(plugin_site: Path,
                                                                                   tmp_path: Path) -> None:
    task = mixed_task(tmp_path / "data", [2, 3, 2, 3])
    out = tmp_path / "run"
    result = launch(2, "run", "--models", "echo-test,batch=1,broken_rank=1,label=echo", "--tasks", str(task),
                    "--output", str(out), "--no-cache", "--quiet", pythonpath=[plugin_site], timeout=300)
    assert result.returncode != 0
    assert "rank 1 failed: RuntimeError: simulated crash on rank 1" in result.stderr
    kept = RecordStore(out).load()
    assert len(kept) == 4 and all(r.done for r in kept.values())  # rank 0's share of the 8 samples
    assert not shard_paths(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["invocations"][-1]["status"] == "failed"


def _record(key: str, output: str, finished: str = "2026-01-01T00:00:00+00:00") -> SampleRecord:
    return SampleRecord(key=key, task="t", model="m", kind="closed", ability="a", source="s", item_id=key,
                        n_images=2, gold="A", output=output, extracted=output, correct=output == "A",
                        finished_at=finished)


def test_a_merge_killed_half_way_is_completed_without_duplicates(tmp_path: Path) -> None:
    merged = RecordStore(tmp_path)
    merged.append(_record("old", "A"))
    shard = RecordStore(tmp_path, shard_name(1))
    records = [_record(f"k{i}", "AB"[i % 2]) for i in range(5)]
    for record in records:
        shard.append(record)
    merged.append(records[0])  # a merge killed after two appends, the second one torn
    merged.close()
    shard.close()
    with open(merged.path, "a") as handle:
        handle.write(records[1].model_dump_json()[:25])

    report = merge_shards(tmp_path)
    assert (report.appended, report.already_merged, report.shards) == (4, 1, [shard_name(1)])
    lines = merged.path.read_text().splitlines()
    assert [SampleRecord.model_validate_json(x).key for x in lines] == ["old", "k0", "k1", "k2", "k3", "k4"]
    assert not shard_paths(tmp_path) and merge_shards(tmp_path).appended == 0


def test_rank_comes_from_the_launcher_environment() -> None:
    assert rank_info({}) == RankInfo() and not rank_info({"WORLD_SIZE": "1", "RANK": "0"}).distributed
    info = rank_info({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (2, 4, 0, False)
    with pytest.raises(MedmimError, match="RANK"):
        rank_info({"WORLD_SIZE": "2"})
    with pytest.raises(MedmimError, match="WORLD_SIZE='two' is not an integer"):
        rank_info({"WORLD_SIZE": "two"})


def test_a_single_process_run_never_imports_torch(tmp_path: Path) -> None:
    poisoned = tmp_path / "poisoned" / "torch"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text("raise ImportError('torch must not be imported by a plain run')\n")
    task = mixed_task(tmp_path / "data", [2, 3])
    result = run_cli("run", "--models", "random", "--tasks", str(task), "--output", str(tmp_path / "run"), "--quiet",
                     "--open-metrics", "components=bleu+rougeL", pythonpath=[poisoned.parent])
    assert result.returncode == 0, result.stderr
    assert len(RecordStore(tmp_path / "run").load()) == 4
