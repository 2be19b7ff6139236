"""Meta-tests in datasette's style: every hook in hookspecs.py is implemented by a built-in plugin or
the test plugin and called by the real machinery; every hook, with its parameters, and every field
of every registry entry is documented in docs/plugins.md."""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import click
import pluggy
import pytest

from medmim_eval import adapter, hookspecs, registry
from medmim_eval.plugins import DEFAULT_PLUGINS, create_plugin_host

DOC = Path(__file__).parent.parent / "docs" / "plugins.md"
HOOKS = sorted(n for n in dir(hookspecs) if pluggy.PluginManager(hookspecs.PROJECT).parse_hookspec_opts(hookspecs, n))
ENTRIES = (registry.AdapterEntry, registry.ModelEntry, registry.TaskEntry, registry.TaskGroup, registry.BuilderEntry,
           registry.RecipeEntry, adapter.Capabilities)
MARK = f"{hookspecs.PROJECT}_impl"  # the attribute pluggy's HookimplMarker sets


def test_the_hook_list_is_read_from_the_specs() -> None:
    assert "register_adapters" in HOOKS and "register_commands" in HOOKS and "hookimpl" not in HOOKS


@pytest.fixture
def test_plugin(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The test plugin package's module (tests/plugin_package), as installed."""
    monkeypatch.syspath_prepend(str(plugin_site))
    module = importlib.import_module("medmim_test_plugin")
    yield module
    sys.modules.pop("medmim_test_plugin", None)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_and_exercised(hook: str, test_plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some built-in plugin or the test plugin implements ``hook``, and building the plugin host (plus
    the CLI's step that adds plugin commands) really calls every such implementation."""
    called: list[str] = []
    implementers = []
    for module in [importlib.import_module(name) for name in DEFAULT_PLUGINS] + [test_plugin]:
        function = getattr(module, hook, None)
        if function is None or not hasattr(function, MARK):
            continue
        implementers.append(module.__name__)

        @functools.wraps(function)  # keeps the hookimpl marker and the signature pluggy checks
        def spy(*args: Any, __name: str = module.__name__, __function: Any = function, **kwargs: Any) -> Any:
            called.append(__name)
            return __function(*args, **kwargs)

        monkeypatch.setattr(module, hook, spy)
    assert implementers, f"no built-in plugin and not the test plugin implements {hook}; add one"
    host = create_plugin_host(autoload=False, extra_plugins=(test_plugin,))
    host.add_commands(click.Group("plugin-commands"))  # what medmim_eval.cli.LazyGroup does
    assert not [f for f in host.failures if hook in f.error]
    assert sorted(set(called)) == sorted(implementers), f"{hook}: implemented but never called"


# --- docs/plugins.md --------------------------------------------------------------------------------

def _doc() -> str:
    assert DOC.is_file(), f"{DOC} is missing"
    return DOC.read_text(encoding="utf-8")


def _section(text: str, title: str) -> str:
    """The text under the heading that starts with ``title``, up to the next heading of its level or above."""
    match = re.search(rf"^(#+) `?{re.escape(title)}\b.*$", text, re.MULTILINE)
    assert match, f"docs/plugins.md has no heading for {title}"
    level = len(match.group(1))
    rest = text[match.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    """A heading ``### hook(param, ...)`` with exactly the spec's parameters, and some text under it."""
    expected = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    headings = re.findall(rf"^#+ `?{hook}\(([^)]*)\)`?\s*$", _doc(), re.MULTILINE)
    assert headings, f"docs/plugins.md has no heading '### {hook}({', '.join(expected)})'"
    documented = [p.strip() for p in headings[0].split(",") if p.strip()]
    assert documented == expected, f"{hook}: docs say ({', '.join(documented)}), hookspecs.py says ({', '.join(expected)})"
    assert len(_section(_doc(), f"{hook}(").split()) >= 20, f"{hook}: say what it is for and when it is called"


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.__name__)
def test_every_entry_field_is_documented(entry: type) -> None:
    section = _section(_doc(), entry.__name__)
    missing = [f.name for f in dataclasses.fields(entry) if f"`{f.name}`" not in section]
    assert not missing, f"docs/plugins.md, section {entry.__name__}: fields not described: {', '.join(missing)}"


def test_every_adapter_protocol_member_is_documented() -> None:
    section = _section(_doc(), "The adapter")
    members = [m for m in adapter.ModelAdapter.__dict__ if not m.startswith("_")]
    members += list(adapter.ModelAdapter.__annotations__)
    members += ["prepare", "cost_usd", "sent"]  # the optional parts the runner looks for
    missing = sorted({m for m in members if f"`{m}" not in section})
    assert not missing, f"docs/plugins.md, 'The adapter': members not described: {', '.join(missing)}"
