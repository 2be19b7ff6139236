"""``medmim-eval new adapter``: the package it writes installs into a fresh venv and passes its own
tests (the conformance kit) unchanged."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from conftest import run_cli


def _venv_seeing_this_environment(folder: Path) -> Path:
    """A venv whose site-packages also reads this test run's (torch, medmim-eval and its editable
    finder), so nothing is downloaded or reinstalled; returns its python."""
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(folder)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "_medmim_parent.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


@pytest.mark.slow
def test_the_generated_package_installs_and_passes_its_own_tests(tmp_path: Path) -> None:
    made = run_cli("new", "adapter", "my-model", "--dir", str(tmp_path / "pkg"))
    assert made.returncode == 0, made.stderr
    package = tmp_path / "pkg"
    assert (package / "pyproject.toml").is_file() and (package / "README.md").is_file()

    python = _venv_seeing_this_environment(tmp_path / "venv")
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "-e", str(package)], capture_output=True, text=True, env=env, timeout=600)
    assert install.returncode == 0, install.stderr

    tests = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package,
                           capture_output=True, text=True, env=env, timeout=900)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "2 passed" in tests.stdout

    listing = subprocess.run([str(python), "-m", "medmim_eval", "list", "adapters"], capture_output=True, text=True,
                             env=env, timeout=300)
    assert listing.returncode == 0 and "my-model" in listing.stdout


def test_a_bad_name_or_a_used_folder_is_one_clear_error(tmp_path: Path) -> None:
    bad = run_cli("new", "adapter", "My_Model", "--dir", str(tmp_path / "x"))
    assert bad.returncode != 0 and "lower-case letters" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    used = run_cli("new", "adapter", "my-model", "--dir", str(tmp_path / "used"))
    assert used.returncode != 0 and "not empty" in used.stderr
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine" and len(list((tmp_path / "used").iterdir())) == 1
