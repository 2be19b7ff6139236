"""Registers the built-in training recipes (none yet: issue 7 adds them)."""
from __future__ import annotations

from typing import Callable

from medmim_eval.hookspecs import hookimpl


@hookimpl
def register_training_recipes(register: Callable[[object], None]) -> None:
    """No built-in recipe is registered yet."""
