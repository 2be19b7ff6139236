#!/usr/bin/env python
"""Harness overhead on the real MIM-RAD task (``held-out-rad``) with instant adapters.

Measures, as medians over a few repetitions (fresh output dir each time, response cache off):
  * the preparation phase (``prepare_run``: load + validate + image checks), also split into
    load/validate and image check;
  * the run phase (``run_prepared``) with an instant adapter that does not touch the images;
  * the run phase with an instant adapter that decodes every image of every sample with PIL;
  * a plain loop decoding the same per-sample image lists with PIL (no harness).
Prints a table and writes benchmarks/results/overhead.json. A script, not a test: nothing is asserted.

    MEDMIM_DATA_DIR=/path/to/data python benchmarks/bench_overhead.py [--repeats 7] [--profile] [--quick]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from medmim_eval.adapter import Capabilities, GenerationRequest, GenerationResult, ModelSpec
from medmim_eval.datadir import DATA_DIR_ENV, DataPaths
from medmim_eval.hookspecs import hookimpl
from medmim_eval.images import check_images
from medmim_eval.metrics import OpenMetricsConfig
from medmim_eval.plugins import create_plugin_host
from medmim_eval.registry import AdapterEntry
from medmim_eval.run_setup import RunOptions, prepare_run
from medmim_eval.runner import run_prepared
from medmim_eval.schema import PromptRecord
from medmim_eval.tasks_api import TaskContext, load_selection, select_tasks

TASK = "held-out-rad"
RAD_FILE = "Med_MIM_benchmark_Held_out_RAD.json"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "overhead.json"


def decode(paths: Sequence[str]) -> None:
    for path in paths:
        with Image.open(path) as image:
            image.convert("RGB")  # forces a full decode


class InstantAdapter:
    """Answers "A" at once; with ``decode`` it first decodes every image of the sample."""

    def __init__(self, decode_images: bool, batch_size: int) -> None:
        self.model_id = "bench-instant"
        self.decode_images = decode_images
        self.capabilities = Capabilities(max_images=99, batch_size=batch_size, cacheable=False)

    def fingerprint(self) -> dict[str, Any]:
        return {"adapter": "bench-instant", "decode": self.decode_images}

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        results: list[GenerationResult | BaseException] = []
        for request in requests:
            if self.decode_images:
                decode(request.sample.image_paths)
            n = len(request.sample.image_paths)
            results.append(GenerationResult("A", sent=PromptRecord(n_images=n, image_order=list(range(n)))))
        return results

    async def aclose(self) -> None:
        return None


class BenchPlugin:
    @hookimpl
    def register_adapters(self, register: Any) -> None:
        register(AdapterEntry(
            name="bench-instant", description="benchmark: instant answer, optional PIL decode",
            factory=lambda target, options, context: InstantAdapter(
                options.get("decode") == "1", int(options.get("batch_size", "1"))),
        ))


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu_count": os.cpu_count(), "cpus_usable": affinity, "cpu_model": cpu_model,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "pillow": Image.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV), help=f"default: ${DATA_DIR_ENV}")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured repetitions first (imports, page cache)")
    parser.add_argument("--batch-size", type=int, default=1, help="adapter batch size (default 1)")
    parser.add_argument("--open-metrics", default="bertscore.model=minilm",
                        help="open-answer metrics, as `run --open-metrics` (default: BERTScore with the offline MiniLM)")
    parser.add_argument("--out", type=Path, help=f"default: {DEFAULT_OUT.relative_to(DEFAULT_OUT.parents[2])}")
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run: small sizes, one repeat; writes to a temp file unless --out")
    parser.add_argument("--profile", action="store_true", help="also cProfile one no-decode run phase")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup = 1, 0
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="medmim-bench-")) / DEFAULT_OUT.name if args.quick else DEFAULT_OUT
    open_metrics = OpenMetricsConfig.parse((args.open_metrics,))

    data = DataPaths.resolve(args.data_dir) if args.data_dir else None
    rad_json = data.folder("med-mim") / RAD_FILE if data else None
    images = data.image_root("vqa-rad") if data else None
    if data is None or not rad_json.is_file() or not images.is_dir():
        print(f"SKIP: MIM-RAD data not found (need {RAD_FILE} under <data>/med-mim/ and "
              f"'VQA_RAD Image Folder/' under <data>/vqa-rad/); set {DATA_DIR_ENV} or pass --data-dir "
              f"(got {args.data_dir!r})")
        return 0

    host = create_plugin_host(autoload=False, extra_plugins=(BenchPlugin(),))
    selections = select_tasks(TASK, host)
    tmp = Path(tempfile.mkdtemp(prefix="medmim-bench-"))
    context = TaskContext(data=data, cache_dir=tmp / "cache")
    modes = {"no_decode": "0", "decode": "1"}
    times: dict[str, list[float]] = {k: [] for k in ("prepare", "prepare_load", "prepare_image_check",
                                                     "run_no_decode", "run_decode", "plain_pil")}
    n_samples = 0
    for rep in range(args.warmup + args.repeats):
        measured = rep >= args.warmup
        t_load, loaded = timed(load_selection, selections[0], host, context)
        t_check, _ = timed(check_images, loaded.samples)
        samples = loaded.samples
        n_samples = len(samples)
        for mode, flag in modes.items():
            spec = ModelSpec("bench-instant", None, (("decode", flag), ("batch_size", str(args.batch_size))))
            options = RunOptions(models=[spec], tasks=selections, output=tmp / f"run-{rep}-{mode}", data=data,
                                 use_cache=False, cache_dir=tmp / "cache", argv=["bench_overhead"],
                                 open_metrics=open_metrics)
            t_prep, prepared = timed(prepare_run, options, host)
            t_run, summary = timed(run_prepared, prepared, host)
            if summary.computed != n_samples or summary.errors or summary.model_failures:
                print(f"error: run {mode} computed {summary.computed}/{n_samples}, errors {summary.errors}, "
                      f"failures {summary.model_failures}", file=sys.stderr)
                return 1
            if measured:
                times[f"run_{mode}"].append(t_run)
                if mode == "no_decode":
                    times["prepare"].append(t_prep)
        t_plain, _ = timed(lambda: [decode(s.image_paths) for s in samples])
        if measured:
            times["prepare_load"].append(t_load)
            times["prepare_image_check"].append(t_check)
            times["plain_pil"].append(t_plain)

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    rate = {k: n_samples / med[k] for k in ("run_no_decode", "run_decode", "plain_pil")}
    n_images = sum(len(s.image_paths) for s in samples)
    result = {
        "task": TASK, "n_samples": n_samples, "n_image_decodes": n_images,
        "n_unique_images": len({p for s in samples for p in s.image_paths}),
        "repeats": args.repeats, "warmup": args.warmup, "adapter_batch_size": args.batch_size,
        "median_s": med, "min_s": best, "samples_per_s": rate,
        "ratio_harness_decode_over_plain_pil": rate["run_decode"] / rate["plain_pil"],
        "ratio_on_min_times": best["plain_pil"] / best["run_decode"],
        "harness_overhead_ms_per_sample": 1000 * (med["run_decode"] - med["plain_pil"]) / n_samples,
        "all_s": times, "machine": machine_info(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }

    rows = [("prepare_run (load+validate+image check)", "prepare", None),
            ("  load + validate", "prepare_load", None), ("  image check (PIL verify)", "prepare_image_check", None),
            ("run phase, instant, no decode", "run_no_decode", rate["run_no_decode"]),
            ("run phase, instant + PIL decode", "run_decode", rate["run_decode"]),
            ("plain PIL decode loop", "plain_pil", rate["plain_pil"])]
    print(f"\n{TASK}: {n_samples} samples, {n_images} image decodes per pass; median of {args.repeats}; "
          f"adapter batch size {args.batch_size}")
    print(f"{'phase':42} {'median s':>10} {'min s':>8} {'samples/s':>11}")
    for label, key, r in rows:
        print(f"{label:42} {med[key]:>10.4f} {best[key]:>8.4f} {(f'{r:,.0f}' if r else '-'):>11}")
    print(f"(harness + decode) / (plain PIL), samples/s: {result['ratio_harness_decode_over_plain_pil']:.3f}  "
          f"(on min times {result['ratio_on_min_times']:.3f}; "
          f"overhead {result['harness_overhead_ms_per_sample']:.3f} ms/sample)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")

    if args.profile:
        options = RunOptions(models=[ModelSpec("bench-instant")], tasks=selections, output=tmp / "run-profile",
                             data=data, use_cache=False, cache_dir=tmp / "cache",
                             open_metrics=open_metrics)
        prepared = prepare_run(options, host)
        profiler = cProfile.Profile()
        profiler.runcall(run_prepared, prepared, host)
        print("\nprofile of one no-decode run phase (cumulative, medmim_eval frames):")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats("medmim_eval", 15)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
