"""Task selection and loading: names, groups, ``:closed``/``:open`` suffixes, ``@CONTROL`` variants
(see :mod:`medmim_eval.controls`) and JSON paths."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmim_eval.controls import SEPARATOR, apply_control, split_control
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
    control: dict[str, Any] | None = None  # the control's definition, for the manifest

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

    @property
    def base(self) -> str:
        """The standard task this selection is (or is a control of)."""
        return split_control(self.name)[0]

    @property
    def control(self) -> str | None:
        return split_control(self.name)[1]


def select_tasks(spec: str, host: "PluginHost") -> list[TaskSelection]:
    """Expand ``TASK[@CONTROL][:closed|:open][,...]`` with groups and JSON paths into selections.

    A control applies to every member of a group (``held-out@blind``); ``TASK:closed@blind`` is
    read like ``TASK@blind:closed``.

    Raises:
        UnknownNameError: with close matches, for a name that is no task, group or file.
    """
    selections: dict[str, TaskSelection] = {}
    for raw in (s.strip() for s in spec.split(",")):
        if not raw:
            continue
        name, kinds = _split_kind(raw)
        name, control = split_control(name)
        suffix = f"{SEPARATOR}{control}" if control else ""
        if name.endswith(".json"):
            path = Path(name).expanduser()
            if not path.is_file():
                raise UnknownNameError(f"task file '{name}' does not exist")
            task_name = f"file:{path.stem}{suffix}"
            _merge(selections, TaskSelection(task_name, kinds, path=path.resolve()))
        elif name in host.groups:
            for member in host.groups.get(name).members:
                _merge(selections, TaskSelection(member + suffix, kinds))
        elif name in host.tasks:
            _merge(selections, TaskSelection(name + suffix, kinds))
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
        head, sep, control = raw.rpartition(SEPARATOR)
        if sep and head.endswith(f":{kind}"):  # TASK:closed@CONTROL
            return f"{head[: -len(kind) - 1]}{SEPARATOR}{control}", (kind,)
    return raw, KINDS


def _merge(selections: dict[str, TaskSelection], new: TaskSelection) -> None:
    old = selections.get(new.name)
    if old is None:
        selections[new.name] = new
    else:
        kinds = tuple(k for k in KINDS if k in old.kinds or k in new.kinds)
        selections[new.name] = TaskSelection(new.name, kinds, path=new.path or old.path)


def load_selection(selection: TaskSelection, host: "PluginHost", context: TaskContext) -> LoadedTask:
    """Load one selected task, keep the samples of the selected kinds and apply its control."""
    base = selection.base
    if selection.path is not None:
        from medmim_eval.medmim_format import load_medmim_file

        folder = selection.path.parent
        samples = load_medmim_file(selection.path, task=base, ability="custom", image_root=lambda _tag: folder)
        loaded = LoadedTask(base, samples, [selection.path])
    else:
        entry: TaskEntry = host.tasks.get(base)
        loaded = entry.load_loader()(context)
        if not isinstance(loaded, LoadedTask):
            raise TypeError(f"task '{base}' loader returned {type(loaded).__name__}, not LoadedTask")
    everything = loaded.samples
    loaded.samples = [s for s in everything if s.kind in selection.kinds]
    control = selection.control
    if control is not None:
        loaded.samples, loaded.control = apply_control(loaded.samples, control, seed=context.seed,
                                                       cache_dir=context.cache_dir, colour_from=everything)
        loaded.name = selection.name
    return loaded


def task_placement(name: str, host: "PluginHost") -> tuple[str, str, str]:
    """(table, group, column) where the leaderboard shows a task (a control: its task's place, ``@CONTROL`` added)."""
    base, control = name.rpartition(SEPARATOR)[0::2] if SEPARATOR in name else (name, "")
    if control and base in host.tasks:
        table, group, column = task_placement(base, host)
        return table, group, f"{column}{SEPARATOR}{control}"
    if name in host.tasks:
        entry = host.tasks.get(name)
        return entry.table, entry.group, entry.column or name
    return "Other tasks", "", name
