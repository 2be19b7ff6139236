"""Runs one sweep cell where an executor placed it: ``python -m medmim_eval run ...`` in a child process, logged to the cell's log.

This is the function Ray, submitit and the local pool call. It imports nothing heavy, so a worker
starts it at once; the child is an ordinary ``run`` (resumable sample by sample) and dies with
the worker that started it (Linux parent-death signal), so a killed worker never leaves a run
appending records behind the rerun's back.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from medmim_eval.distributed import die_with_launcher

# Variables a cell takes from the sweep's environment (the worker's own environment stays underneath).
# Names that look like secrets are never forwarded: the job description may be pickled to a shared disk.
FORWARD_PREFIXES = ("MEDMIM_", "HF_", "TRANSFORMERS_", "VLLM_", "OMP_NUM_THREADS")
FORWARD_NAMES = ("PYTHONPATH",)
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The sweep's settings a cell needs wherever it runs: data and cache folders, offline flags, plugin paths."""
    environ = dict(os.environ if environ is None else environ)
    return {name: value for name, value in environ.items()
            if (name in FORWARD_NAMES or name.startswith(FORWARD_PREFIXES))
            and not any(word in name.upper() for word in SECRET_WORDS)}


@dataclass
class CellJob:
    """What a worker needs to run one cell: everything is plain data (picklable, no secrets)."""

    key: str
    run_dir: str
    run_args: list[str]
    attempt: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class CellOutcome:
    key: str
    returncode: int
    seconds: float
    host: str
    error: str | None = None  # the run's last error line, for the sweep's report


def last_error_line(log: Path) -> str | None:
    """The last ``error:`` line of a log (what ``run`` printed before exiting), else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error:") or "Error" in line.split(":")[0]:
            return line
    return lines[-1] if lines else None


def run_cell(job: CellJob, extra_env: dict[str, str] | None = None) -> CellOutcome:
    """Run ``medmim-eval run`` for ``job`` with this interpreter; its output is appended to the cell's log."""
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "cell.log"
    host = socket.gethostname()
    env = {**os.environ, **job.env, **(extra_env or {})}
    command = [sys.executable, "-m", "medmim_eval", "run", *job.run_args, "--quiet"]
    started = time.monotonic()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {job.attempt} on {host} (pid {os.getpid()}"
                  f"{', CUDA_VISIBLE_DEVICES=' + env['CUDA_VISIBLE_DEVICES'] if 'CUDA_VISIBLE_DEVICES' in env else ''})\n")
        log.flush()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 preexec_fn=die_with_launcher if sys.platform.startswith("linux") else None)
        started_info = {"attempt": job.attempt, "worker_pid": os.getpid(), "run_pid": child.pid, "host": host}
        (run_dir / "cell.started").write_text(json.dumps(started_info) + "\n", encoding="utf-8")
        try:
            returncode = child.wait()
        except BaseException:
            child.terminate()  # the run records "interrupted" and keeps every finished sample
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
        log.write(f"=== exit status {returncode}\n")
    seconds = time.monotonic() - started
    error = None if returncode == 0 else (last_error_line(log_path) or f"exit status {returncode}")
    return CellOutcome(job.key, returncode, seconds, host, error)
