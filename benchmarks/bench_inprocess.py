#!/usr/bin/env python
"""Samples/s and peak memory of the in-process adapters on tiny models, at batch 1, 4 and 16.

For each adapter (``hf-llava`` on the tiny SigLIP + Llama LLaVA, ``hf-idefics2`` on the tiny
Idefics2 of ``tests/tiny_models.py``) and each batch size, a fresh child process loads the model,
warms it up on one batch, then answers the same 48 samples of the synthetic ``synth-comparison``
and ``synth-coreference`` tasks (2-3 real generated images each, greedy, 16 new tokens) and reports
wall time and its peak resident memory (``ru_maxrss``). Each child runs ``--repeats`` passes; the
median counts. Prints a table, writes ``benchmarks/results/inprocess.json``. A script, not a test.

    python benchmarks/bench_inprocess.py [--repeats 3] [--threads 2] [--quick]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "inprocess.json"
BATCHES = (1, 4, 16)
N_SAMPLES = 48
NEW_TOKENS = 16


def _samples(cache: Path) -> list[Any]:
    from medmim_eval.plugins import create_plugin_host
    from medmim_eval.datadir import DataPaths
    from medmim_eval.tasks_api import TaskContext, load_selection, select_tasks

    host = create_plugin_host(autoload=False)
    context = TaskContext(data=DataPaths.resolve(None), cache_dir=cache)
    samples: list[Any] = []
    for name in ("synth-comparison", "synth-coreference"):
        samples += load_selection(select_tasks(name, host)[0], host, context).samples
    return samples[:N_SAMPLES]


def child(adapter_name: str, batch: int, repeats: int, cache: Path, n_samples: int = N_SAMPLES,
          new_tokens: int = NEW_TOKENS) -> dict[str, Any]:
    """Runs in a child process: load, warm up, time ``repeats`` passes; returns the measurements."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_models  # noqa: E402  (test fixtures build the tiny checkpoints offline)

    from medmim_eval.adapter import AdapterContext, GenerationRequest, GenerationSettings
    from medmim_eval.adapters.hf.idefics2 import make_hf_idefics2
    from medmim_eval.adapters.hf.llava import make_hf_llava

    folder, factory = {"hf-llava": (tiny_models.tiny_llava(), make_hf_llava),
                       "hf-idefics2": (tiny_models.tiny_idefics2(), make_hf_idefics2)}[adapter_name]
    samples = _samples(cache)[:n_samples]
    started = time.perf_counter()
    adapter = factory(str(folder), {"batch": str(batch)}, AdapterContext())
    load_s = time.perf_counter() - started
    settings = GenerationSettings(max_new_tokens=new_tokens)

    def one_pass(items: list[Any]) -> int:
        errors = 0
        for i in range(0, len(items), batch):
            requests = [GenerationRequest(sample=s, settings=settings) for s in items[i:i + batch]]
            results = asyncio.run(adapter.generate(requests))
            errors += sum(isinstance(r, BaseException) for r in results)
        return errors

    one_pass(samples[:batch])  # warm-up
    times, errors = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        errors += one_pass(samples)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {"adapter": adapter_name, "batch": batch, "n_samples": len(samples),
            "n_images": sum(len(s.image_paths) for s in samples), "load_s": round(load_s, 3),
            "median_s": round(median, 3), "samples_per_s": round(len(samples) / median, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each child")
    parser.add_argument("--child", nargs=2, metavar=("ADAPTER", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--samples", type=int, default=N_SAMPLES, help="samples per pass")
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/inprocess.json")
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run: small sizes, one repeat; writes to a temp file unless --out")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.batches, args.samples, args.new_tokens = 1, "1,4", 8, 4
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="medmim-bench-")) / OUT.name if args.quick else OUT
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(child(args.child[0], int(args.child[1]), args.repeats, Path(args.cache), args.samples,
                               args.new_tokens)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for adapter in ("hf-llava", "hf-idefics2"):
            for batch in (int(b) for b in args.batches.split(",")):
                out = subprocess.run([sys.executable, __file__, "--child", adapter, str(batch), "--repeats",
                                      str(args.repeats), "--threads", str(args.threads), "--cache", cache,
                                      "--samples", str(args.samples), "--new-tokens", str(args.new_tokens)],
                                     check=True, capture_output=True, text=True,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"{adapter:12} batch {batch:>2}: {r['samples_per_s']:7.2f} samples/s  "
                      f"peak RSS {r['peak_rss_mib']:7.1f} MiB  load {r['load_s']:.2f} s  errors {r['errors']}")
    for adapter in ("hf-llava", "hf-idefics2"):
        base = next(r for r in rows if r["adapter"] == adapter)["samples_per_s"]  # the smallest batch
        for r in rows:
            if r["adapter"] == adapter:
                r["ratio_to_batch_1"] = round(r["samples_per_s"] / base, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                               "threads": args.threads, "repeats": args.repeats, "new_tokens": args.new_tokens,
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
