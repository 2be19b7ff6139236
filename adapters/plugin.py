"""Registers the baseline adapters (random, majority and the text-only shortcuts of baselines.py)."""
from __future__ import annotations

from typing import Callable

from medmim_eval.adapter_options import AdapterOption
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    register(
        AdapterEntry(
            name="random",
            description="baseline: a seeded uniform choice among the options; empty open answers",
            factory="medmim_eval.adapters.baselines:make_random",
            include_in_all=True,
            example="random,seed=1",
            options=(AdapterOption("seed", "int", default="the run's --seed", help="seed of the draws"),),
        )
    )
    register(
        AdapterEntry(
            name="majority",
            description="baseline: the task's most frequent gold letter; empty open answers",
            factory="medmim_eval.adapters.baselines:make_majority",
            include_in_all=True,
            options=(),
        )
    )
    for name, factory, what in (
        ("longest-option", "make_longest_option", "the option with the most characters"),
        ("shortest-option", "make_shortest_option", "the option with the fewest characters"),
        ("question-overlap", "make_question_overlap", "the option sharing the most words with the question"),
    ):
        register(
            AdapterEntry(
                name=name,
                description=f"text-only shortcut baseline: {what} (ties: earliest letter); empty open answers",
                factory=f"medmim_eval.adapters.baselines:{factory}",
                include_in_all=True,
                options=(),
            )
        )
