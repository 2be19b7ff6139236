"""Leaderboard tables in the layout of the paper's Table 1, computed from run directories.

A table is plain data (:class:`Table`); renderers turn it into text (rich and Markdown here, CSV,
JSON, LaTeX and HTML in :mod:`medmim_eval.exports`), so tests check the data, not escape codes.
A :class:`LeaderboardView` bundles what every renderer needs: the runs, their tables and the
footer that says which metric definitions produced the numbers.
"""
from __future__ import annotations

from pathlib import Path

from medmim_eval.errors import MedmimError
from medmim_eval.run_reader import RunDirectory
from medmim_eval.schema import ResultCell, Results
from medmim_eval.view_model import (  # noqa: F401  (the view model; importable from here as before)
    CHANCE_NORMALISED, KIND_LETTER, KINDS, MEDMIM_LAYOUT, MEDMIM_TITLE, MISSING, OTHER_TITLE, SCORE, SHORTCUT_MARGIN,
    SYNTH_LAYOUT, SYNTH_TITLE, Column, LeaderboardView, RunData, Table, build_tables, empty_medmim_table, fmt,
    fmt_interval, shown_value,
)


def load_run(run_dir: Path, *, by_source: bool = False) -> RunData:
    """Read one run directory; per-source cells only when ``by_source`` (they may need recomputing).

    Raises:
        MedmimError: for a folder that is no run directory or an unreadable ``results.json``.
    """
    from medmim_eval.flags import with_flag_counts
    from medmim_eval.scoring import aggregate, aggregate_by_source
    from medmim_eval.stats import BootstrapSettings

    run = RunDirectory(run_dir)
    manifest = run.manifest()
    settings = BootstrapSettings(seed=manifest.seed if manifest else 0)
    results = run.results()
    if results is None and run.has_records:
        records = list(run.records().values())
        shortcuts = _reloaded_shortcuts(run_dir)
        results = Results(run_id=manifest.run_id if manifest else run_dir.name, bootstrap=settings.describe(),
                          cells=with_flag_counts(aggregate(records, settings, shortcuts), records),
                          by_source=with_flag_counts(aggregate_by_source(records, settings, shortcuts), records))
    elif results is None:
        raise MedmimError(f"{run_dir}: no results.json or samples.jsonl; is this a run directory?")
    if by_source and not results.by_source and run.has_records:
        records = list(run.records().values())
        results.by_source = with_flag_counts(aggregate_by_source(records, settings, _reloaded_shortcuts(run_dir)),
                                             records)
    if manifest is not None:
        from medmim_eval.exclusion import mark_cells

        results.cells, results.by_source = mark_cells(results.cells, manifest.tasks), mark_cells(results.by_source,
                                                                                                  manifest.tasks)
    models = {c.model for c in results.cells} | {c.model for c in results.by_source}
    return RunData(run_dir=run_dir, run_id=results.run_id, cells=results.cells, by_source=results.by_source,
                   metrics=results.metrics or (manifest.metrics if manifest else {}),
                   bootstrap=results.bootstrap, names={m: m for m in sorted(models)},
                   stand_ins={t.name: t.files[0] for t in (manifest.tasks if manifest else []) if t.from_file and t.files})


def _reloaded_shortcuts(run_dir: Path) -> dict[str, dict[str, bool]] | None:
    """The shortcut table of a run's tasks, reloaded from the default data folders for cells
    recomputed from ``samples.jsonl``; ``None`` (no shortcut figures) when a task cannot be reloaded."""
    from medmim_eval.datadir import DataPaths
    from medmim_eval.exports.drilldown import load_run_samples
    from medmim_eval.plugins import create_plugin_host
    from medmim_eval.shortcuts import shortcut_correct

    manifest = RunDirectory(run_dir).manifest()
    if manifest is None or not manifest.tasks:
        return None
    try:
        loaded = load_run_samples(run_dir, {t.name for t in manifest.tasks}, create_plugin_host(), DataPaths.resolve())
    except Exception:  # the figures are optional here; the scores never depend on them
        return None
    if loaded.problems:
        return None
    return shortcut_correct(list(loaded.samples.values()))


def load_runs(run_dirs: list[Path], *, by_source: bool = False) -> list[RunData]:
    """Several runs; a model appearing in more than one run is shown as ``model [run folder]``.

    The cells of each returned run already carry the shown model names.
    """
    runs = [load_run(d, by_source=by_source) for d in run_dirs]
    owner: dict[tuple[str, str, str], Path] = {}
    clashing: set[str] = set()
    for run in runs:
        for c in run.cells:
            key = (c.model, c.task, c.kind)
            if owner.setdefault(key, run.run_dir) != run.run_dir:
                clashing.add(c.model)
    for run in runs:
        run.names = {m: f"{m} [{run.run_dir.name}]" if m in clashing else m for m in run.names}
        run.cells = [c.model_copy(update={"model": run.names[c.model]}) for c in run.cells]
        run.by_source = [c.model_copy(update={"model": run.names[c.model]}) for c in run.by_source]
    return runs


def load_cells(run_dir: Path) -> list[ResultCell]:
    """Result cells of a run directory: ``results.json``, or recomputed from ``samples.jsonl``."""
    return load_run(run_dir).cells


def cells_from_runs(run_dirs: list[Path]) -> list[ResultCell]:
    """Cells of several run directories; a model appearing in more than one is named per run."""
    return [c for run in load_runs(run_dirs) for c in run.cells]


def build_view(run_dirs: list[Path], *, ci: bool = False, chance: bool = False, by_source: bool = False,
               with_paper: bool = False, vs_paper: bool = False, paper_file: Path | None = None,
               controls: bool = False, shortcuts: bool = False) -> LeaderboardView:
    """Load runs and build their tables and footer (metric definitions, CI method, warnings).
    With ``controls``, also the image-controls report (:mod:`medmim_eval.control_view`).

    With ``with_paper`` the paper's reported Table 1 rows are added to the Med-MIM table; with
    ``vs_paper`` each measured model that is a paper model is shown beside its reported row with
    the difference. ``paper_file`` replaces the bundled copy of the paper's table.

    ``chance`` and ``shortcuts`` pick what closed columns show (see :func:`build_tables`); give one.

    Raises:
        MedmimError: for paper rows combined with ``chance`` or ``by_source`` (the paper reports
            accuracy per task), or a paper table whose † rows disagree with its other rows.
    """
    from medmim_eval.exports.metric_notes import footer_lines, judge_lines, not_scored_lines

    if (with_paper or vs_paper) and (chance or by_source):
        flag = "--chance" if chance else "--by-source"
        raise MedmimError(f"the paper reports plain accuracy and open score per task, so its rows cannot be shown "
                          f"with {flag}; drop {flag} or --with-paper/--vs-paper")
    if chance and shortcuts:
        raise MedmimError("--chance and --shortcuts pick different values for the closed columns; give one")
    runs = load_runs(run_dirs, by_source=by_source)
    view = LeaderboardView(runs=runs, tables=[], footer=[], ci=ci, chance=chance, by_source=by_source,
                           with_paper=with_paper, vs_paper=vs_paper, shortcuts=shortcuts)
    value = CHANCE_NORMALISED if chance else SHORTCUT_MARGIN if shortcuts else SCORE
    view.tables = build_tables(view.cells, value=value, by_source=by_source)
    view.footer = footer_lines(runs, ci=ci) + judge_lines(runs) + not_scored_lines(runs) + stand_in_lines(runs) + excluded_lines(runs)
    from medmim_eval.circular import footer_lines as circular_lines

    view.footer += circular_lines(runs)
    if with_paper or vs_paper:
        from medmim_eval.paper_table import load_paper_table
        from medmim_eval.paper_view import add_paper_rows, match_models, paper_footer

        view.paper = load_paper_table(paper_file)
        view.paper_matches = match_models(runs, view.paper)
        view.tables = add_paper_rows(view.tables, view.paper, view.paper_matches, with_paper=with_paper,
                                     vs_paper=vs_paper)
        view.footer += paper_footer(view.paper, view.paper_matches, vs_paper=vs_paper)
    if controls:
        from medmim_eval.control_view import control_report

        view.controls = control_report(run_dirs)
    return view


def stand_in_lines(runs: list[RunData]) -> list[str]:
    """One footer line per task a run evaluated from a given file under a benchmark task's name."""
    return [f"{task} in {run.run_dir.name}: evaluated from {file}, a file standing for that task "
            "(built data or run --as), not the official benchmark file."
            for run in runs for task, file in sorted(run.stand_ins.items())]


def excluded_lines(runs: list[RunData]) -> list[str]:
    """One footer line per task a run scored on a clean subset (its cells carry the marker)."""
    from medmim_eval.exclusion import EXCLUDED_MARK
    from medmim_eval.manifest import read_manifest

    lines = []
    for run in runs:
        manifest = read_manifest(run.run_dir)
        for task in manifest.tasks if manifest else []:
            if task.excluded_keys:
                lines.append(f"{EXCLUDED_MARK} {task.name} in {run.run_dir.name}: a clean subset, {len(task.excluded_keys)} "
                             f"item(s) left out by {task.excluded_from} (keys in its manifest); not comparable with "
                             "a full run of the task.")
    return lines


def to_markdown(tables: list[Table], *, ci: bool = False, footer: list[str] | None = None) -> str:
    """Markdown tables: best per column bold, second underlined, missing cells a dash."""
    from medmim_eval.exports.text_export import to_markdown as render

    return render(tables, ci=ci, footer=footer or [])


def print_rich(tables: list[Table], console: object | None = None, *, ci: bool = False,
               footer: list[str] | None = None) -> None:
    """Rich terminal tables (grouped headers; intervals on a second line with ``ci``)."""
    from medmim_eval.exports.text_export import print_rich as render

    render(tables, console, ci=ci, footer=footer or [])
