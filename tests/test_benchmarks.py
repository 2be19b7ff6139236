"""Every script under benchmarks/ runs offline in its --quick mode, prints its table or ratio, and leaves
benchmarks/results/ alone."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_cpu_tool import TOOL  # where the serving benchmarks look by default

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

# script -> (needs the real data, needs the vLLM CPU tool, what its table or ratio line prints)
SCRIPTS = {
    "bench_api_concurrency.py": (False, False, "ceiling"),
    "bench_overhead.py": (True, False, "(harness + decode) / (plain PIL), samples/s:"),
    "bench_open_scoring.py": (True, False, "scorer per pair / harness, per pair:"),
    "bench_inprocess.py": (False, False, "samples/s  peak RSS"),
    "bench_training.py": (False, False, "samples/s,"),
    "bench_vllm_throughput.py": (True, True, "ratio whole"),
    "bench_extraction.py": (False, False, "| test | v3 |"),
    "bench_rerun.py": (True, False, "rerun of the finished run (median)"),
    "bench_near_duplicates.py": (True, False, "shipped thresholds pHash <="),
    "bench_sweep.py": (False, False, "ratio one-by-one / sweep local"),
    "bench_backends.py": (False, True, "| pair | task | kind |"),
}
NEEDS_MODULE = {"bench_sweep.py": "ray"}  # skipped with the reason where the module is not installed
# Run elsewhere, beside a resource that test shares: the throughput benchmark attaches (--base-url) to
# the vLLM server of tests/test_vllm_integration.py::TestAttachedServer instead of starting its own.
RUN_ELSEWHERE = {"bench_vllm_throughput.py": "test_vllm_integration.py::TestAttachedServer::"
                                             "test_the_throughput_benchmark_runs_against_it"}


def test_every_script_is_listed() -> None:
    assert sorted(p.name for p in BENCH.glob("bench_*.py")) == sorted(SCRIPTS)


def _results() -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in (BENCH / "results").iterdir()}


def test_scripts_run_elsewhere_are_run_there() -> None:
    for script, where in RUN_ELSEWHERE.items():
        path, *names = where.split("::")
        assert script in SCRIPTS and f"def {names[-1]}(" in (ROOT / "tests" / path).read_text()
        assert f'check_quick_run("{script}"' in (ROOT / "tests" / path).read_text()


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(set(SCRIPTS) - set(RUN_ELSEWHERE)))
def test_quick_mode_runs_offline(script: str, request: pytest.FixtureRequest) -> None:
    needs_data, needs_vllm, _ = SCRIPTS[script]
    extra = ["--data-dir", str(request.getfixturevalue("shared_data"))] if needs_data else []
    if script in NEEDS_MODULE:
        pytest.importorskip(NEEDS_MODULE[script], reason=f"{script} times the {NEEDS_MODULE[script]} executor")
    if needs_vllm and not TOOL.is_file():
        pytest.skip(f"{TOOL} is absent (the vLLM CPU engine)")
    # bench_backends' offline engine with its core in one process, as the vLLM tests start theirs
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if script == "bench_backends.py" else {}
    check_quick_run(script, extra, env)


def check_quick_run(script: str, extra: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``script --quick EXTRA``: it succeeds, prints its table or ratio, skips nothing and writes
    nothing into benchmarks/results/."""
    marker = SCRIPTS[script][2]
    before = _results()
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick", *extra], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker in done.stdout, done.stdout[-3000:]
    assert not re.search(r"^(SKIP:|skipped:)", done.stdout + done.stderr, re.M), done.stdout
    assert _results() == before, "a --quick run wrote into benchmarks/results/"
    if script == "bench_open_scoring.py":  # the harness's batched scores equal a scorer per pair's
        assert "40 pairs" in done.stdout, done.stdout
        line = next(x for x in done.stdout.splitlines() if x.startswith("largest difference"))
        assert float(line.rsplit("BERTScore recall ", 1)[1].split()[0]) <= 1e-6, line
