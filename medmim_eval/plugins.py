"""The plugin manager factory: built-in and third-party plugins, each loaded in isolation."""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import pluggy

from medmim_eval import __version__, hookspecs
from medmim_eval.errors import PluginError
from medmim_eval.registry import (
    AdapterEntry,
    BuilderEntry,
    ModelEntry,
    RecipeEntry,
    Registry,
    TaskEntry,
    TaskGroup,
)

ENTRY_POINT_GROUP = "medmim_eval"
DISABLE_AUTOLOAD_ENV = "MEDMIM_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "MEDMIM_BLOCK_PLUGINS"
DEFAULT_PLUGINS: tuple[str, ...] = (
    "medmim_eval.adapters.plugin",
    "medmim_eval.adapters.openai.plugin",
    "medmim_eval.adapters.vllm.plugin",
    "medmim_eval.adapters.hf.plugin",
    "medmim_eval.adapters.hf.internvl.plugin",
    "medmim_eval.adapters.hf.deepseek_vl.plugin",
    "medmim_eval.adapters.hf.med_flamingo.plugin",
    "medmim_eval.tasks.plugin",
    "medmim_eval.dataset_builders.plugin",
    "medmim_eval.training_recipes.plugin",
)
REGISTRATION_HOOKS = (
    "register_adapters",
    "register_tasks",
    "register_dataset_builders",
    "register_training_recipes",
)


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class PluginFailure:
    name: str
    distribution: str | None
    error: str

    def line(self) -> str:
        dist = f" (from {self.distribution})" if self.distribution else ""
        return f"plugin '{self.name}'{dist} failed: {self.error}"


@dataclass
class PluginHost:
    """Everything the plugins registered, plus what failed to load."""

    pm: pluggy.PluginManager
    adapters: Registry[AdapterEntry] = field(default_factory=lambda: Registry("adapter"))
    tasks: Registry[TaskEntry] = field(default_factory=lambda: Registry("task"))
    groups: Registry[TaskGroup] = field(default_factory=lambda: Registry("task group"))
    builders: Registry[BuilderEntry] = field(default_factory=lambda: Registry("dataset builder"))
    recipes: Registry[RecipeEntry] = field(default_factory=lambda: Registry("training recipe"))
    models: Registry[ModelEntry] = field(default_factory=lambda: Registry("model"))
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    def add_commands(self, cli: Any) -> None:
        """Let each plugin add CLI commands; a failing plugin is reported, not fatal."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as exc:  # a plugin's bug must not break the CLI
                self.report_failure(impl.plugin_name, f"register_commands raised {_one_line(exc)}")

    def report_load_failure(self, name: str, dist: str | None, error: str) -> None:
        self.failures.append(PluginFailure(name=name, distribution=dist, error=error))

    def report_failure(self, name: str, error: str) -> None:
        info = self.plugins.get(name)
        self.report_load_failure(name, info.distribution if info else None, error)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def create_plugin_host(
    *,
    strict: bool = False,
    autoload: bool | None = None,
    extra_plugins: tuple[object, ...] = (),
) -> PluginHost:
    """Build a fresh plugin manager and fill the registries.

    Args:
        strict: raise ``PluginError`` on the first plugin that fails to load or register.
        autoload: load third-party entry points; ``None`` means "unless ``MEDMIM_DISABLE_PLUGIN_AUTOLOAD``
            is set".
        extra_plugins: plugin objects (modules or instances) to register after the built-ins, as
            tests do.
    """
    if autoload is None:
        autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm=pm)

    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        _register(host, module, module_name, None, None, builtin=True)
    if autoload:
        blocked = {b.strip() for b in os.environ.get(BLOCK_ENV, "").split(",") if b.strip()}
        for ep in _entry_points():
            if ep.name in blocked or ep.name in host.plugins:
                continue
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 - isolate any import-time failure
                if isinstance(exc, KeyboardInterrupt):
                    raise
                host.report_load_failure(ep.name, dist, f"import of '{ep.value}' raised {_one_line(exc)}")
                continue
            _register(host, obj, ep.name, dist, version, builtin=False)
    for index, obj in enumerate(extra_plugins):
        name = getattr(obj, "__name__", None) or f"{type(obj).__name__}-{index}"
        _register(host, obj, name, None, None, builtin=False)

    _collect(host)
    if strict and host.failures:
        raise PluginError("; ".join(f.line() for f in host.failures) + " (--strict-plugins)")
    return host


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _register(
    host: PluginHost,
    obj: object,
    name: str,
    dist: str | None,
    version: str | None,
    *,
    builtin: bool,
) -> None:
    try:
        host.pm.register(obj, name=name)
        host.pm.check_pending()
    except Exception as exc:  # pluggy's validation errors: wrong hook names or arguments
        if host.pm.is_registered(obj):
            host.pm.unregister(obj)
        host.report_load_failure(name, dist, f"invalid hooks: {_one_line(exc)}")
        return
    hooks = sorted(
        hc.name for hc in host.pm.get_hookcallers(obj) or [] if not hc.name.startswith("_")
    )
    host.plugins[name] = PluginInfo(
        name=name,
        distribution=dist or ("medmim-eval" if builtin else None),
        version=version or (__version__ if builtin else _module_version(obj)),
        builtin=builtin,
        hooks=hooks,
    )


def _module_version(obj: object) -> str | None:
    if isinstance(obj, ModuleType):
        return getattr(obj, "__version__", None)
    return None


def _collect(host: PluginHost) -> None:
    """Call each registration hook plugin by plugin, so one failure stays with its plugin."""
    for hook_name in REGISTRATION_HOOKS:
        caller = getattr(host.pm.hook, hook_name)
        # get_hookimpls() lists implementations in registration order: built-ins come first and
        # keep their names when a later plugin registers a duplicate.
        for impl in caller.get_hookimpls():
            plugin = impl.plugin_name
            register = _make_register(host, plugin, hook_name)
            try:
                impl.function(register=register)
            except Exception as exc:
                host.report_failure(plugin, f"{hook_name} raised {_one_line(exc)}")


def _make_register(host: PluginHost, plugin: str, hook_name: str) -> Callable[[object], None]:
    def register(entry: object) -> None:
        registry, kind = _registry_for(host, entry)
        if registry is None:
            raise PluginError(f"{hook_name} got {type(entry).__name__}, not a registry entry")
        try:
            registry.add(entry.name, entry, plugin)  # type: ignore[attr-defined]
        except PluginError as exc:
            # A duplicate name is rejected; the first registration stays.
            host.report_failure(plugin, str(exc))
            return
        info = host.plugins.get(plugin)
        if info is not None:
            info.registered.setdefault(kind, []).append(entry.name)  # type: ignore[attr-defined]

    return register


def _registry_for(host: PluginHost, entry: object) -> tuple[Registry[Any] | None, str]:
    if isinstance(entry, AdapterEntry):
        return host.adapters, "adapters"
    if isinstance(entry, ModelEntry):
        return host.models, "models"
    if isinstance(entry, TaskEntry):
        return host.tasks, "tasks"
    if isinstance(entry, TaskGroup):
        return host.groups, "task groups"
    if isinstance(entry, BuilderEntry):
        return host.builders, "builders"
    if isinstance(entry, RecipeEntry):
        return host.recipes, "recipes"
    return None, ""
