"""Per-sample drill-down data for the HTML report: records grouped by model x task, joined to samples.

Records hold no prompt text and no image paths, so each run's tasks are reloaded the way the
runner loads them (task registry + data folders, or the Med-MIM JSON file a ``file:`` task came
from). A task that cannot be reloaded, or whose data changed since the run, is reported; its records
are still shown, without prompts and thumbnails.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medmim_eval.run_reader import RunDirectory
from medmim_eval.schema import Sample, SampleRecord, TaskInfo

if TYPE_CHECKING:
    from medmim_eval.datadir import DataPaths
    from medmim_eval.view_model import RunData
    from medmim_eval.plugins import PluginHost


@dataclass
class RecordGroup:
    """The records of one model on one task of one run (all of them; the report truncates)."""

    run: str
    model: str
    task: str
    records: list[SampleRecord]


@dataclass
class RunSamples:
    """Samples of a run's tasks by sample key, plus one line per task that could not be matched."""

    samples: dict[str, Sample] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def record_groups(run: "RunData") -> list[RecordGroup]:
    """The run's latest record per sample, grouped by (model, task) in file order; shown model names."""
    groups: dict[tuple[str, str], RecordGroup] = {}
    for record in RunDirectory(run.run_dir).records().values():
        model = run.names.get(record.model, record.model)
        key = (model, record.task)
        if key not in groups:
            groups[key] = RecordGroup(run=run.run_dir.name, model=model, task=record.task, records=[])
        groups[key].records.append(record)
    return sorted(groups.values(), key=lambda g: (g.task, g.model))


def _selection(task: TaskInfo, host: "PluginHost") -> object:
    from medmim_eval.errors import UnknownNameError
    from medmim_eval.tasks_api import KINDS, TaskSelection

    kinds = tuple(k for k in KINDS if k in task.kinds) or KINDS
    if task.name.startswith("file:") or task.from_file:
        if not task.files:
            raise UnknownNameError("the manifest names no file for it")
        return TaskSelection(task.name, kinds, path=Path(task.files[0]))
    if task.name not in host.tasks:
        raise UnknownNameError("no such task is registered now (a plugin missing?)")
    return TaskSelection(task.name, kinds)


def load_run_samples(run_dir: Path, tasks: set[str], host: "PluginHost", data: "DataPaths") -> RunSamples:
    """Reload the named tasks of a run (as recorded in its manifest) and index their samples by key."""
    from medmim_eval.datadir import cache_dir
    from medmim_eval.tasks_api import TaskContext, load_selection

    out = RunSamples()
    manifest = RunDirectory(run_dir).manifest()
    if manifest is None:
        out.problems.append(f"{run_dir.name}: no manifest.json, so its tasks cannot be reloaded; "
                            "records are shown without prompts and thumbnails")
        return out
    context = TaskContext(data=data, cache_dir=cache_dir(), seed=manifest.seed)
    for task in manifest.tasks:
        if task.name not in tasks:
            continue
        try:
            loaded = load_selection(_selection(task, host), host, context)  # type: ignore[arg-type]
        except Exception as exc:  # a task that cannot load only costs its prompts and thumbnails
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            out.problems.append(f"{run_dir.name} / {task.name}: task data could not be reloaded ({reason}); "
                                "its records are shown without prompts and thumbnails (try --data-dir)")
            continue
        if task.sha256 and loaded.files and loaded.data_hash() != task.sha256:
            out.problems.append(f"{run_dir.name} / {task.name}: the task data changed since the run; only records "
                                "whose sample key still matches show prompts and thumbnails")
        for sample in loaded.samples:
            out.samples[sample.key] = sample
    return out
