"""Adapters as family packages: every built-in adapter is registered by its own family's plugin
module and built by a factory inside that family's package; the old flat module names still import
(as the moved module, with a DeprecationWarning naming the new path); the vLLM chat templates ship
in the wheel under their new package."""
from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medmim_eval import adapters
from medmim_eval.plugins import DEFAULT_PLUGINS, create_plugin_host

ROOT = Path(__file__).resolve().parents[1]
FAMILY_PLUGINS = {
    "medmim_eval.adapters.plugin": "medmim_eval.adapters.baselines",
    "medmim_eval.adapters.openai.plugin": "medmim_eval.adapters.openai",
    "medmim_eval.adapters.vllm.plugin": "medmim_eval.adapters.vllm",
    "medmim_eval.adapters.hf.plugin": "medmim_eval.adapters.hf",
    "medmim_eval.adapters.hf.internvl.plugin": "medmim_eval.adapters.hf.internvl",
    "medmim_eval.adapters.hf.deepseek_vl.plugin": "medmim_eval.adapters.hf.deepseek_vl",
    "medmim_eval.adapters.hf.med_flamingo.plugin": "medmim_eval.adapters.hf.med_flamingo",
}


def test_each_adapter_comes_from_its_family_package() -> None:
    host = create_plugin_host(autoload=False)
    assert [p for p in DEFAULT_PLUGINS if p.startswith("medmim_eval.adapters.")] == list(FAMILY_PLUGINS)
    seen = set()
    for name in host.adapters:
        entry, plugin = host.adapters.get(name), host.adapters.owners[name]
        module = entry.factory.partition(":")[0]
        assert module == FAMILY_PLUGINS[plugin] or module.startswith(FAMILY_PLUGINS[plugin] + "."), (name, module)
        assert entry.factory.partition(":")[0].rpartition(".")[2] not in adapters.MOVED, name
        seen.add(plugin)
    assert seen == set(FAMILY_PLUGINS)  # no family plugin is left empty (the split deepseek/flamingo one included)
    assert host.adapters.by_plugin("medmim_eval.adapters.hf.med_flamingo.plugin") == ["med-flamingo"]
    assert host.adapters.by_plugin("medmim_eval.adapters.hf.deepseek_vl.plugin") == ["hf-deepseek-vl"]


def test_no_flat_family_module_is_left() -> None:
    flat = sorted(p.stem for p in (ROOT / "adapters").glob("*.py"))
    assert flat == ["__init__", "baselines", "plugin"]
    assert not set(flat) & set(adapters.MOVED)


@pytest.mark.parametrize("old,new", sorted(adapters.MOVED.items()))
def test_old_flat_name_imports_the_moved_module(old: str, new: str) -> None:
    sys.modules.pop(f"medmim_eval.adapters.{old}", None)
    message = rf"medmim_eval\.adapters\.{old} moved to medmim_eval\.adapters\.{re.escape(new)}"
    with pytest.warns(DeprecationWarning, match=message):
        moved = importlib.import_module(f"medmim_eval.adapters.{old}")
    assert moved is importlib.import_module(f"medmim_eval.adapters.{new}")
    assert moved.__name__ == f"medmim_eval.adapters.{new}"


def test_old_factory_string_still_resolves() -> None:
    from medmim_eval.registry import resolve_callable

    sys.modules.pop("medmim_eval.adapters.openai_chat", None)
    with pytest.warns(DeprecationWarning):
        old = resolve_callable("medmim_eval.adapters.openai_chat:make_openai")
    assert old is resolve_callable("medmim_eval.adapters.openai.chat:make_openai")


def test_an_unknown_flat_name_still_fails() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("medmim_eval.adapters.hf_qwen2_vl")


@pytest.mark.slow
def test_wheel_ships_the_family_packages_and_chat_templates(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info",
                                                                 "__pycache__", "runs", "tests", "benchmarks"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("medmim_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = sorted(p.name for p in (ROOT / "adapters" / "vllm" / "chat_templates").glob("*.jinja"))
    assert templates
    for name in templates:
        assert f"medmim_eval/adapters/vllm/chat_templates/{name}" in names
    for package in FAMILY_PLUGINS:
        assert package.replace(".", "/") + ".py" in names
