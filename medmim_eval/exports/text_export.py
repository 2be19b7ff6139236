"""Markdown and rich-terminal renderings of leaderboard tables."""
from __future__ import annotations

import sys
from typing import Any

from medmim_eval.view_model import KIND_LETTER, Table, fmt, fmt_interval

PLAIN_GROUPS = ("Synthetic", "Other")


def _mark(table: Table, model: str, column: int, marks: list[tuple[set[str], set[str]]]) -> str:
    """``"best"``, ``"second"`` or ``""`` for one cell."""
    if table.rows[model][column] is None:
        return ""
    best, second = marks[column]
    return "best" if model in best else "second" if model in second else ""


def to_markdown(tables: list[Table], *, ci: bool = False, footer: list[str] | None = None) -> str:
    """Markdown tables: best per column bold, second underlined, missing cells a dash.

    With ``ci`` each value is followed by its 95% interval, e.g. ``44.03 [37.88, 49.83]``.
    """
    out = []
    for table in tables:
        out.append(f"### {table.title}\n")
        out.append("| Model | " + " | ".join(c.header if c.group in PLAIN_GROUPS else f"{c.group}: {c.header}"
                                           for c in table.columns) + " |")
        out.append("|---|" + "---:|" * len(table.columns))
        marks = [table.ranks(i) for i in range(len(table.columns))]
        for model, values in table.rows.items():
            cells = []
            for i, value in enumerate(values):
                text = fmt(value)
                mark = _mark(table, model, i, marks)
                text = f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text
                text += table.marker(model, i)
                if ci and value is not None and table.interval(model, i):
                    text += " " + fmt_interval(table.interval(model, i))
                cells.append(text)
            out.append(f"| {model} | " + " | ".join(cells) + " |")
        out.extend([""] + [f"_{n}_" for n in table.notes] + [""])
    for line in footer or []:
        out.append(f"_{line.strip()}_" if not line.startswith("  ") else f"- {line.strip()}")
    return "\n".join(out).rstrip() + "\n"


def print_rich(tables: list[Table], console: Any = None, *, ci: bool = False, footer: list[str] | None = None) -> None:
    """Print tables with rich: grouped three-line headers, best bold, second underlined.

    With ``ci`` each cell shows its 95% interval on a second line.
    """
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    if console is None:
        # Off a terminal (a log, a pipe) the table is never squeezed into 80 columns.
        console = Console() if sys.stdout.isatty() else Console(width=240)
    for table in tables:
        rich_table = RichTable(title=table.title, title_justify="left")
        rich_table.add_column("Model", style="cyan", no_wrap=True, min_width=max(map(len, table.rows), default=5))
        previous_group = previous_label = None
        for column in table.columns:
            group = column.group if column.group != previous_group else ""
            label = column.title if column.title != previous_label else ""
            previous_group, previous_label = column.group, column.title
            rich_table.add_column(f"{group}\n{label}\n{KIND_LETTER[column.kind]}", justify="right",
                                  min_width=max(6, len(group), len(label)), no_wrap=True)
        marks = [table.ranks(i) for i in range(len(table.columns))]
        for model, values in table.rows.items():
            cells = []
            for i, value in enumerate(values):
                mark = _mark(table, model, i, marks)
                text = Text(fmt(value), style="bold" if mark == "best" else "underline" if mark == "second" else "")
                text.append(table.marker(model, i))
                if ci and value is not None and table.interval(model, i):
                    text.append("\n" + fmt_interval(table.interval(model, i)), style="dim")
                cells.append(text)
            rich_table.add_row(model, *cells, style="italic dim" if model in table.reference else None)
        # Never squeeze numbers into ellipses: a narrow terminal wraps lines instead.
        needed = Console(width=10_000).measure(rich_table).maximum
        target = console
        if needed > console.width:
            target = Console(file=console.file, width=needed, force_terminal=console.is_terminal)
        target.print(rich_table)
        for note in table.notes:
            console.print(note, style="dim", highlight=False, markup=False)
    for line in footer or []:
        style = "bold yellow" if line.startswith("WARNING") else "dim"
        console.print(line, style=style, highlight=False, markup=False, soft_wrap=True)
