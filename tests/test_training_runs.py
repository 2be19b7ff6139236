"""``medmim-eval train`` as a user runs it: killed and resumed, and data parallel under accelerate."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CLI, run_cli
from training_cases import lineage, synth_train

pytest.importorskip("torch")
pytest.importorskip("accelerate")

pytestmark = pytest.mark.slow
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


@pytest.fixture(scope="module")
def base() -> Path:
    from tiny_models import tiny_llava

    return tiny_llava()


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def train_args(data: list[Path], base: Path, out: Path, *overrides: str) -> list[str]:
    return ["train", "sft-llava", "--data", ",".join(map(str, data)), "--base", str(base), "--output", str(out),
            "--quiet", *overrides]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(base: Path,
                                                                                   tmp_path: Path) -> None:
    data = list(synth_train(tmp_path / "synth", n_closed=6, n_open=2).values())
    settings = ("max_steps=40", "batch_size=4", "grad_accum=1", "lr=1e-3", "save_steps=10", "logging_steps=5")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([CLI, *train_args(data, base, killed, *settings)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any((killed / f"checkpoint-{n}" / "trainer_state.json").is_file() for n in (10, 20)):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (killed / "medmim_lineage.json").exists(), "the run ended before it was killed"
    # Before resuming, everything moves (as a cache folder that has moved): the data, the base, the run.
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(tmp_path / "synth", moved / "synth")
    shutil.move(killed, moved / "killed")
    shutil.copytree(base, moved / "base")
    data, killed = [moved / "synth" / p.relative_to(tmp_path / "synth") for p in data], moved / "killed"
    resumed = subprocess.run([CLI, *train_args(data, moved / "base", killed, *settings)], env=env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {killed}/checkpoint-" in resumed.stderr
    record = lineage(killed)
    assert record["steps"] == 40 and record["resumed"] and record["resumed"][0]["from_step"] >= 10
    assert not list(killed.glob("checkpoint-*"))  # dropped once the model is saved
    straight = tmp_path / "straight"
    once = subprocess.run([CLI, *train_args(data, base, straight, *settings)], env=env(), capture_output=True,
                          text=True, timeout=600)
    assert once.returncode == 0, once.stderr
    assert lineage(straight)["steps"] == 40 and not lineage(straight)["resumed"]
    # Optimizer, scheduler, RNG and data position were restored: the same weights, up to float noise.
    import torch

    a, b = weights(killed), weights(straight)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    assert max(float((a[k] - weights(base)[k].to(a[k].dtype)).abs().max()) for k in a if k in weights(base)) > 1e-3
    again = run_cli(*train_args(data, base, killed, *settings))  # in this process: neither call trains
    assert again.returncode == 0 and "nothing to train" in again.stderr
    changed = run_cli(*train_args(data, base, killed, "max_steps=7"))
    assert changed.returncode == 2 and "max_steps: 40 -> 7" in changed.stderr and "--restart" in changed.stderr
    del torch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_cpu_processes_under_accelerate_run_the_documented_steps_per_epoch(base: Path, tmp_path: Path) -> None:
    data = list(synth_train(tmp_path / "synth", n_closed=4, n_open=1).values())  # 20 items
    out = tmp_path / "dp"
    result = subprocess.run(
        # accelerate's --cpu launches one process unless MPI is configured (--mpirun_hostfile); --multi_gpu on a
        # host without CUDA starts torchrun processes that join a gloo group on the CPU.
        [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port()),
         "-m", "medmim_eval", *train_args(data, base, out, "epochs=2", "batch_size=2", "grad_accum=2",
                                          "save_steps=1000")],
        env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = lineage(out)
    # 20 items in batches of 2 = 10 batches, 5 per process, 2 per optimiser step -> ceil(5 / 2) = 3 a epoch.
    assert record["processes"] == 2 and record["steps_per_epoch"] == 3 and record["steps"] == 6
    assert result.stderr.count("optimiser steps per epoch") == 1  # only the main process reports
