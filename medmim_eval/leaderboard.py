"""Leaderboard tables in the layout of the paper's Table 1, computed from run directories.

A table is plain data (:class:`Table`); renderers turn it into text (rich and Markdown here, CSV,
JSON, LaTeX and HTML in :mod:`medmim_eval.exports`), so tests check the data, not escape codes.
A :class:`LeaderboardView` bundles what every renderer needs: the runs, their tables and the
footer that says which metric definitions produced the numbers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from pydantic import ValidationError

from medmim_eval.errors import MedmimError, os_error_reason
from medmim_eval.records import RESULTS_FILE, RecordStore
from medmim_eval.schema import ResultCell, Results
from medmim_eval.stats import chance_normalised

if TYPE_CHECKING:
    from medmim_eval.paper_table import PaperTable
    from medmim_eval.paper_view import PaperMatches

MISSING = "—"
KIND_LETTER = {"closed": "C", "open": "O"}
KINDS = ("closed", "open")
SCORE = "score"
CHANCE_NORMALISED = "chance_normalised"
SHORTCUT_MARGIN = "shortcut_margin"

# The paper's Table 1: (group, column label, task name).
MEDMIM_LAYOUT: tuple[tuple[str, str, str], ...] = (
    ("Held-in", "Temporal", "held-in-temporal"),
    ("Held-in", "Reasoning", "held-in-reasoning"),
    ("Held-in", "Comparison", "held-in-comparison"),
    ("Held-in", "Co-reference", "held-in-coreference"),
    ("Held-out", "MIM-RAD", "held-out-rad"),
    ("Held-out", "MIM-ODIR", "held-out-odir"),
)
SYNTH_LAYOUT: tuple[tuple[str, str, str], ...] = (
    ("Synthetic", "Temporal", "synth-temporal"),
    ("Synthetic", "Reasoning", "synth-reasoning"),
    ("Synthetic", "Comparison", "synth-comparison"),
    ("Synthetic", "Co-reference", "synth-coreference"),
)
MEDMIM_TITLE = "Med-MIM benchmark (Table 1 layout)"
SYNTH_TITLE = "Synthetic suite"
OTHER_TITLE = "Other tasks"


@dataclass(frozen=True)
class Column:
    """One table column: a task's closed or open subset, optionally of one source dataset."""

    group: str
    label: str
    task: str
    kind: str
    source: str | None = None

    @property
    def title(self) -> str:
        """The task label, with the source dataset when the column holds one source only."""
        return f"{self.label} · {self.source}" if self.source else self.label

    @property
    def header(self) -> str:
        return f"{self.title} {KIND_LETTER[self.kind]}"


@dataclass
class Table:
    """Rows are models, columns task x kind (x source); values on 0-100, ``None`` for no data.

    ``rows`` holds the values shown (the score, or the chance-normalised accuracy of closed
    columns when ``value == "chance_normalised"``, or with ``value == "shortcut_margin"`` the
    accuracy minus the best text-only shortcut on the same items); ``cells`` holds the result cell behind each
    value, for intervals and details. ``reference`` names the rows that are not measured by the
    runs (the paper's reported rows, their † rows, differences from them) with their kind; their
    labels carry the marker, and renderers may style them apart.
    """

    title: str
    columns: list[Column]
    rows: dict[str, list[float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cells: dict[str, list[ResultCell | None]] = field(default_factory=dict)
    value: str = SCORE
    reference: dict[str, str] = field(default_factory=dict)

    def ranks(self, column: int) -> tuple[set[str], set[str]]:
        """(best models, second-best models) of one column; ties share a rank.

        Values are compared as shown (two decimals), so float noise never breaks a visible tie.
        Reference rows (see ``reference``) are never ranked: they are not measured by these runs.
        """
        shown = {m: round(v, 2) for m, r in self.rows.items() if (v := r[column]) is not None and m not in self.reference}
        values = sorted(set(shown.values()), reverse=True)
        best = {m for m, v in shown.items() if v == values[0]}
        second = {m for m, v in shown.items() if len(values) > 1 and v == values[1]}
        return best, second

    def marker(self, model: str, column: int) -> str:
        """The footnote marker of a cell scored on a clean subset (``run --exclude``), else ``""``."""
        from medmim_eval.exclusion import EXCLUDED_MARK

        cell = self.cells.get(model, [None] * len(self.columns))[column]
        return EXCLUDED_MARK if cell is not None and cell.excluded else ""

    def interval(self, model: str, column: int) -> tuple[float, float] | None:
        """The 95% interval of the shown value, on the same scale as the value."""
        cell = self.cells.get(model, [None] * len(self.columns))[column]
        if cell is None or cell.ci_low is None or cell.ci_high is None:
            return None
        if self.value == CHANCE_NORMALISED and self.columns[column].kind == "closed":
            # A fixed affine map of accuracy, so the accuracy interval maps onto it exactly.
            low, high = chance_normalised(cell.ci_low, cell.chance), chance_normalised(cell.ci_high, cell.chance)
            return (low, high) if low is not None and high is not None else None
        if self.value == SHORTCUT_MARGIN:
            # The shortcut is fixed on the cell's items, so the margin's interval is the accuracy's, shifted.
            return None if cell.shortcut is None else (cell.ci_low - cell.shortcut, cell.ci_high - cell.shortcut)
        return cell.ci_low, cell.ci_high


def shown_value(cell: ResultCell | None, value: str = SCORE) -> float | None:
    """What a table shows for a cell: its score, or for closed cells its chance-normalised accuracy."""
    if cell is None:
        return None
    if value == CHANCE_NORMALISED and cell.kind == "closed":
        return cell.chance_normalised
    if value == SHORTCUT_MARGIN:
        return None if cell.score is None or cell.shortcut is None else cell.score - cell.shortcut
    return cell.score


def build_tables(cells: Iterable[ResultCell], *, value: str = SCORE, by_source: bool = False) -> list[Table]:
    """The Med-MIM table, the synthetic table and one for any other task, where they have data.

    Args:
        cells: result cells; with ``by_source`` these are per-source cells (``cell.source`` set).
        value: ``"score"``, or ``"chance_normalised"`` to show closed columns chance-normalised, or
            ``"shortcut_margin"`` for closed columns only: first a table of the text-only shortcut
            rules' accuracy per column, then each model's margin over the best of them.
        by_source: one column per task x source dataset x kind present in ``cells``.
    """
    cells = list(cells)
    by_key: dict[tuple[str, str, str, str | None], ResultCell] = {
        (c.model, c.task, c.kind, c.source if by_source else None): c for c in cells}
    models = sorted({c.model for c in cells})
    known = {task for layout in (MEDMIM_LAYOUT, SYNTH_LAYOUT) for _, _, task in layout}
    others = tuple(("Other", task, task) for task in sorted({c.task for c in cells} - known))
    kinds = ("closed",) if value == SHORTCUT_MARGIN else KINDS
    tables = []
    for title, layout in ((MEDMIM_TITLE, MEDMIM_LAYOUT), (SYNTH_TITLE, SYNTH_LAYOUT), (OTHER_TITLE, others)):
        tasks = {task for _, _, task in layout}
        if not any(c.task in tasks for c in cells):
            continue
        columns = []
        for group, label, task in layout:
            if by_source:
                present = sorted({(c.source or "", c.kind) for c in cells if c.task == task})
                columns += [Column(group, label, task, k, s or None) for s in dict.fromkeys(s for s, _ in present)
                            for k in kinds if (s, k) in present]
            else:
                columns += [Column(group, label, task, kind) for kind in kinds]
        if value == SHORTCUT_MARGIN:
            tables.append(_shortcut_table(title, columns, cells, by_source))
        tables.append(_fill(title, columns, models, by_key, value))
    return tables


def empty_medmim_table() -> Table:
    """The Med-MIM table (Table 1 layout) with no rows, for views that add reference rows only."""
    columns = [Column(group, label, task, kind) for group, label, task in MEDMIM_LAYOUT for kind in KINDS]
    return _fill(MEDMIM_TITLE, columns, [], {}, SCORE)


def _shortcut_table(title: str, columns: list[Column], cells: list[ResultCell], by_source: bool) -> Table:
    """Rows: the text-only shortcut rules; values: their accuracy on the items of each column.

    Models may have scored different items of a column (errors); the cell with the most scored
    items stands for the column here, while each model's margin uses its own cell.
    """
    from medmim_eval.shortcuts import SHORTCUT_RULES

    table = Table(title=f"{title} — text-only shortcut baselines (closed accuracy %)", columns=columns)
    reference: list[ResultCell | None] = []
    for column in columns:
        candidates = [c for c in cells if (c.task, c.kind, c.source if by_source else None)
                      == (column.task, column.kind, column.source) and c.shortcuts]
        reference.append(max(candidates, key=lambda c: (c.n_scored, c.model)) if candidates else None)
    for rule in SHORTCUT_RULES:
        table.rows[rule] = [cell.shortcuts.get(rule) if cell else None for cell in reference]
    table.notes.append("Each rule answers from the question and option texts only (ties: earliest letter); "
                       "majority = the task's most frequent gold letter. A dash: the run recorded no shortcut "
                       "scores for that column (cells recomputed without the task data); rerun it to rescore.")
    return table


def _fill(title: str, columns: list[Column], models: list[str],
          by_key: dict[tuple[str, str, str, str | None], ResultCell], value: str) -> Table:
    table = Table(title=title, columns=columns, value=value)
    if value == CHANCE_NORMALISED:
        table.title += " — closed columns chance-normalised"
    elif value == SHORTCUT_MARGIN:
        table.title += " — margin over the best text-only shortcut"
    errors = flagged = 0
    for model in models:
        row = [by_key.get((model, c.task, c.kind, c.source)) for c in columns]
        if any(cell is not None for cell in row):
            table.cells[model] = row
            table.rows[model] = [shown_value(cell, value) for cell in row]
            flagged += sum(cell.too_many_images for cell in row if cell is not None)
            errors += sum(cell.errors - cell.too_many_images for cell in row if cell is not None)
    if value == CHANCE_NORMALISED:
        table.notes.append("C: chance-normalised accuracy = 100 x (accuracy - chance) / (100 - chance): "
                           "0 at chance level, 100 perfect, negative below chance. O: open score (0-100).")
    elif value == SHORTCUT_MARGIN:
        table.notes.append("C: accuracy minus the best text-only shortcut's accuracy on the same items, in points "
                           "(above 0: the model beats every rule that ignores the images).")
    else:
        table.notes.append("C: closed-question accuracy (%). O: open score (0-100).")
    if errors:
        table.notes.append(f"{errors} sample(s) ended in a model error and are not scored; rerun the run to retry them.")
    if flagged:
        table.notes.append(f"{flagged} sample(s) have more images than their model accepts and were not evaluated "
                           "(never truncated); see the footer per model.")
    return table


def fmt(value: float | None) -> str:
    """Two decimals; float noise around zero prints as 0.00, never -0.00."""
    if value is None:
        return MISSING
    return "0.00" if abs(value) < 0.005 else f"{value:.2f}"


def fmt_interval(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"[{fmt(interval[0])}, {fmt(interval[1])}]"


@dataclass
class RunData:
    """What the views read from one run directory.

    ``cells``/``by_source`` come from ``results.json`` or, where it is absent (or lacks the
    per-source cells), are recomputed from ``samples.jsonl`` with the run's seed. ``metrics`` and
    ``bootstrap`` are the recorded definitions (empty when the run recorded none). ``names`` maps
    each model id of the run to the name the views show (see :func:`load_runs`). ``stand_ins``
    maps a task evaluated from a given JSON file under a registered task's name to that file.
    """

    run_dir: Path
    run_id: str
    cells: list[ResultCell]
    by_source: list[ResultCell]
    metrics: dict[str, Any] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    stand_ins: dict[str, str] = field(default_factory=dict)


def load_run(run_dir: Path, *, by_source: bool = False) -> RunData:
    """Read one run directory; per-source cells only when ``by_source`` (they may need recomputing).

    Raises:
        MedmimError: for a folder that is no run directory or an unreadable ``results.json``.
    """
    from medmim_eval.flags import with_flag_counts
    from medmim_eval.manifest import read_manifest
    from medmim_eval.scoring import aggregate, aggregate_by_source
    from medmim_eval.stats import BootstrapSettings

    manifest = read_manifest(run_dir)
    settings = BootstrapSettings(seed=manifest.seed if manifest else 0)
    results_path = run_dir / RESULTS_FILE
    store = RecordStore(run_dir)
    if results_path.exists():
        try:
            results = Results.model_validate(json.loads(results_path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
            reason = os_error_reason(exc) if isinstance(exc, OSError) else type(exc).__name__
            raise MedmimError(f"{results_path}: unreadable results ({reason}); "
                              "delete it to recompute from samples.jsonl") from None
    elif store.path.exists():
        records = list(store.load(repair=False).values())
        shortcuts = _reloaded_shortcuts(run_dir)
        results = Results(run_id=manifest.run_id if manifest else run_dir.name, bootstrap=settings.describe(),
                          cells=with_flag_counts(aggregate(records, settings, shortcuts), records),
                          by_source=with_flag_counts(aggregate_by_source(records, settings, shortcuts), records))
    else:
        raise MedmimError(f"{run_dir}: no results.json or samples.jsonl; is this a run directory?")
    if by_source and not results.by_source and store.path.exists():
        records = list(store.load(repair=False).values())
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
    from medmim_eval.manifest import read_manifest
    from medmim_eval.plugins import create_plugin_host
    from medmim_eval.shortcuts import shortcut_correct

    manifest = read_manifest(run_dir)
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


@dataclass
class LeaderboardView:
    """The runs, the tables built from them and the footer lines every renderer prints."""

    runs: list[RunData]
    tables: list[Table]
    footer: list[str]
    ci: bool = False
    chance: bool = False
    by_source: bool = False
    paper: "PaperTable | None" = None
    paper_matches: "PaperMatches | None" = None
    with_paper: bool = False
    vs_paper: bool = False
    controls: Any = None  # a medmim_eval.control_view.ControlReport with ``--controls``
    shortcuts: bool = False

    @property
    def cells(self) -> list[ResultCell]:
        """The cells the tables show: per source with ``by_source``, else per task."""
        return [c for run in self.runs for c in (run.by_source if self.by_source else run.cells)]


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
