"""Launching, attaching to, health-checking and stopping vLLM's OpenAI-compatible server.

Contract:

* :class:`ServerProcess` starts ``python -m vllm.entrypoints.openai.api_server`` with the python
  that has vLLM (``launcher=`` option, else ``$MEDMIM_VLLM_PYTHON``, else ``sys.executable``), on a
  free port of 127.0.0.1 unless told otherwise, its output going to a log file. ``wait_healthy``
  returns once ``GET /health`` answers 200 and raises :class:`MedmimError` with the log's last lines
  when the server exits or does not become healthy in time (and then stops it).
* The server runs under a small supervisor (pure standard library, run by the same python) that
  leads its own process group. The supervisor stops the server -- SIGTERM, then SIGKILL of the
  whole group (API server, engine core, workers) -- when its stdin closes, which happens when
  :meth:`ServerProcess.stop` runs *and* when the harness dies in any way (SIGKILL included: the
  kernel closes the pipe), when its parent changes, or on SIGTERM. So a launched server never
  outlives the process that launched it, and ``stop`` touches only the group it started.
* Ctrl-C in a terminal reaches only the harness (the server is in another session); the harness
  then stops the server from ``aclose``/``finally``, and an ``atexit`` hook stops any left over.
* Nothing here imports vllm, torch or openai.
"""
from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from medmim_eval.errors import MedmimError

PYTHON_ENV = "MEDMIM_VLLM_PYTHON"
ENV_ENV = "MEDMIM_VLLM_ENV"
ARGS_ENV = "MEDMIM_VLLM_ARGS"
INSTALL_HINT = ("pip install vllm on a GPU host, or set MEDMIM_VLLM_PYTHON to a python that has vllm, "
                "or pass base_url= to use a running server")
DEFAULT_STARTUP_TIMEOUT_S = 900.0
STOP_GRACE_S = 20.0
LOG_TAIL_LINES = 30

# Runs under the launcher python; argv: harness pid, grace seconds, server command...
SUPERVISOR = r"""
import os, signal, subprocess, sys, threading, time
harness, grace, cmd = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
stop = threading.Event()
def _eof():
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except Exception:
        pass
    stop.set()
threading.Thread(target=_eof, daemon=True).start()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
reason = None
while reason is None:
    if child.poll() is not None:
        reason = "the vLLM server exited with code %s" % child.returncode
    elif stop.wait(0.25):
        reason = "stop requested"
    elif os.getppid() != harness:
        reason = "the harness process is gone"
sys.stderr.write("medmim-vllm-supervisor: %s; stopping the process group\n" % reason)
sys.stderr.flush()
if child.poll() is None:
    child.send_signal(signal.SIGTERM)
    deadline = time.time() + grace
    while child.poll() is None and time.time() < deadline:
        time.sleep(0.1)
os.killpg(0, signal.SIGKILL)
"""


def launcher_python(options: dict[str, str]) -> str:
    """The python whose environment has vLLM: ``launcher=``, ``$MEDMIM_VLLM_PYTHON``, or this one."""
    return options.get("launcher") or os.environ.get(PYTHON_ENV) or sys.executable


def launch_env(options: dict[str, str]) -> dict[str, str]:
    """Extra environment for the engine: ``$MEDMIM_VLLM_ENV`` (``NAME=VALUE`` words), then the
    ``env.NAME=VALUE`` options, which win."""
    extra: dict[str, str] = {}
    for word in shlex.split(os.environ.get(ENV_ENV, "")):
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise MedmimError(f"${ENV_ENV}: expected NAME=VALUE words, got {word!r}")
        extra[name] = value
    for key, value in options.items():
        if key.startswith("env."):
            extra[key[4:]] = value
    return extra


def extra_args(options: dict[str, str]) -> list[str]:
    """Extra server arguments: ``$MEDMIM_VLLM_ARGS`` then ``args=`` (shell words)."""
    return shlex.split(os.environ.get(ARGS_ENV, "")) + shlex.split(options.get("args", ""))


@lru_cache(maxsize=None)
def has_vllm(python: str) -> bool:
    """Whether ``python`` can import vllm (found, not imported). Cached per process."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):  # not realpath: venvs are symlinks
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def vllm_missing(options: dict[str, str]) -> str | None:
    """Why no vLLM engine can be launched with these options (one line naming the fix), or None."""
    python = launcher_python(options)
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        source = "launcher=" if options.get("launcher") else (f"${PYTHON_ENV}" if os.environ.get(PYTHON_ENV) else "python")
        return f"{source} {python} is not an executable file; {INSTALL_HINT}"
    if not has_vllm(python):
        return f"vllm is not installed for {python}; {INSTALL_HINT}"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_json(url: str, timeout: float = 5.0) -> Any:
    """GET ``url`` and decode its JSON body (no third-party client)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only
        return json.loads(response.read().decode("utf-8") or "null")


def is_healthy(root_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{root_url}/health", timeout=timeout) as response:  # noqa: S310
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def root_of(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port``."""
    base = base_url.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


@dataclass
class ServerInfo:
    """What a running server says about itself."""

    base_url: str
    version: str | None
    models: list[dict[str, Any]]

    def served_names(self) -> list[str]:
        return [str(m.get("id")) for m in self.models]


def describe_server(base_url: str, timeout: float = 10.0) -> ServerInfo:
    """``/version`` and ``/v1/models`` of a server; raises MedmimError when it does not answer."""
    root = root_of(base_url)
    try:
        models = http_json(f"{root}/v1/models", timeout).get("data", [])
    except (urllib.error.URLError, OSError, ValueError, AttributeError) as exc:
        raise MedmimError(f"no OpenAI-compatible server answers at {base_url} ({exc}); start one with "
                          "`medmim-eval serve MODEL` or drop base_url= to launch one") from None
    try:
        version = http_json(f"{root}/version", timeout).get("version")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        version = None  # not a vLLM server, or an old one
    return ServerInfo(base_url=base_url, version=version, models=models)


@dataclass
class LaunchSpec:
    """Everything needed to launch one server. ``args`` follow ``--model/--host/--port``."""

    model: str
    served_name: str
    python: str = field(default_factory=lambda: sys.executable)
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S
    stop_grace: float = STOP_GRACE_S  # seconds between SIGTERM and SIGKILL of the group

    def command(self, port: int) -> list[str]:
        return [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                "--host", self.host, "--port", str(port), "--served-model-name", self.served_name, *self.args]


_LIVE: "weakref.WeakSet[ServerProcess]" = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.stop()


class ServerProcess:
    """One launched vLLM server. ``start`` -> ``wait_healthy`` -> ... -> ``stop`` (idempotent)."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self.port = spec.port or free_port(spec.host)
        self.log_path = spec.log_path or default_log_path(self.port)
        self._proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **self.spec.env)
        command = self.spec.command(self.port)
        with open(self.log_path, "ab") as log:
            log.write(f"# {datetime.now().isoformat(timespec='seconds')} {shlex.join(command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [self.spec.python, "-c", SUPERVISOR, str(os.getpid()), str(self.spec.stop_grace), *command],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        self.pgid = self._proc.pid  # the supervisor leads its own session and group
        _LIVE.add(self)
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Block until ``/health`` answers; on death or timeout stop the server and raise."""
        timeout = self.spec.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        root = root_of(self.base_url)
        try:
            while True:
                if not self.alive():
                    raise MedmimError(
                        f"the vLLM server for {self.spec.model} exited during start-up; last lines of "
                        f"{self.log_path}:\n{self.log_tail()}")
                if is_healthy(root):
                    return
                if time.monotonic() > deadline:
                    raise MedmimError(
                        f"the vLLM server for {self.spec.model} was not healthy after {timeout:.0f} s "
                        f"(raise startup_timeout=SECONDS); last lines of {self.log_path}:\n{self.log_tail()}")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and everything in its process group; safe to call more than once."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        # The supervisor sees EOF: SIGTERM, grace, SIGKILL of the group; stragglers are killed here.
        close_process_group(proc, self.pgid, self.spec.stop_grace + 5)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def default_log_path(port: int) -> Path:
    from medmim_eval.datadir import cache_dir

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return cache_dir() / "vllm-logs" / f"server-{stamp}-{port}.log"


def launch(spec: LaunchSpec, attempts: int = 2,
           announce: Callable[[ServerProcess], None] | None = None) -> ServerProcess:
    """Start a server and wait until it is healthy; a free port taken meanwhile is retried once.

    ``announce(server)`` runs right after the process starts (to say where its log is).
    """
    for attempt in range(attempts):
        server = ServerProcess(spec).start()
        if announce is not None:
            announce(server)
        try:
            server.wait_healthy()
            return server
        except MedmimError:
            if attempt + 1 < attempts and spec.port == 0 and "address already in use" in server.log_tail().lower():
                continue
            raise
    raise AssertionError("unreachable")


def close_process_group(proc: "subprocess.Popen[Any]", pgid: int | None, grace: float) -> None:
    """Close ``proc``'s stdin (its signal to exit and take its process group along), wait up to
    ``grace`` seconds, then SIGKILL whatever is left of the group ``pgid``."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    if proc.poll() is None:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
