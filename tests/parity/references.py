"""Getting at the authors' code without installing it: PyPI wheels unpacked into a test-session folder
(``pip download --no-deps``; skip when PyPI cannot be reached) and single modules imported by path,
with stand-ins only for named imports the module's chain needs and this environment lacks."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

# Read at import, before the tests' autouse fixture clears MEDMIM_* variables: $MEDMIM_PARITY_REFERENCE,
# else reference/ beside the data folder (.ci/run: ../shared/data), else ../shared/reference.
_DATA = os.environ.get("MEDMIM_DATA_DIR")
REFERENCE_ROOT = Path(os.environ.get("MEDMIM_PARITY_REFERENCE")
                      or (Path(_DATA).resolve().parent / "reference" if _DATA else
                          Path(__file__).resolve().parents[3] / "shared" / "reference"))


def reference_folder(name: str) -> Path:
    """The unmodified upstream sources in ``<REFERENCE_ROOT>/<name>`` (see its PROVENANCE.md), or skip."""
    folder = REFERENCE_ROOT / name
    if not (folder / "PROVENANCE.md").is_file():
        pytest.skip(f"reference sources {folder} are absent (set MEDMIM_PARITY_REFERENCE to shared/reference)")
    return folder


@contextlib.contextmanager
def on_path(folder: Path, package: str) -> Iterator[None]:
    """``folder`` first on ``sys.path`` while the block runs; afterwards the path and every
    ``package``/``package.*`` module are removed again, so two packages named alike (LLaVA-Med's
    ``llava`` and llava-torch's) never meet in one interpreter's module table."""
    saved = {name: mod for name, mod in sys.modules.items() if name == package or name.startswith(package + ".")}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
            del sys.modules[name]
        sys.modules.update(saved)


_WHEELS: dict[tuple[str, str], Path] = {}


def pypi_wheel(name: str, version: str, target: Path) -> Path:
    """Download ``name==version`` without its dependencies and unpack it into ``target``; once per
    test session (a later call returns the first call's folder)."""
    if (name, version) in _WHEELS:
        return _WHEELS[(name, version)]
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                           f"{name}=={version}", "-d", str(target / "wheel")],
                          capture_output=True, text=True, timeout=300)
    wheels = sorted((target / "wheel").glob("*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"cannot download {name}=={version} from PyPI: {done.stderr.strip().splitlines()[-1:]}")
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extractall(target / "src")
    _WHEELS[(name, version)] = target / "src"
    return target / "src"


@contextlib.contextmanager
def torchvision_importable(target: Path) -> Iterator[Path]:
    """PyPI's ``torchvision==0.28.0`` (no dependencies; downloaded once per session into ``target``)
    importable while the block runs: its CUDA operator registrations are replaced by an empty module
    (this torch is CPU-only); the transforms are torchvision's own."""
    src = pypi_wheel("torchvision", "0.28.0", target)
    with on_path(src, "torchvision"):
        sys.modules["torchvision._meta_registrations"] = ModuleType("torchvision._meta_registrations")
        yield src


def load_by_path(name: str, path: Path, stand_ins: dict[str, dict[str, Any]] | None = None) -> ModuleType:
    """Import the single file ``path`` as module ``name`` (its package ``__init__`` is not run).

    ``stand_ins`` maps an importable module to attributes it must offer: each attribute that the
    installed module lacks is set for the duration of the import only (recorded in the returned
    module's ``__parity_stand_ins__``)."""
    added: list[tuple[ModuleType, str]] = []
    for module_name, attributes in (stand_ins or {}).items():
        module = importlib.import_module(module_name)
        for attr, value in attributes.items():
            if not hasattr(module, attr):
                setattr(module, attr, value)
                added.append((module, attr))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        for owner, attr in added:
            delattr(owner, attr)
    module.__parity_stand_ins__ = [f"{owner.__name__}.{attr}" for owner, attr in added]  # type: ignore[attr-defined]
    return module


INTERNVL2_SITE = Path(__file__).parent / "internvl2_site"


def internvl2_importable() -> Path:
    """InternVL2's own ``internvl`` package (``<reference>/internvl2/internvl_chat``, returned) put on
    ``sys.path`` for the rest of the session (no installed package shares the name), with the
    stand-ins of ``internvl2_site/sitecustomize.py`` for two imports this environment lacks; or skip."""
    root = reference_folder("internvl2") / "internvl_chat"
    load_by_path("internvl2_stand_ins", INTERNVL2_SITE / "sitecustomize.py")
    if str(root) not in sys.path:
        sys.path.append(str(root))
    return root


def internvl2_pythonpath() -> list[Path]:
    """``PYTHONPATH`` entries giving a subprocess the same: the stand-ins (as ``sitecustomize``) and
    the reference package."""
    return [INTERNVL2_SITE, internvl2_importable()]
