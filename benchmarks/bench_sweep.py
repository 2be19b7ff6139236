"""Benchmark: a sweep of the baselines and the tiny model through ``local`` and ``ray`` against the same
cells run one by one (one ``medmim-eval run`` per cell, in turn), as a ratio of wall times.

Cells: the five text-only baselines and the tiny SigLIP + Llama LLaVA of ``tests/tiny_models.py``
(in-process, ``device=cpu``) on the four tasks of the synthetic suite, ``--limit`` samples per kind,
no response cache. Every way starts from an empty sweep directory; each cell is a child process in
every way, so the ratio is what spreading cells over the machine's cores buys (and what Ray's own
start-up costs). Ray runs a local instance with as many CPUs as the machine has.

    python benchmarks/bench_sweep.py [--limit 8] [--quick]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
BASELINES = ("random", "majority", "longest-option", "shortest-option", "question-overlap")
TASKS = ("synth-temporal", "synth-reasoning", "synth-comparison", "synth-coreference")
CLI = [sys.executable, "-m", "medmim_eval"]


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:6])} ... failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=8, help="samples per kind and task")
    parser.add_argument("--quick", action="store_true", help="two baselines and the tiny model on one task, 2 samples per kind")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep.json"))
    args = parser.parse_args()
    from tiny_models import tiny_llava

    baselines, tasks = (BASELINES[:2], TASKS[:1]) if args.quick else (BASELINES, TASKS)
    limit = 2 if args.quick else args.limit
    tiny = f"hf-llava:{tiny_llava()},format=mantis_llama3,device=cpu,label=tiny"
    models = [*baselines, tiny]
    common = ["--limit", str(limit), "--max-new-tokens", "8", "--open-metrics", "components=bleu+rougeL", "--no-cache"]
    has_ray = importlib.util.find_spec("ray") is not None
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1", MEDMIM_CACHE_DIR=str(Path(tmp) / "cache"))
        # the suite is generated once, before anything is timed
        timed(["run", "-m", "random", "-t", ",".join(tasks), "--limit", "1", "-o", str(Path(tmp) / "warm"), "-q",
               *common[4:]], env)
        started = time.perf_counter()
        for model in models:
            for task in tasks:
                timed(["run", "-m", model, "-t", task, *common, "-q", "-o", str(Path(tmp) / "alone" / f"{model[:8]}-{task}")],
                      env)
        rows["one by one"] = time.perf_counter() - started
        executors = ["local"] + (["ray"] if has_ray else [])
        failures = []
        for executor in executors:
            try:
                rows[f"sweep {executor}"] = timed(["sweep", "-m", ",".join(models), "-t", ",".join(tasks), *common,
                                                   "-q", "-x", executor, "-o", str(Path(tmp) / executor)], env)
            except SystemExit as exc:  # print the other ways' numbers first
                failures.append(f"sweep {executor}: {exc}")
    cells = len(models) * len(tasks)
    print(f"{cells} cells ({len(baselines)} baselines + tiny model x {len(tasks)} tasks, {limit} samples per kind), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| way | wall s | one by one / this |")
    print("|---|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.1f} | {rows['one by one'] / seconds:.2f} |")
    for executor in ("local", "ray"):
        if f"sweep {executor}" in rows:
            print(f"ratio one-by-one / sweep {executor}: {rows['one by one'] / rows[f'sweep {executor}']:.2f}")
    if not has_ray:
        print("ray is not installed (pip install 'medmim-eval[sweep]'): only the local executor was timed")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    if not args.quick:
        Path(args.out).write_text(json.dumps({
            "date": date.today().isoformat(), "machine": platform.platform(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0], "cells": cells, "limit": limit, "wall_s": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
