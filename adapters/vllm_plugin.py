"""Registers the vllm adapters and the paper models they serve (filled in by issue 4)."""
from __future__ import annotations

from typing import Callable

from medmim_eval.hookspecs import hookimpl


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    """Nothing registered yet."""
