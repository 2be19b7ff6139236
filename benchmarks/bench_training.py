#!/usr/bin/env python
"""Training throughput of the ``tiny`` recipe with 1 and 2 processes, and ``medmim-eval demo`` wall
time from a cold and from a warm cache.

Throughput: ``medmim-eval train tiny`` for ``--steps`` optimiser steps (checkpointing off): one
process with one thread, one process with ``--threads`` threads, then two processes under
``accelerate launch --multi_gpu`` (gloo on the CPU when there is no GPU) sharing the threads. The synthetic data and the tiny
base are built beforehand, so the numbers are training only (the Trainer's ``train_runtime``):
samples/s = steps x batch x grad_accum x processes / runtime; tokens/s = input tokens (padding
excluded) / runtime.

Demo: a fresh cache folder, ``medmim-eval demo`` twice (cold: data, training and evaluation; warm:
the cached model and the finished run). ``--demo-steps`` bounds the training of the cold run.
Writes benchmarks/results/training.json. A script, not a test: nothing is asserted.

    python benchmarks/bench_training.py [--steps 30] [--threads 2] [--demo-steps 300] [--skip-demo] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
RESULTS = Path(__file__).parent / "results" / "training.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def throughput(cache: Path, out: Path, processes: int, steps: int, threads: int) -> dict[str, Any]:
    per_process = max(1, threads // processes)
    env = {**os.environ, "MEDMIM_CACHE_DIR": str(cache), "OMP_NUM_THREADS": str(per_process), "HF_HUB_OFFLINE": "1"}
    train = ["train", "tiny", "--output", str(out), "--quiet", f"max_steps={steps}", "save_steps=1000000",
             f"threads={per_process}"]
    if processes == 1:
        cmd = [str(BIN / "medmim-eval"), *train]
    else:
        cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes),
               "--main_process_port", str(free_port()), "-m", "medmim_eval", *train]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    lineage = json.loads((out / "medmim_lineage.json").read_text())
    hp = lineage["hyperparameters"]
    runtime = float(lineage["train_runtime_s"])
    samples = lineage["steps"] * hp["batch_size"] * hp["grad_accum"] * processes
    return {"processes": processes, "threads_per_process": per_process, "steps": lineage["steps"],
            "batch_per_process": hp["batch_size"], "train_runtime_s": round(runtime, 2), "wall_s": round(wall, 2),
            "samples_per_s": round(samples / runtime, 2),
            "tokens_per_s": round(lineage["input_tokens_seen"] / runtime, 1),
            "steps_per_s": round(lineage["steps"] / runtime, 3)}


def demo_times(steps: int | None, threads: int) -> dict[str, Any]:
    cache = Path(tempfile.mkdtemp(prefix="bench-demo-cache-"))
    work = Path(tempfile.mkdtemp(prefix="bench-demo-run-"))
    env = {**os.environ, "MEDMIM_CACHE_DIR": str(cache), "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [str(BIN / "medmim-eval"), "demo", "--quiet", "--output", str(work / "run")]
    if steps:
        cmd += ["--train-option", f"max_steps={steps}"]
    out: dict[str, Any] = {"train_steps": steps or "recipe default"}
    try:
        for label in ("cold", "warm"):
            started = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            out[f"{label}_s"] = round(time.perf_counter() - started, 1)
            if done.returncode != 0:
                out[f"{label}_error"] = done.stderr[-500:]
        margins = work / "run" / "demo_margins.json"
        if margins.is_file():
            out["margins"] = json.loads(margins.read_text())["margins"]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per throughput run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads in all")
    parser.add_argument("--demo-steps", type=int, default=None, help="bound the demo's training (default: recipe's)")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/training.json")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 steps per throughput run (1 process x 1 thread, 2 processes), no demo; "
                             "writes to a temp file unless --out")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.skip_demo = 2, True
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="medmim-bench-")) / RESULTS.name if args.quick else RESULTS

    from medmim_eval.training_recipes.tiny import tiny_base, tiny_data
    from medmim_eval.training_recipes.tiny_model import TINY_ARCH, TINY_TRAINING

    cache = Path(tempfile.mkdtemp(prefix="bench-train-cache-"))
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        data = tiny_data(cache)
        tiny_base(data, int(TINY_TRAINING.get("seed", 0)), cache)
        shapes = ((1, 1), (2, args.threads)) if args.quick else ((1, 1), (1, args.threads), (2, args.threads))
        runs = [throughput(cache, work / f"p{p}-t{t}", p, args.steps, t) for p, t in shapes if p <= t]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "note": "shared machine: other processes may have used the same cores",
        "tiny_arch": TINY_ARCH, "throughput": runs,
    }
    for run in runs:
        print(f"{run['processes']} process(es) x {run['threads_per_process']} thread(s): "
              f"{run['samples_per_s']} samples/s, {run['tokens_per_s']} tokens/s, {run['steps_per_s']} steps/s "
              f"({run['steps']} steps, batch {run['batch_per_process']} per process)")
    if not args.skip_demo:
        result["demo"] = demo_times(args.demo_steps, args.threads)
        print(f"demo: cold {result['demo'].get('cold_s')} s, warm {result['demo'].get('warm_s')} s "
              f"(training steps: {result['demo']['train_steps']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
