"""Registers ``med-flamingo`` (Med-Flamingo-9B), run in-process.

Imported by every command, so it stays light. Weights layout, options and installation:
:mod:`medmim_eval.adapters.hf.med_flamingo.parts`.
"""
from __future__ import annotations

from typing import Callable

from medmim_eval.adapters.hf.med_flamingo.parts import OPTIONS, check_med_flamingo
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    register(
        AdapterEntry(
            name="med-flamingo",
            description="Med-Flamingo-9B: open_flamingo + a local LLaMA-7B + the Med-Flamingo checkpoint, in-process",
            factory="medmim_eval.adapters.hf.med_flamingo.adapter:make_med_flamingo",
            extras=(),
            target="required",
            example="med-flamingo:/models/med-flamingo-9b  (llama-7b/ and model.pt inside)",
            check=check_med_flamingo,
            options=OPTIONS,
            gpus="medmim_eval.adapters.hf.placement_options:placement_gpus",
        )
    )
