"""A sweep's cells: one (model, task) pair each, with its run directory, ``run`` arguments, resources and state."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medmim_eval.adapter import ModelSpec, parse_model_specs
from medmim_eval.errors import MedmimError
from medmim_eval.manifest import read_manifest
from medmim_eval.records import RESULTS_FILE, SAMPLES_FILE, shard_paths
from medmim_eval.sweep.resources import Resources
from medmim_eval.tasks_api import TaskSelection

CELLS_DIR = "cells"
CELL_FILE = "cell.json"  # the cell's `run` arguments, so a rerun with other options is not skipped as done
LOG_FILE = "cell.log"
STARTED_FILE = "cell.started"  # written by the worker: attempt, worker pid, host
MODEL_FILE = "cell-model.yaml"

PENDING, RUNNING, DONE, FAILED, SKIPPED = "pending", "running", "done", "failed", "skipped"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "x"


@dataclass
class Cell:
    """One model on one task: an ordinary run in ``run_dir``."""

    spec: ModelSpec
    task: TaskSelection
    run_dir: Path
    resources: Resources
    total: int  # samples the run will evaluate
    run_args: list[str] = field(default_factory=list)  # `medmim-eval run` arguments, --output included
    state: str = PENDING
    error: str | None = None
    seconds: float | None = None
    host: str | None = None

    @property
    def model(self) -> str:
        return self.spec.model_id

    @property
    def key(self) -> str:
        return f"{self.model} · {self.task.label}"

    @property
    def log(self) -> Path:
        return self.run_dir / LOG_FILE

    def samples_written(self) -> int:
        """Records appended so far (capped at the cell's samples): the live view's progress."""
        count = 0
        for path in [self.run_dir / SAMPLES_FILE, *shard_paths(self.run_dir)]:
            try:
                with path.open("rb") as handle:
                    count += sum(1 for _ in handle)
            except OSError:
                continue
        return min(count, self.total)

    def finished_before(self) -> bool:
        """True when an earlier invocation finished this very cell (same `run` arguments) without errors."""
        try:
            recorded = json.loads((self.run_dir / CELL_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if recorded.get("run_args") != self.run_args or not (self.run_dir / RESULTS_FILE).is_file():
            return False
        try:
            manifest = read_manifest(self.run_dir)
        except MedmimError:
            return False
        return bool(manifest and manifest.invocations and manifest.invocations[-1].status == "finished")

    def write_cell_file(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = {"model": self.model, "spec": str(self.spec), "task": self.task.label,
                "resources": {"gpus": self.resources.gpus, "cpus": self.resources.cpus}, "run_args": self.run_args}
        (self.run_dir / CELL_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def task_argument(task: TaskSelection) -> str:
    """The ``--tasks`` text that selects exactly ``task`` again."""
    if task.path is not None:
        name = str(task.path.resolve())
        return name if task.kinds == TaskSelection(task.name).kinds else f"{name}:{task.kinds[0]}"
    return task.label


def model_arguments(spec: ModelSpec, run_dir: Path) -> list[str]:
    """``--models SPEC``, or ``--models-file`` when the spec text would not read back the same (a comma in a value)."""
    text = str(spec)
    if parse_model_specs(text) == [spec]:
        return ["--models", text]
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    item = {"adapter": spec.adapter, "target": spec.target, "options": dict(spec.options)}
    (run_dir / MODEL_FILE).write_text(yaml.safe_dump([item]), encoding="utf-8")
    return ["--models-file", str(run_dir / MODEL_FILE)]


def make_cells(models: list[tuple[ModelSpec, Resources]], tasks: list[tuple[TaskSelection, int]], sweep_dir: Path,
               passthrough: list[str]) -> list[Cell]:
    """Every (model, task) pair, model by model, each with its own run directory under ``sweep_dir/cells``."""
    cells = []
    for spec, resources in models:
        for task, total in tasks:
            run_dir = (sweep_dir / CELLS_DIR / f"{_slug(spec.model_id)}__{_slug(task.label)}").resolve()
            args = [*model_arguments(spec, run_dir), "--tasks", task_argument(task), "--output", str(run_dir),
                    *passthrough]
            cells.append(Cell(spec, task, run_dir, resources, total, args))
    return cells
