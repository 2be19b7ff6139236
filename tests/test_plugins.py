"""Plugins: third-party extension end to end, isolation of failures, duplicates, did-you-mean."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.errors import PluginError, UnknownNameError
from medmim_eval.hookspecs import hookimpl
from medmim_eval.plugins import create_plugin_host
from medmim_eval.registry import AdapterEntry


def fake_distribution(site: Path, dist: str, module: str, body: str, entry_name: str | None = None) -> None:
    """Lay out an installed distribution (dist-info + module) as pip would."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[medmim_eval]\n{entry_name or module} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(body))


BROKEN = """
import definitely_not_installed_backend  # noqa
"""
DUPLICATE = """
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry

@hookimpl
def register_adapters(register):
    register(AdapterEntry(name="random", description="impostor", factory=lambda *a: None))
"""
MISSPELLED = """
from medmim_eval.hookspecs import hookimpl

@hookimpl
def register_adaptors(register):
    pass
"""


def test_third_party_package_adds_an_adapter_a_task_and_a_command(plugin_site: Path, tmp_path: Path) -> None:
    listing = run_cli("plugins", "--json", pythonpath=[plugin_site])
    assert listing.returncode == 0, listing.stderr
    plugins = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}
    mine = plugins["test_plugin"]
    assert mine["distribution"] == "medmim-test-plugin" and mine["version"] == "0.3.1"
    assert mine["hooks"] == ["register_adapters", "register_commands", "register_tasks"]
    assert mine["registered"] == {"adapters": ["echo-test"], "tasks": ["toy-shapes"]}

    out = tmp_path / "run"
    result = run_cli("run", "--models", "echo-test,random", "--tasks", "toy-shapes", "--output", str(out),
                     pythonpath=[plugin_site])
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    echo = [r for r in records if r["model"] == "echo-test" and r["kind"] == "closed"]
    assert len(echo) == 12 and all(r["correct"] for r in echo)  # the adapter really read the pixels
    assert all(r["sent"]["image_sizes"] == [[16, 16], [16, 16]] for r in echo)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {m["id"]: m["plugin"] for m in manifest["models"]} == {"echo-test": "test_plugin", "random": "medmim_eval.adapters.plugin"}
    assert any(p["name"] == "test_plugin" and p["version"] == "0.3.1" for p in manifest["plugins"])

    hello = run_cli("toy-hello", pythonpath=[plugin_site])
    assert hello.returncode == 0 and "hello from medmim-test-plugin" in hello.stdout
    assert "toy-hello" in run_cli("--help", pythonpath=[plugin_site]).stdout


def test_a_plugin_that_fails_to_import_leaves_the_cli_working(tmp_path: Path) -> None:
    fake_distribution(tmp_path, "broken-plugin", "broken_plugin", BROKEN)
    listing = run_cli("plugins", pythonpath=[tmp_path])
    assert listing.returncode == 0
    assert "plugin 'broken_plugin' (from broken-plugin) failed" in listing.stdout
    assert "ModuleNotFoundError" in listing.stdout

    other = run_cli("list", "adapters", pythonpath=[tmp_path])
    assert other.returncode == 0 and "random" in other.stdout
    assert "warning: plugin 'broken_plugin'" in other.stderr

    out = tmp_path / "run"
    run = run_cli("run", "--models", "random", "--tasks", str(_tiny_task(tmp_path)), "--output", str(out), "--quiet",
                  pythonpath=[tmp_path])
    assert run.returncode == 0, run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plugin_failures"][0]["name"] == "broken_plugin"


def test_strict_plugins_makes_a_load_failure_fatal(tmp_path: Path) -> None:
    fake_distribution(tmp_path, "broken-plugin", "broken_plugin", BROKEN)
    result = run_cli("--strict-plugins", "list", pythonpath=[tmp_path])
    assert result.returncode != 0
    assert "broken_plugin" in result.stderr and "Traceback" not in result.stderr


def test_autoload_can_be_disabled(tmp_path: Path) -> None:
    fake_distribution(tmp_path, "broken-plugin", "broken_plugin", BROKEN)
    result = run_cli("plugins", pythonpath=[tmp_path], env={"MEDMIM_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0 and "broken_plugin" not in result.stdout


def test_duplicate_names_are_rejected_naming_both_plugins(tmp_path: Path) -> None:
    fake_distribution(tmp_path, "impostor", "impostor_plugin", DUPLICATE)
    result = run_cli("plugins", pythonpath=[tmp_path])
    assert "adapter 'random' is registered by both plugin 'medmim_eval.adapters.plugin' and plugin 'impostor_plugin'" in result.stdout
    listing = run_cli("list", "adapters", pythonpath=[tmp_path])
    assert "impostor" not in listing.stdout.split("random", 1)[1].splitlines()[0]  # the built-in stays


def test_misspelled_hook_is_reported(tmp_path: Path) -> None:
    fake_distribution(tmp_path, "typo", "typo_plugin", MISSPELLED)
    result = run_cli("plugins", pythonpath=[tmp_path])
    assert "typo_plugin" in result.stdout and "register_adaptors" in result.stdout


def test_unknown_names_suggest_close_matches() -> None:
    host = create_plugin_host(autoload=False)
    with pytest.raises(UnknownNameError, match="Did you mean 'random'"):
        host.adapters.get("randon")
    from medmim_eval.tasks_api import select_tasks

    with pytest.raises(UnknownNameError, match="Did you mean 'held-out-rad'"):
        select_tasks("held-out-rda", host)


def test_in_process_plugin_registration_and_duplicates() -> None:
    class Extra:
        @hookimpl
        def register_adapters(self, register):  # type: ignore[no-untyped-def]
            register(AdapterEntry(name="extra", description="x", factory=lambda *a: None))
            register(AdapterEntry(name="majority", description="dup", factory=lambda *a: None))

    host = create_plugin_host(autoload=False, extra_plugins=(Extra(),))
    assert "extra" in host.adapters
    assert host.adapters.get("majority").description.startswith("baseline")
    assert any("'majority' is registered by both" in f.error for f in host.failures)
    with pytest.raises(PluginError):
        create_plugin_host(autoload=False, extra_plugins=(Extra(),), strict=True)


def _tiny_task(folder: Path) -> Path:
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8), 128).save(folder / name)
    item = {"id": "t", "images": ["a.png", "b.png"], "source": "T",
            "conversation": [{"role": "user", "content": "<image><image>Same?\nA: yes\nB: no\n"},
                             {"role": "assistant", "content": "A: yes"}]}
    path = folder / "tiny.json"
    path.write_text(json.dumps([item]))
    return path
