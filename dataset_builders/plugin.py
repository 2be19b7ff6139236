"""Registers the built-in dataset builders (issue 6 adds the raw-dataset builders)."""
from __future__ import annotations

from typing import Callable

from medmim_eval.hookspecs import hookimpl


@hookimpl
def register_dataset_builders(register: Callable[[object], None]) -> None:
    """No built-in builder is registered yet."""
