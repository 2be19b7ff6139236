"""Task selection and loading: names, groups, ``:closed``/``:open`` suffixes and JSON paths."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medmim_eval.datadir import DataPaths
from medmim_eval.errors import UnknownNameError
from medmim_eval.registry import TaskEntry, unknown_name_message
from medmim_eval.schema import Kind, Sample, content_hash

if TYPE_CHECKING:
    from medmim_eval.plugins import PluginHost

KINDS: tuple[Kind, ...] = ("closed", "open")


@dataclass(frozen=True)
class TaskContext:
    """What a task loader may use: the data folders, the cache dir and the run's seed."""

    data: DataPaths
    cache_dir: Path
    seed: int = 0


@dataclass
class LoadedTask:
    """A task's samples plus the files they came from (hashed into the manifest)."""

    name: str
    samples: list[Sample]
    files: list[Path] = field(default_factory=list)

    def data_hash(self) -> str:
        digest = "".join(content_hash(p.read_bytes()) for p in self.files if p.is_file())
        return content_hash(digest or "".join(s.key for s in self.samples))


@dataclass(frozen=True)
class TaskSelection:
    """One task to run, possibly restricted to one kind of question."""

    name: str
    kinds: tuple[Kind, ...] = KINDS
    path: Path | None = None  # a Med-MIM JSON file given directly

    @property
    def label(self) -> str:
        return self.name if self.kinds == KINDS else f"{self.name}:{self.kinds[0]}"


def select_tasks(spec: str, host: "PluginHost") -> list[TaskSelection]:
    """Expand ``TASK[:closed|:open][,...]`` with groups and JSON paths into selections.

    Raises:
        UnknownNameError: with close matches, for a name that is no task, group or file.
    """
    selections: dict[str, TaskSelection] = {}
    for raw in (s.strip() for s in spec.split(",")):
        if not raw:
            continue
        name, kinds = _split_kind(raw)
        if name.endswith(".json"):
            path = Path(name).expanduser()
            if not path.is_file():
                raise UnknownNameError(f"task file '{name}' does not exist")
            task_name = f"file:{path.stem}"
            _merge(selections, TaskSelection(task_name, kinds, path=path.resolve()))
        elif name in host.groups:
            for member in host.groups.get(name).members:
                _merge(selections, TaskSelection(member, kinds))
        elif name in host.tasks:
            _merge(selections, TaskSelection(name, kinds))
        else:
            known = host.tasks.names() + host.groups.names()
            raise UnknownNameError(unknown_name_message("task", name, known))
    if not selections:
        raise UnknownNameError("no task given; `medmim-eval list tasks` shows them")
    return list(selections.values())


def _split_kind(raw: str) -> tuple[str, tuple[Kind, ...]]:
    for kind in KINDS:
        if raw.endswith(f":{kind}"):
            return raw[: -len(kind) - 1], (kind,)
    return raw, KINDS


def _merge(selections: dict[str, TaskSelection], new: TaskSelection) -> None:
    old = selections.get(new.name)
    if old is None:
        selections[new.name] = new
    else:
        kinds = tuple(k for k in KINDS if k in old.kinds or k in new.kinds)
        selections[new.name] = TaskSelection(new.name, kinds, path=new.path or old.path)


def load_selection(selection: TaskSelection, host: "PluginHost", context: TaskContext) -> LoadedTask:
    """Load one selected task and keep the samples of the selected kinds."""
    if selection.path is not None:
        from medmim_eval.medmim_format import load_medmim_file

        folder = selection.path.parent
        samples = load_medmim_file(selection.path, task=selection.name, ability="custom", image_root=lambda _tag: folder)
        loaded = LoadedTask(selection.name, samples, [selection.path])
    else:
        entry: TaskEntry = host.tasks.get(selection.name)
        loaded = entry.load_loader()(context)
        if not isinstance(loaded, LoadedTask):
            raise TypeError(f"task '{selection.name}' loader returned {type(loaded).__name__}, not LoadedTask")
    loaded.samples = [s for s in loaded.samples if s.kind in selection.kinds]
    return loaded


def task_placement(name: str, host: "PluginHost") -> tuple[str, str, str]:
    """(table, group, column) where the leaderboard shows a task."""
    if name in host.tasks:
        entry = host.tasks.get(name)
        return entry.table, entry.group, entry.column or name
    return "Other tasks", "", name
