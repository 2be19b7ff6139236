"""Hook specifications: the extension points a plugin implements.

Every registration hook receives a ``register`` callback. Calling it attaches the plugin's name to
what it registers, so duplicates can be rejected with both plugins named.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    import click

PROJECT = "medmim_eval"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_adapters(register: Callable[..., None]) -> None:
    """Register model adapters, ``register(AdapterEntry(...))``, and named models with their routes,
    ``register(ModelEntry(...))``. Called once per plugin manager."""


@hookspec
def register_tasks(register: Callable[..., None]) -> None:
    """Register tasks and task groups: ``register(TaskEntry(...))`` or ``register(TaskGroup(...))``."""


@hookspec
def register_dataset_builders(register: Callable[..., None]) -> None:
    """Register dataset builders: ``register(BuilderEntry(...))``."""


@hookspec
def register_training_recipes(register: Callable[..., None]) -> None:
    """Register training recipes: ``register(RecipeEntry(...))``."""


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add extra commands to the ``medmim-eval`` command group."""
