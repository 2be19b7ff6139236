"""Renderers of a :class:`~medmim_eval.compare.Comparison` (``medmim-eval compare``): a rich table,
Markdown (a CI comment or job summary) and JSON, beside the leaderboard's renderers."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medmim_eval.compare import Comparison, Flip
    from medmim_eval.compare_stats import CellComparison

DASH = "—"
JSON_VERSION = 1
DIRECTIONS = (("right->wrong", "right → wrong"), ("wrong->right", "wrong → right"))
HEADERS = ("Model", "Task", "Kind", "n", "Base", "Cand", "Δ", "CI", "p", "Flips −/+", "Verdict")


def to_dict(comparison: Comparison) -> dict[str, Any]:
    """Everything in a comparison as JSON-ready data, every flip included."""
    return {
        "version": JSON_VERSION,
        "status": comparison.status,
        "exit_code": comparison.exit_code,
        "forced": comparison.forced,
        "baseline": {"dir": comparison.baseline_dir, "run_id": comparison.baseline_run_id},
        "candidate": {"dir": comparison.candidate_dir, "run_id": comparison.candidate_run_id},
        "settings": comparison.settings.describe(),
        "pairs": [asdict(p) for p in comparison.pairs],
        "problems": [asdict(p) for p in comparison.problems],
        "cells": [asdict(c) | {"regression": c.regression} for c in comparison.cells],
        "flips": [asdict(f) for f in comparison.flips],
        "notes": comparison.notes,
    }


def to_json(comparison: Comparison) -> str:
    return json.dumps(to_dict(comparison), indent=2, ensure_ascii=False) + "\n"


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _p(value: float | None) -> str:
    if value is None:
        return DASH
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _row(cell: CellComparison) -> list[str]:
    model = cell.baseline_model if cell.baseline_model == cell.candidate_model else f"{cell.baseline_model} → {cell.candidate_model}"
    ci = DASH if cell.ci_low is None else f"[{cell.ci_low:+.2f}, {cell.ci_high:+.2f}]"
    flips = DASH if cell.right_to_wrong is None else f"−{cell.right_to_wrong}/+{cell.wrong_to_right}"
    return [model, cell.task, cell.kind, str(cell.n), _num(cell.baseline), _num(cell.candidate), _num(cell.delta, True),
            ci, _p(cell.p_value), flips, cell.verdict]


def _level(comparison: Comparison) -> str:
    return f"{(1 - comparison.settings.alpha) * 100:g}%"


def summary_line(comparison: Comparison) -> str:
    """One line: the verdict and why."""
    s = comparison.settings
    if comparison.status == "not comparable":
        return f"NOT COMPARABLE: {len(comparison.problems)} problem(s); fix them or pass --force"
    forced = " (forced past: " + ", ".join(sorted({p.code for p in comparison.problems})) + ")" if comparison.forced else ""
    if comparison.regressions:
        cells = ", ".join(f"{c.task} {c.kind} {c.delta:+.2f}" for c in comparison.regressions)
        return f"REGRESSION: significant drop of more than {s.max_drop:g} point(s) in {cells}{forced}"
    return f"PASS: no significant drop of more than {s.max_drop:g} point(s){forced}"


def gate_line(comparison: Comparison) -> str:
    s = comparison.settings
    return (f"Gate: delta below -{s.max_drop:g} points and significant at alpha={s.alpha:g} (closed: McNemar exact; "
            f"open: paired {_level(comparison)} bootstrap CI below 0). CI: {s.n_resamples} resamples of image-set "
            f"clusters, seed {s.seed}.")


def _flips_by_direction(comparison: Comparison) -> list[tuple[str, list[Flip]]]:
    return [(label, [f for f in comparison.flips if f.direction == direction]) for direction, label in DIRECTIONS]


def _pair_label(flip: Flip) -> str:
    return flip.baseline_model if flip.baseline_model == flip.candidate_model else f"{flip.baseline_model} → {flip.candidate_model}"


def to_markdown(comparison: Comparison, max_flips: int = 50) -> str:
    """A Markdown report for a CI comment or ``$GITHUB_STEP_SUMMARY``."""
    out = ["## medmim-eval compare", "",
           f"**{summary_line(comparison)}**", "",
           f"Baseline `{comparison.baseline_dir}` (run {comparison.baseline_run_id or DASH}) vs candidate "
           f"`{comparison.candidate_dir}` (run {comparison.candidate_run_id or DASH}).", ""]
    for problem in comparison.problems:
        out.append(f"- {'forced past: ' if comparison.forced else ''}{problem.line}")
    if comparison.problems:
        out.append("")
    if comparison.cells:
        headers = [h if h != "CI" else f"{_level(comparison)} CI" for h in HEADERS]
        out.append("| " + " | ".join(headers) + " |")
        out.append("|---|---|---|" + "---:|" * 7 + "---|")
        for cell in comparison.cells:
            row = _row(cell)
            if cell.regression:
                row[-1] = f"**{row[-1]}**"
            out.append("| " + " | ".join(row) + " |")
        out += ["", f"_{gate_line(comparison)}_", ""]
    for label, flips in _flips_by_direction(comparison):
        if not flips:
            continue
        out += [f"<details><summary>Flips {label}: {len(flips)}</summary>", "",
                "| Model | Task | Key | Item | Gold | Base | Cand |", "|---|---|---|---|---|---|---|"]
        for f in flips[:max_flips]:
            out.append(f"| {_pair_label(f)} | {f.task} | `{f.key}` | `{f.item_id}` | {f.gold} | "
                       f"{f.baseline_answer or DASH} | {f.candidate_answer or DASH} |")
        if len(flips) > max_flips:
            out.append(f"\n… and {len(flips) - max_flips} more (the --json output lists all).")
        out += ["", "</details>", ""]
    out += [f"_{note}_" for note in comparison.notes]
    return "\n".join(out).rstrip() + "\n"


def print_rich(comparison: Comparison, console: Any | None = None, max_flips: int = 50) -> None:
    """The comparison as a rich table plus the flips, for a terminal or a CI log."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        # Off a terminal (a CI log, a pipe) the table is never squeezed into 80 columns.
        console = Console() if sys.stdout.isatty() else Console(width=240)
    table = Table(title=f"{comparison.baseline_dir} → {comparison.candidate_dir}", title_justify="left")
    for header in HEADERS:
        numeric = header in ("n", "Base", "Cand", "Δ", "p")
        table.add_column(f"{_level(comparison)} CI" if header == "CI" else header,
                         justify="right" if numeric else "left", no_wrap=True)
    styles = {"regression": "bold red", "drop, n.s.": "yellow", "improved": "green"}
    for cell in comparison.cells:
        table.add_row(*_row(cell), style=styles.get(cell.verdict, ""))
    console.print(table)
    console.print(gate_line(comparison), style="dim", highlight=False)
    for label, flips in _flips_by_direction(comparison):
        if flips:
            console.print(f"Flips {label} ({len(flips)}):", highlight=False)
        for f in flips[:max_flips]:
            console.print(f"  {f.task}  {f.key}  item {f.item_id}  gold {f.gold}: "
                          f"{f.baseline_answer or DASH} → {f.candidate_answer or DASH}", highlight=False)
        if len(flips) > max_flips:
            console.print(f"  … and {len(flips) - max_flips} more (--json lists all)", highlight=False)
    for note in comparison.notes:
        console.print(f"note: {note}", style="dim", highlight=False)
    colour = {"pass": "green", "regression": "bold red"}.get(comparison.status, "yellow")
    console.print(summary_line(comparison), style=colour, highlight=False)
