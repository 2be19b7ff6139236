"""Runs a sweep: plans the cells, skips finished ones, hands the rest to an executor, follows them and
merges what finished into one leaderboard, one sweep manifest (``sweep.json``) and the HTML report."""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmim_eval.adapter import ModelSpec
from medmim_eval.datadir import DataPaths, cache_dir
from medmim_eval.errors import MedmimError
from medmim_eval.manifest import now
from medmim_eval.plugins import PluginHost
from medmim_eval.records import RESULTS_FILE
from medmim_eval.sweep.cell_job import CellJob, forwarded_env
from medmim_eval.sweep.cells import DONE, FAILED, PENDING, RUNNING, SKIPPED, STARTED_FILE, Cell, make_cells
from medmim_eval.sweep.executors import Executor, ExecutorSpec, Handle, make_executor
from medmim_eval.sweep.resources import cell_resources
from medmim_eval.sweep.view import SweepCounts, SweepView

SWEEP_FILE = "sweep.json"
LEADERBOARD_FILE = "leaderboard.md"
REPORT_FILE = "report.html"


@dataclass
class SweepSettings:
    specs: list[ModelSpec]
    tasks_text: str
    sweep_dir: Path
    executor: ExecutorSpec
    data: DataPaths
    passthrough: list[str] = field(default_factory=list)  # `run` options every cell gets
    limit: int | None = None
    seed: int = 0
    cpus_per_cell: int = 1
    gpu_overrides: dict[str, int] = field(default_factory=dict)
    view: str = "plain"
    argv: list[str] = field(default_factory=list)
    poll_s: float = 0.5


@dataclass
class SweepSummary:
    sweep_dir: Path
    cells: list[Cell]
    unavailable: list[tuple[str, str]]
    notes: list[str]
    status: str = "finished"

    def count(self, *states: str) -> int:
        return sum(1 for c in self.cells if c.state in states)

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if c.state == FAILED]


def _count_samples(samples: list[Any], limit: int | None) -> int:
    if limit is None:
        return len(samples)
    per_kind: dict[str, int] = {}
    for sample in samples:
        per_kind[sample.kind] = per_kind.get(sample.kind, 0) + 1
    return sum(min(n, limit) for n in per_kind.values())


def plan(settings: SweepSettings, host: PluginHost) -> tuple[list[Cell], list[tuple[str, str]]]:
    """The cells, after every model and task is checked here (a bad name or file fails before any cell runs)."""
    from medmim_eval.run_setup import resolve_models
    from medmim_eval.tasks_api import TaskContext, load_selection, select_tasks

    models, unavailable = resolve_models(settings.specs, host)
    selections = select_tasks(settings.tasks_text, host)
    context = TaskContext(data=settings.data, cache_dir=cache_dir(), seed=settings.seed)
    tasks = [(s, _count_samples(load_selection(s, host, context).samples, settings.limit)) for s in selections]
    with_resources = [(spec, cell_resources(spec, entry, cpus=settings.cpus_per_cell,
                                            gpu_overrides=settings.gpu_overrides)) for spec, entry in models]
    unknown = sorted(set(settings.gpu_overrides) - {spec.model_id for spec, _ in models})
    if unknown:
        raise MedmimError(f"--gpus names model(s) not in this sweep: {', '.join(unknown)}; "
                          f"the models are {', '.join(spec.model_id for spec, _ in models)}")
    cells = make_cells(with_resources, tasks, settings.sweep_dir, settings.passthrough)
    seen: dict[Path, str] = {}
    for cell in cells:
        if cell.run_dir in seen:
            raise MedmimError(f"cells '{seen[cell.run_dir]}' and '{cell.key}' would share the run directory "
                              f"{cell.run_dir}; give one model a different label=NAME")
        seen[cell.run_dir] = cell.key
    return cells, unavailable


class Sweep:
    def __init__(self, settings: SweepSettings, host: PluginHost) -> None:
        self.settings = settings
        self.host = host
        self.view = SweepView(settings.view)
        self.attempt = uuid.uuid4().hex[:12]
        self.started_at = now()
        self.notes: list[str] = []

    def run(self) -> SweepSummary:
        settings = self.settings
        cells, unavailable = plan(settings, self.host)
        settings.sweep_dir.mkdir(parents=True, exist_ok=True)
        summary = SweepSummary(settings.sweep_dir, cells, unavailable, self.notes)
        for cell in cells:
            if cell.finished_before():
                cell.state = SKIPPED
        todo = [c for c in cells if c.state == PENDING]
        executor: Executor | None = None
        handles: dict[str, Handle] = {}
        try:
            if todo:
                executor = make_executor(settings.executor, settings.sweep_dir)
                placed, problems, notes = executor.start({c.key: c.resources for c in todo})
                self.notes += notes
                for note in notes:
                    self.view.cell_event(f"note: {note}")
                for cell in todo:
                    cell.resources = placed[cell.key]
                    if cell.key in problems:
                        cell.state, cell.error = FAILED, f"cannot be placed: {problems[cell.key]}"
                runnable = [c for c in todo if c.state == PENDING]
                env = forwarded_env()
                jobs = []
                for cell in runnable:
                    cell.write_cell_file()
                    jobs.append((CellJob(cell.key, str(cell.run_dir), cell.run_args, self.attempt, env), cell.resources))
                self._write_manifest(summary, "running")
                self.view.start(sum(c.total for c in cells), sum(c.total for c in cells if c.state == SKIPPED),
                                self._counts(cells))
                for cell in cells:
                    if cell.state == FAILED:
                        self._report_failure(cell)
                handles = {h.job.key: h for h in executor.submit_all(jobs)}
                self._follow(cells, handles)
            summary.status = "finished" if not summary.failed else "finished with failures"
        except BaseException as exc:
            for handle in handles.values():
                if not handle.done():
                    handle.cancel()
            summary.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped: {exc}"
            raise
        finally:
            self.view.close()
            if executor is not None:
                executor.close()
            self._write_manifest(summary, summary.status)
            try:
                self._merge(summary)
            except MedmimError as exc:  # a cell's run directory that cannot be read: the others' cells stay
                self.view.cell_event(f"warning: no merged leaderboard: {exc}", failure=True)
        return summary

    def _counts(self, cells: list[Cell]) -> SweepCounts:
        counts = SweepCounts()
        for cell in cells:
            if cell.state in (DONE, SKIPPED):
                counts.done += 1
            elif cell.state == FAILED:
                counts.failed += 1
            elif cell.state == RUNNING:
                counts.running += 1
            else:
                counts.pending += 1
        return counts

    def _started(self, cell: Cell) -> bool:
        try:
            info = json.loads((cell.run_dir / STARTED_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if info.get("attempt") == self.attempt:
            cell.host = info.get("host")
            return True
        return False

    def _follow(self, cells: list[Cell], handles: dict[str, Handle]) -> None:
        by_key = {c.key: c for c in cells}
        open_keys = set(handles)
        while open_keys:
            changed = finished = False
            for key in sorted(open_keys):
                cell, handle = by_key[key], handles[key]
                if cell.state == PENDING and self._started(cell):  # also when it ended since the last poll
                    cell.state = RUNNING
                    self.view.cell_event(f"started: {cell.key} ({cell.resources.describe()}{self._where(cell)})")
                    changed = True
                if handle.done():
                    outcome = handle.outcome()
                    cell.seconds, cell.host = outcome.seconds or None, outcome.host or cell.host
                    if outcome.returncode == 0:
                        cell.state = DONE
                        self.view.cell_event(f"done: {cell.key} ({outcome.seconds:.1f} s{self._where(cell)})")
                    else:
                        cell.state, cell.error = FAILED, outcome.error or f"exit status {outcome.returncode}"
                        self._report_failure(cell)
                    open_keys.discard(key)
                    changed = finished = True
            samples = sum(c.total if c.state in (DONE, SKIPPED) else c.samples_written() for c in cells)
            self.view.update(self._counts(cells), samples, force=finished)
            if changed:
                self._write_manifest_running(cells)
            if open_keys:
                time.sleep(self.settings.poll_s)

    def _where(self, cell: Cell) -> str:
        return f" on {cell.host}" if cell.host and cell.host != os.uname().nodename else ""

    def _report_failure(self, cell: Cell) -> None:
        self.view.cell_event(f"failed: {cell.key}: {cell.error} (log: {cell.log})", failure=True)

    def _write_manifest_running(self, cells: list[Cell]) -> None:
        self._write_manifest(SweepSummary(self.settings.sweep_dir, cells, [], self.notes), "running")

    def _write_manifest(self, summary: SweepSummary, status: str) -> None:
        """``sweep.json``: this invocation appended to the earlier ones, and every cell's latest state."""
        path = self.settings.sweep_dir / SWEEP_FILE
        invocations: list[dict[str, Any]] = []
        try:
            invocations = json.loads(path.read_text(encoding="utf-8")).get("invocations", [])
        except (OSError, ValueError, AttributeError):
            invocations = []
        invocations = [i for i in invocations if i.get("attempt") != self.attempt]
        invocations.append({"attempt": self.attempt, "argv": self.settings.argv, "executor": str(self.settings.executor),
                            "started_at": self.started_at, "finished_at": None if status == "running" else now(),
                            "status": status, "notes": self.notes})
        data = {
            "version": 1,
            "invocations": invocations,
            "unavailable_models": [{"model": m, "reason": r} for m, r in summary.unavailable],
            "cells": [{
                "model": c.model, "spec": str(c.spec), "task": c.task.label, "state": c.state,
                "run_dir": str(c.run_dir), "log": str(c.log),
                "resources": {"gpus": c.resources.gpus, "cpus": c.resources.cpus},
                "samples": c.total, "seconds": c.seconds, "host": c.host, "error": c.error,
            } for c in summary.cells],
        }
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def _merge(self, summary: SweepSummary) -> None:
        """One leaderboard (markdown) and one HTML report over every cell that has results."""
        from medmim_eval.exports import render
        from medmim_eval.leaderboard import build_view, to_markdown

        run_dirs = [c.run_dir for c in summary.cells if (c.run_dir / RESULTS_FILE).is_file()]
        if not run_dirs:
            return
        view = build_view(run_dirs)
        if not view.tables:
            return
        (self.settings.sweep_dir / LEADERBOARD_FILE).write_text(to_markdown(view.tables, footer=view.footer),
                                                                  encoding="utf-8")
        html = render("html", view, host=self.host, data=self.settings.data)
        (self.settings.sweep_dir / REPORT_FILE).write_text(html, encoding="utf-8")


def run_sweep(settings: SweepSettings, host: PluginHost) -> SweepSummary:
    return Sweep(settings, host).run()
