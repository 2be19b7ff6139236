#!/usr/bin/env python
"""API throughput of the ``openai`` adapter against a loopback server with a fixed latency.

The server (tests/fake_openai_server.py, real HTTP/1.1) answers every chat completion after a
fixed latency (200 ms by default) and runs in its own process, so the client keeps its own CPU.
For each concurrency c (1, 8, 32, 64, 128, 256) the adapter sends N = clamp(8c, 40, 2048) requests
built from the real MIM-RAD samples (cycled; the synthetic suite when no data folder is given),
c in flight, and the table reports requests/s against the ceiling c / latency. Each level uses a
fresh adapter whose image cache is filled first (timed apart: 285 unique MIM-RAD images, 70 of
them larger than 1024 px, one larger than the default max_side of 2048); one more row at c=64
starts with the cache cold, and ``--max-side 1024`` makes the adapter re-encode 70 of them. Each
level stops issuing requests after ``--max-seconds``.

Every row is the median of ``--repeats`` runs (3), since the machine may be shared; the JSON keeps
each run's rate and the load average. ``--naive`` adds the peer-harness pattern for contrast at
c=8 and 64 (once): every image re-encoded to PNG on the event loop for every request.
``--harness`` adds an end-to-end run (prepare_run + run_prepared, the 293 closed MIM-RAD
questions, response cache off, so its image cache starts cold) at concurrency 64.

    MEDMIM_DATA_DIR=../shared/data python benchmarks/bench_api_concurrency.py [--naive] [--harness] [--quick]

A script, not a test: nothing is asserted. Writes benchmarks/results/api_concurrency.json.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from medmim_eval.adapter import GenerationRequest, GenerationSettings, ModelSpec
from medmim_eval.adapters.openai.chat import OpenAIChatAdapter
from medmim_eval.datadir import DATA_DIR_ENV, DataPaths
from medmim_eval.plugins import create_plugin_host
from medmim_eval.schema import PromptRecord, Sample, TextPart
from medmim_eval.tasks_api import TaskContext, load_selection, select_tasks

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "fake_openai_server.py"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "api_concurrency.json"
LEVELS = (1, 8, 32, 64, 128, 256)


class NaiveAdapter(OpenAIChatAdapter):
    """The pattern a peer harness uses: each image decoded and re-encoded to PNG on the event loop."""

    async def _content(self, sample: Sample) -> tuple[list[dict[str, Any]], PromptRecord]:
        from PIL import Image

        content: list[dict[str, Any]] = []
        for part in sample.prompt.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
                continue
            buffer = io.BytesIO()
            with Image.open(part.path) as image:
                image.convert("RGB").save(buffer, "PNG")
            url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            content.append({"type": "image_url", "image_url": {"url": url}})
        return content, PromptRecord(n_images=len(sample.prompt.images))


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, str(SERVER), "--latency", str(latency), "--no-inspect"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def load_samples(data_dir: str | None, cache: Path) -> tuple[str, list[Sample], DataPaths | None]:
    host = create_plugin_host(autoload=False)
    data = DataPaths.resolve(data_dir) if data_dir else DataPaths.resolve(cache / "no-data")
    names = "held-out-rad" if data_dir else "synth"
    samples: list[Sample] = []
    for selection in select_tasks(names, host):
        samples.extend(load_selection(selection, host, TaskContext(data=data, cache_dir=cache)).samples)
    return names, samples, (data if data_dir else None)


async def level(url: str, samples: list[Sample], concurrency: int, count: int, max_seconds: float,
                mode: str = "warm", extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Send ``count`` requests, ``concurrency`` in flight, through one fresh adapter.

    ``mode``: ``warm`` encodes every image first (timed apart), ``cold`` starts with an empty image
    cache, ``naive`` re-encodes every image to PNG on the event loop for every request.
    """
    cls = NaiveAdapter if mode == "naive" else OpenAIChatAdapter
    adapter = cls("bench", "test-model", [url], api_key=None,
                  options={"concurrency": str(concurrency), "timeout": "120", "max_retries": "0", **(extra or {})})
    settings = GenerationSettings(max_new_tokens=16)
    warmup = None
    if mode == "warm":
        started = time.perf_counter()
        await asyncio.gather(*(adapter.images.get(p) for p in {p for s in samples for p in s.image_paths}))
        warmup = round(time.perf_counter() - started, 3)
    next_index, done, errors = 0, 0, 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker() -> None:
        nonlocal next_index, done, errors
        while next_index < count and time.perf_counter() < deadline:
            sample = samples[next_index % len(samples)]
            next_index += 1
            (result,) = await adapter.generate([GenerationRequest(sample, settings)])
            done += 1
            errors += isinstance(result, BaseException)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    encoded = adapter.images.encoded
    await adapter.aclose()
    labels = {"warm": "adapter, image cache warm", "cold": "adapter, image cache cold", "naive": "naive: PNG on the loop"}
    return {"concurrency": concurrency, "requests": done, "errors": errors, "seconds": round(elapsed, 3),
            "requests_per_s": round(done / elapsed, 1), "images_encoded": encoded, "warmup_encode_s": warmup,
            "mode": labels[mode]}


def repeated(run: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    """The median of ``repeats`` runs by requests/s, with every run's rate and the best one."""
    runs = sorted((run() for _ in range(repeats)), key=lambda r: r["requests_per_s"])
    row = dict(runs[len(runs) // 2])
    row["all_requests_per_s"] = [r["requests_per_s"] for r in runs]
    row["best_requests_per_s"] = runs[-1]["requests_per_s"]
    return row


def harness_run(url: str, data: DataPaths, tmp: Path, concurrency: int, extra: dict[str, str]) -> dict[str, Any]:
    from medmim_eval.run_setup import RunOptions, prepare_run
    from medmim_eval.runner import run_prepared

    host = create_plugin_host(autoload=False)
    spec = ModelSpec("openai", "test-model", (("base_url", url), ("concurrency", str(concurrency)), *extra.items()))
    output = Path(tempfile.mkdtemp(prefix="harness-run-", dir=tmp))
    options = RunOptions(models=[spec], tasks=select_tasks("held-out-rad:closed", host), output=output,
                         data=data, use_cache=False, cache_dir=tmp / "cache", concurrency=concurrency,
                         argv=["bench_api_concurrency"])
    prepared = prepare_run(options, host)
    started = time.perf_counter()
    summary = run_prepared(prepared, host)
    elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": summary.computed, "errors": summary.errors,
            "seconds": round(elapsed, 3), "requests_per_s": round(summary.computed / elapsed, 1),
            "mode": "harness run (held-out-rad:closed)"}


def machine_info() -> dict[str, Any]:
    from PIL import Image

    from medmim_eval.adapters.openai.http_client import httpx_module

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu_count": os.cpu_count(), "cpus_usable": affinity, "python": sys.version.split()[0],
            "platform": platform.platform(), "http_client": f"{httpx_module().__name__} {httpx_module().__version__}", "pillow": Image.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV), help=f"default: ${DATA_DIR_ENV}")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--rounds", type=int, default=8, help="requests per level = clamp(rounds * c, 40, --max-requests)")
    parser.add_argument("--max-requests", type=int, default=2048)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop issuing requests in a level after this")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the table shows the median")
    parser.add_argument("--naive", action="store_true", help="also the PNG-on-the-event-loop pattern at 8 and 64 (once)")
    parser.add_argument("--harness", action="store_true", help="also one end-to-end run at concurrency 64 (needs data)")
    parser.add_argument("--max-side", help="the adapter's max_side option (default: the adapter's, 2048)")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/api_concurrency.json")
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run: small sizes, one repeat; writes to a temp file unless --out")
    args = parser.parse_args()
    if args.quick:  # 40 requests at c=1 and c=8, 10 ms each
        args.latency, args.levels, args.max_requests, args.max_seconds, args.repeats = 0.01, "1,8", 40, 5.0, 1
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="medmim-bench-")) / DEFAULT_OUT.name if args.quick else DEFAULT_OUT

    load_before = [round(x, 2) for x in os.getloadavg()]  # a shared machine: say how busy it was
    tmp = Path(tempfile.mkdtemp(prefix="medmim-bench-api-"))
    source, samples, data = load_samples(args.data_dir, tmp / "cache")
    print(f"{source}: {len(samples)} samples, {len({p for s in samples for p in s.image_paths})} unique images; "
          f"server latency {args.latency * 1000:.0f} ms")
    process, url = start_server(args.latency)
    rows: list[dict[str, Any]] = []
    extra = {"max_side": args.max_side} if args.max_side else {}
    try:
        def count(c: int) -> int:
            return max(40, min(args.max_requests, args.rounds * c))

        for c in (int(x) for x in args.levels.split(",")):
            rows.append(repeated(lambda: asyncio.run(level(url, samples, c, count(c), args.max_seconds, extra=extra)),
                                 args.repeats))
        rows.append(repeated(lambda: asyncio.run(level(url, samples, 64, count(64), args.max_seconds, mode="cold",
                                                       extra=extra)), args.repeats))
        if args.naive:
            for c in (8, 64):
                rows.append(asyncio.run(level(url, samples, c, count(c), min(args.max_seconds, 15.0), mode="naive")))
        if args.harness and data is not None:
            rows.append(repeated(lambda: harness_run(url, data, tmp, 64, extra), args.repeats))
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"\nload average before {load_before}, after {[round(x, 2) for x in os.getloadavg()]}")
    print(f"{'mode':34} {'c':>4} {'requests':>9} {'seconds':>8} {'req/s':>8} {'best':>8} {'ceiling':>8} {'ratio':>6}")
    for row in rows:
        row["ceiling_per_s"] = round(row["concurrency"] / args.latency, 1)
        row["ratio"] = round(row["requests_per_s"] / row["ceiling_per_s"], 3)
        print(f"{row['mode']:34} {row['concurrency']:>4} {row['requests']:>9} {row['seconds']:>8.2f} "
              f"{row['requests_per_s']:>8.1f} {row.get('best_requests_per_s', row['requests_per_s']):>8.1f} "
              f"{row['ceiling_per_s']:>8.1f} {row['ratio']:>6.2f}"
              + (f"  ({row['errors']} errors)" if row["errors"] else ""))
    result = {"source": source, "n_samples": len(samples), "latency_s": args.latency,
              "adapter_options": extra or "defaults", "rows": rows,
              "load_average_before": load_before, "machine": machine_info(),
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
