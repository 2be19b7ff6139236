"""The view model of the leaderboard: plain data every view renders (tables in the layout of the
paper's Table 1, the runs they come from, the footer), and the number formats they share.

Below :mod:`medmim_eval.leaderboard` (which loads runs and builds views) and :mod:`medmim_eval.exports`
(which renders them); it imports neither, so neither imports the other through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from medmim_eval.schema import ResultCell
from medmim_eval.stats import chance_normalised

if TYPE_CHECKING:
    from medmim_eval.control_view import ControlReport
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
    controls: "ControlReport | None" = None  # with ``--controls``
    shortcuts: bool = False

    @property
    def cells(self) -> list[ResultCell]:
        """The cells the tables show: per source with ``by_source``, else per task."""
        return [c for run in self.runs for c in (run.by_source if self.by_source else run.cells)]
