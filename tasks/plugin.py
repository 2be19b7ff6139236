"""Registers the built-in tasks and task groups."""
from __future__ import annotations

from typing import Callable

from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import TaskEntry, TaskGroup
from medmim_eval.tasks.official import OFFICIAL_TASKS


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
            )
        )
    held_in = tuple(t.name for t in OFFICIAL_TASKS if t.group == "Held-in")
    held_out = tuple(t.name for t in OFFICIAL_TASKS if t.group == "Held-out")
    register(TaskGroup("held-in", "the four Med-MIM abilities", held_in))
    register(TaskGroup("held-out", "MIM-RAD and MIM-ODIR", held_out))
    register(TaskGroup("all", "all six Med-MIM benchmark tasks", held_in + held_out))
