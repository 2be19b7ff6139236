"""Registers the built-in tasks and task groups."""
from __future__ import annotations

from typing import Callable

from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import TaskData, TaskEntry, TaskGroup
from medmim_eval.tasks.official import OFFICIAL_TASKS, SOURCE_ACCESS

# The synthetic suite's names, kept here so registering does not import its generator (PIL).
SYNTH_TASKS: tuple[tuple[str, str, str, str], ...] = (
    # (task name, ability, column, loader in medmim_eval.tasks.synth)
    ("synth-temporal", "temporal", "Temporal", "load_temporal"),
    ("synth-reasoning", "reasoning", "Reasoning", "load_reasoning"),
    ("synth-comparison", "comparison", "Comparison", "load_comparison"),
    ("synth-coreference", "co-reference", "Co-reference", "load_coreference"),
)


@hookimpl
def register_tasks(register: Callable[[object], None]) -> None:
    for task in OFFICIAL_TASKS:
        register(
            TaskEntry(
                name=task.name,
                description=f"Med-MIM {task.group.lower()} {task.column} ({task.file})",
                loader=task.load,
                ability=task.ability,
                table="Med-MIM",
                group=task.group,
                column=task.column,
                data=TaskData(file=task.path, builder=task.builder or "",
                              access=tuple((f, SOURCE_ACCESS[f]) for f in ("med-mim", *task.source_folders))),
            )
        )
    held_in = tuple(t.name for t in OFFICIAL_TASKS if t.group == "Held-in")
    held_out = tuple(t.name for t in OFFICIAL_TASKS if t.group == "Held-out")
    register(TaskGroup("held-in", "the four Med-MIM abilities", held_in))
    register(TaskGroup("held-out", "MIM-RAD and MIM-ODIR", held_out))
    register(TaskGroup("all", "all six Med-MIM benchmark tasks", held_in + held_out))
    for name, ability, column, loader in SYNTH_TASKS:
        register(
            TaskEntry(
                name=name,
                description=f"Synthetic {column.lower()} (bundled, generated on first use; no download)",
                loader=f"medmim_eval.tasks.synth:{loader}",
                ability=ability,
                table="Synthetic",
                group="Synthetic",
                column=column,
                generated=True,
            )
        )
    register(TaskGroup("synth", "the bundled synthetic suite (four abilities, no download)", tuple(t[0] for t in SYNTH_TASKS)))
