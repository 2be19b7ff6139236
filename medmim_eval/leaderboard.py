"""Leaderboard tables in the layout of the paper's Table 1, computed from run directories.

A table is plain data (:class:`Table`); renderers turn it into rich or Markdown output, so tests
check the data, not escape codes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from medmim_eval.errors import MedmimError
from medmim_eval.records import RESULTS_FILE, RecordStore
from medmim_eval.schema import ResultCell, Results
from medmim_eval.scoring import aggregate

MISSING = "—"
KIND_LETTER = {"closed": "C", "open": "O"}

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


@dataclass(frozen=True)
class Column:
    group: str
    label: str
    task: str
    kind: str

    @property
    def header(self) -> str:
        return f"{self.label} {KIND_LETTER[self.kind]}"


@dataclass
class Table:
    """Rows are models, columns task x kind; values in percent (or None for no data)."""

    title: str
    columns: list[Column]
    rows: dict[str, list[float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ranks(self, column: int) -> tuple[set[str], set[str]]:
        """(best models, second-best models) of one column; ties share a rank."""
        values = sorted({v for v in (r[column] for r in self.rows.values()) if v is not None}, reverse=True)
        best = {m for m, r in self.rows.items() if values and r[column] == values[0]}
        second = {m for m, r in self.rows.items() if len(values) > 1 and r[column] == values[1]}
        return best, second


def load_cells(run_dir: Path) -> list[ResultCell]:
    """Result cells of a run directory: ``results.json``, or recomputed from ``samples.jsonl``."""
    results_path = run_dir / RESULTS_FILE
    if results_path.exists():
        try:
            return Results.model_validate(json.loads(results_path.read_text(encoding="utf-8"))).cells
        except (json.JSONDecodeError, ValidationError) as exc:
            raise MedmimError(f"{results_path}: unreadable results ({type(exc).__name__}); delete it to recompute from samples.jsonl") from None
    store = RecordStore(run_dir)
    if not store.path.exists():
        raise MedmimError(f"{run_dir}: no results.json or samples.jsonl; is this a run directory?")
    return aggregate(store.load(repair=False).values())


def build_tables(cells: list[ResultCell]) -> list[Table]:
    """The Med-MIM table, the synthetic table and one for any other task, where they have data."""
    by_key: dict[tuple[str, str, str], ResultCell] = {(c.model, c.task, c.kind): c for c in cells}
    models = sorted({c.model for c in cells})
    tables = []
    for title, layout in (("Med-MIM benchmark (Table 1 layout)", MEDMIM_LAYOUT), ("Synthetic suite", SYNTH_LAYOUT)):
        tasks = {task for _, _, task in layout}
        if any(c.task in tasks for c in cells):
            columns = [Column(g, label, task, kind) for g, label, task in layout for kind in ("closed", "open")]
            tables.append(_fill(title, columns, models, by_key))
    known = {task for layout in (MEDMIM_LAYOUT, SYNTH_LAYOUT) for _, _, task in layout}
    others = sorted({c.task for c in cells} - known)
    if others:
        columns = [Column("Other", task, task, kind) for task in others for kind in ("closed", "open")]
        tables.append(_fill("Other tasks", columns, models, by_key))
    return tables


def _fill(title: str, columns: list[Column], models: list[str], by_key: dict[tuple[str, str, str], ResultCell]) -> Table:
    table = Table(title=title, columns=columns)
    errors = 0
    for model in models:
        row = []
        for column in columns:
            cell = by_key.get((model, column.task, column.kind))
            row.append(cell.score if cell is not None else None)
            errors += cell.errors if cell is not None else 0
        if any(v is not None for v in row) or any((model, c.task, c.kind) in by_key for c in columns):
            table.rows[model] = row
    table.notes.append("C: closed-question accuracy (%). O: open score = mean of ROUGE-L recall and BLEU (0-100).")
    if errors:
        table.notes.append(f"{errors} sample(s) ended in a model error and are not scored; rerun the run to retry them.")
    return table


def fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def to_markdown(tables: list[Table]) -> str:
    out = []
    for table in tables:
        out.append(f"### {table.title}\n")
        out.append("| Model | " + " | ".join(f"{c.group}: {c.header}" if c.group not in ("Synthetic", "Other") else c.header for c in table.columns) + " |")
        out.append("|---|" + "---:|" * len(table.columns))
        marks = [table.ranks(i) for i in range(len(table.columns))]
        for model, values in table.rows.items():
            cells = []
            for i, value in enumerate(values):
                text = fmt(value)
                best, second = marks[i]
                if value is not None and model in best:
                    text = f"**{text}**"
                elif value is not None and model in second:
                    text = f"<u>{text}</u>"
                cells.append(text)
            out.append(f"| {model} | " + " | ".join(cells) + " |")
        out.extend([""] + [f"_{n}_" for n in table.notes] + [""])
    return "\n".join(out).rstrip() + "\n"


def print_rich(tables: list[Table], console: object | None = None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    if console is None:
        import sys

        # Off a terminal (a log, a pipe) the table is never squeezed into 80 columns.
        console = Console() if sys.stdout.isatty() else Console(width=240)
    for table in tables:
        rich_table = RichTable(title=table.title, title_justify="left")
        rich_table.add_column("Model", style="cyan", no_wrap=True, min_width=max(map(len, table.rows), default=5))
        previous_group = previous_label = None
        for column in table.columns:
            group = column.group if column.group != previous_group else ""
            label = column.label if column.label != previous_label else ""
            previous_group, previous_label = column.group, column.label
            rich_table.add_column(f"{group}\n{label}\n{KIND_LETTER[column.kind]}", justify="right",
                                  min_width=max(6, len(group), len(label)), no_wrap=True)
        marks = [table.ranks(i) for i in range(len(table.columns))]
        for model, values in table.rows.items():
            cells = []
            for i, value in enumerate(values):
                best, second = marks[i]
                style = "bold" if value is not None and model in best else "underline" if value is not None and model in second else ""
                cells.append(f"[{style}]{fmt(value)}[/{style}]" if style else fmt(value))
            rich_table.add_row(model, *cells)
        # Never squeeze numbers into ellipses: a narrow terminal wraps lines instead.
        needed = Console(width=10_000).measure(rich_table).maximum
        target = console
        if needed > console.width:  # type: ignore[attr-defined]
            target = Console(file=console.file, width=needed, force_terminal=console.is_terminal)  # type: ignore[attr-defined]
        target.print(rich_table)  # type: ignore[attr-defined]
        for note in table.notes:
            console.print(note, style="dim", highlight=False)  # type: ignore[attr-defined]


def cells_from_runs(run_dirs: list[Path]) -> list[ResultCell]:
    """Cells of several run directories; a model appearing in more than one is named per run."""
    per_run = [(d, load_cells(d)) for d in run_dirs]
    seen: dict[tuple[str, str, str], Path] = {}
    clashing: set[str] = set()
    for run_dir, cells in per_run:
        for c in cells:
            key = (c.model, c.task, c.kind)
            if key in seen and seen[key] != run_dir:
                clashing.add(c.model)
            seen.setdefault(key, run_dir)
    merged = []
    for run_dir, cells in per_run:
        for c in cells:
            merged.append(c.model_copy(update={"model": f"{c.model} [{run_dir.name}]"}) if c.model in clashing else c)
    return merged
