"""Task selection and loading: names, groups, ``:closed``/``:open`` suffixes, ``@CONTROL`` variants
(see :mod:`medmim_eval.controls`) and JSON paths."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from medmim_eval.controls import SEPARATOR, apply_control, split_control

CIRCULAR = "circular"  # medmim_eval.circular.CIRCULAR, without importing it for every task load
from medmim_eval.datadir import DataPaths
from medmim_eval.errors import MedmimError, UnknownNameError
from medmim_eval.registry import TaskEntry, unknown_name_message
from medmim_eval.schema import Kind, Sample, content_hash

if TYPE_CHECKING:
    from medmim_eval.plugins import PluginHost

KINDS: tuple[Kind, ...] = ("closed", "open")


@dataclass(frozen=True)
class TaskContext:
    """What a task loader may use: the data folders, the cache dir and the run's seed.

    ``split`` is ``"test"`` for evaluation; a task that also has training data (the synthetic
    suite) loads it for ``"train"``. ``options`` are loader-specific settings a caller other than
    the run may pass (e.g. a training recipe asking for a bigger generated split); runs pass none.
    """

    data: DataPaths
    cache_dir: Path
    seed: int = 0
    split: str = "test"
    options: Mapping[str, Any] = field(default_factory=dict)


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


def select_tasks(spec: str, host: "PluginHost", *, as_task: str | None = None) -> list[TaskSelection]:
    """Expand ``TASK[@CONTROL][:closed|:open][,...]`` with groups and JSON paths into selections.

    A control applies to every member of a group (``held-out@blind``); ``TASK:closed@blind`` is
    read like ``TASK@blind:closed``.

    A JSON file is the task ``file:<stem>``, unless it stands for a benchmark task: named by
    ``as_task`` (``run --as``), or declared by the dataset card beside it (a builder's
    ``stands_for``). Then it takes that task's name, so views show it in that task's column.

    Raises:
        UnknownNameError: with close matches, for a name that is no task, group or file.
        MedmimError: for ``as_task`` without exactly one JSON file, or a file standing for a task
            that is selected too.
    """
    files = [name for name, _ in map(_split_kind, (s.strip() for s in spec.split(","))) if name.endswith(".json")]
    if as_task is not None:
        if as_task not in host.tasks:
            raise UnknownNameError(unknown_name_message("task for --as", as_task, host.tasks.names()))
        if len(files) != 1:
            raise MedmimError(f"--as {as_task} names the task of one Med-MIM JSON file in --tasks; "
                              f"found {len(files)} file(s)")
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
            task_name = (as_task or _declared_task(path, host) or f"file:{path.stem}") + suffix
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


def _declared_task(path: Path, host: "PluginHost") -> str | None:
    """The registered task a built file stands for, per the dataset card beside it, or None."""
    from medmim_eval.builders_api import CARD_JSON

    card = path.parent / CARD_JSON
    if not card.is_file():
        return None
    try:
        declared = json.loads(card.read_text(encoding="utf-8")).get("stands_for") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None  # a card is documentation; an unreadable one changes nothing
    task = declared.get(path.stem) if isinstance(declared, dict) else None
    return task if isinstance(task, str) and task in host.tasks else None


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
    if old is not None and old.path != new.path:
        what = " and ".join(str(p) if p else f"the registered task {new.name}" for p in (old.path, new.path))
        raise MedmimError(f"two tasks would both be named '{new.name}': {what}; run them into separate "
                          "run directories")
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
        ability = host.tasks.get(base).ability if base in host.tasks else "custom"
        samples = load_medmim_file(selection.path, task=base, ability=ability or "custom",
                                   image_root=lambda _tag: folder)
        loaded = LoadedTask(base, samples, [selection.path])
    else:
        entry: TaskEntry = host.tasks.get(base)
        loaded = entry.load_loader()(context)
        if not isinstance(loaded, LoadedTask):
            raise TypeError(f"task '{base}' loader returned {type(loaded).__name__}, not LoadedTask")
    everything = loaded.samples
    loaded.samples = [s for s in everything if s.kind in selection.kinds]
    control = selection.control
    if control == CIRCULAR:
        from medmim_eval.circular import apply_circular

        loaded.samples, loaded.control = apply_circular(loaded.samples)
        loaded.name = selection.name
    elif control is not None:
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
