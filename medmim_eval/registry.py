"""Registries of named things (adapters, tasks, builders, recipes) filled by plugins."""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from medmim_eval.adapter_options import AdapterOption, options_problem
from medmim_eval.errors import PluginError, UnknownNameError


@dataclass(frozen=True)
class AdapterEntry:
    """A model adapter, registered as a lazy factory so registering imports no backend.

    ``factory`` is a callable or an ``"module:attribute"`` path; it is called as
    ``factory(target, options, context)`` and returns a ``ModelAdapter``.
    """

    name: str
    description: str
    factory: str | Callable[..., Any]
    extras: tuple[str, ...] = ()
    target: str = "none"  # "none", "optional" or "required"
    include_in_all: bool = False
    example: str = ""
    check: str | Callable[..., Any] | None = None
    remote: str | Callable[..., Any] | None = None
    gpus: int | str | Callable[..., Any] = 0
    options: tuple[AdapterOption, ...] | None = None

    def option_problem(self, options: dict[str, str]) -> str | None:
        """Why ``options`` do not fit the declared ``options`` (one line naming the fix), or None;
        None too for an adapter that declares none (it validates its own in ``check``)."""
        if self.options is None:
            return None
        return options_problem(self.name, self.options, options)

    def gpus_needed(self, target: str | None, options: dict[str, str]) -> int:
        """GPUs one instance of ``target`` takes (0 for baselines and API models); a sweep reserves them per cell.

        ``gpus`` is an int, or a callable or ``"module:attribute"`` called as ``gpus(target, options)``
        (e.g. a vLLM engine's ``tp`` x ``dp``); like ``check`` it must be cheap and import no backend.
        """
        if isinstance(self.gpus, int):
            return self.gpus
        return int(resolve_callable(self.gpus)(target, options))

    def remote_host(self, target: str | None, options: dict[str, str]) -> str | None:
        """The host outside this machine that prompts (and images) would go to, or None if local.

        ``remote`` is a callable or ``"module:attribute"`` called as ``remote(target, options)``.
        """
        if self.remote is None:
            return None
        return resolve_callable(self.remote)(target, options)

    def load_factory(self) -> Callable[..., Any]:
        return resolve_callable(self.factory)

    def missing_prerequisite(self, target: str | None, options: dict[str, str]) -> str | None:
        """Why this adapter cannot run ``target`` here (a missing backend, key or weights), or None.

        ``check`` is a callable or ``"module:attribute"`` called as ``check(target, options)``; it must
        be cheap and import no heavy backend (use ``importlib.util.find_spec``).
        """
        if self.check is None:
            return None
        return resolve_callable(self.check)(target, options)


@dataclass(frozen=True)
class ModelEntry:
    """A named model (a paper model or a local checkpoint) with its routes, best first.

    Each route is a model spec template, ``ADAPTER[:TARGET][,key=value...]``, in which ``{weights}``
    becomes the model's local weights folder (see :mod:`medmim_eval.weights`). ``--models NAME``
    runs the first route whose prerequisites are met; ``--models all`` runs every entry with
    ``paper=True`` that has one and lists the others with the reason.
    """

    name: str
    description: str
    routes: tuple[str, ...]
    weights: str | None = None  # hub id or folder name the weights are known by
    paper: bool = True


@dataclass(frozen=True)
class TaskData:
    """Where a task's data comes from, for ``medmim-eval data status``.

    ``file`` (a callable or ``"module:attribute"``) is called as ``file(context)`` and returns the
    Med-MIM JSON file the loader reads; ``builder`` names the ``data build`` builder(s) that make
    what its images come from; ``access`` pairs a data folder (as named in the data directory,
    e.g. ``vqa-rad``) with where to obtain it.
    """

    file: str | Callable[..., Any]
    builder: str = ""
    access: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TaskEntry:
    """A task: ``loader(context)`` returns a ``LoadedTask``. ``table``/``column`` place it in views.

    ``data`` tells ``data status`` where the task's file and images come from; without it, status
    calls the loader to find out, unless ``generated`` says the loader makes its data itself on
    first use (nothing to download, nothing to check).
    """

    name: str
    description: str
    loader: str | Callable[..., Any]
    ability: str = ""
    table: str = "Other tasks"
    column: str = ""
    group: str = ""
    data: TaskData | None = None
    generated: bool = False

    def load_loader(self) -> Callable[..., Any]:
        return resolve_callable(self.loader)


@dataclass(frozen=True)
class TaskGroup:
    name: str
    description: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class BuilderEntry:
    """A dataset builder: ``builder(options: BuildOptions, writer: DatasetWriter)`` (see builders_api).

    ``version`` changes whenever the same input and seed would give a different output.
    """

    name: str
    description: str
    builder: str | Callable[..., Any]
    version: str = "1"
    source_help: str = ""

    def load_builder(self) -> Callable[..., Any]:
        return resolve_callable(self.builder)


@dataclass(frozen=True)
class RecipeEntry:
    """A training recipe: ``recipe(request)`` trains and returns a summary dict (see training_recipes).

    ``needs`` names the ``train`` arguments the recipe requires (``data``, ``base``); ``version``
    changes whenever the same inputs would train a different model; ``options`` maps each
    recipe-specific ``key=value`` override to its help line. ``recipe`` follows
    :class:`medmim_eval.recipes_api.TrainingRecipe`.

    ``option_help`` (a callable or ``"module:attribute"``, called with no arguments) returns
    ``(key, help line, default)`` for every ``key=value`` override; ``train --options`` lists them.
    ``configs`` is ``"package:folder"`` holding shipped accelerate configs (``NAME.yaml``) that
    ``train --config NAME`` prints the path of.
    """

    name: str
    description: str
    recipe: str | Callable[..., Any]
    needs: tuple[str, ...] = ("data", "base")
    version: str = "1"
    options: tuple[tuple[str, str], ...] = ()
    option_help: str | Callable[[], Any] | None = None
    configs: str = ""

    def load_recipe(self) -> Callable[..., Any]:
        return resolve_callable(self.recipe)


def resolve_callable(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"module:attr"`` lazily; pass callables through."""
    if callable(ref):
        return ref
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


T = TypeVar("T")


@dataclass
class Registry(Generic[T]):
    """Name -> entry, remembering which plugin registered each name."""

    kind: str
    entries: dict[str, T] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, entry: T, plugin: str) -> None:
        if name in self.entries:
            raise PluginError(
                f"{self.kind} '{name}' is registered by both plugin '{self.owners[name]}' and "
                f"plugin '{plugin}'; uninstall or disable one of them"
            )
        self.entries[name] = entry
        self.owners[name] = plugin

    def get(self, name: str) -> T:
        try:
            return self.entries[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, list(self.entries))) from None

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries))

    def names(self) -> list[str]:
        return sorted(self.entries)

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(n for n, p in self.owners.items() if p == plugin)


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(sorted(known)) or "none registered"
    return f"unknown {kind} '{name}'.{hint} Available: {listing}"
