"""Renderers of a :class:`~medmim_eval.compare.Comparison` (``medmim-eval compare``): a rich table,
Markdown (a CI comment or job summary) and JSON, beside the leaderboard's renderers."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medmim_eval.compare import Change, Comparison, Flip
    from medmim_eval.compare_stats import CellComparison

DASH = "—"
JSON_VERSION = 1
DIRECTIONS = (("right->wrong", "right → wrong"), ("wrong->right", "wrong → right"))
HEADERS = ("Model", "Task", "Kind", "n", "Base", "Cand", "Δ", "CI", "p", "Flips −/+", "Agree", "Verdict")


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
        **({"changes": [asdict(c) for c in comparison.changes]} if comparison.across_definitions else {}),
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


def _powered(comparison: Comparison) -> bool:
    return comparison.settings.power is not None


def _headers(comparison: Comparison) -> list[str]:
    headers = [f"{_level(comparison)} CI" if h == "CI" else h for h in HEADERS]
    if _powered(comparison):
        headers.insert(-1, "Detectable")
    return headers


def _detectable(cell: CellComparison) -> str:
    return DASH if cell.detectable is None else f"±{cell.detectable:.1f}"


def _row(cell: CellComparison, powered: bool = False) -> list[str]:
    model = cell.baseline_model if cell.baseline_model == cell.candidate_model else f"{cell.baseline_model} → {cell.candidate_model}"
    ci = DASH if cell.ci_low is None else f"[{cell.ci_low:+.2f}, {cell.ci_high:+.2f}]"
    flips = DASH if cell.right_to_wrong is None else f"−{cell.right_to_wrong}/+{cell.wrong_to_right}"
    row = [model, cell.task, cell.kind, str(cell.n), _num(cell.baseline), _num(cell.candidate), _num(cell.delta, True),
           ci, _p(cell.p_value), flips, DASH if cell.agreement is None else f"{cell.agreement:.1f}%", cell.verdict]
    if powered:
        row.insert(-1, _detectable(cell))
        if not cell.significant and cell.detectable is not None:
            row[-1] = f"{cell.verdict} (n.s.; detectable ±{cell.detectable:.1f})" if cell.verdict == "ok" else \
                f"{cell.verdict}; detectable ±{cell.detectable:.1f}"
    return row


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
    line = f"PASS: no significant drop of more than {s.max_drop:g} point(s){forced}"
    detectable = [c.detectable for c in comparison.cells if c.detectable is not None and not c.significant]
    if detectable:
        line += (f"; with these samples a drop is detected at power {s.power:g} only from "
                 f"{min(detectable):.1f}-{max(detectable):.1f} points (see Detectable), so n.s. is not evidence of no change")
    return line


def gate_line(comparison: Comparison) -> str:
    s = comparison.settings
    return (f"Gate: delta below -{s.max_drop:g} points and significant at alpha={s.alpha:g} (closed: McNemar exact; "
            f"open: paired {_level(comparison)} bootstrap CI below 0). CI: {s.n_resamples} resamples of image-set "
            f"clusters, seed {s.seed}. Agree: paired items with the same answer (closed: the same extracted option; "
            f"open: the same text up to whitespace)." + (power_line(comparison) if _powered(comparison) else ""))


def power_line(comparison: Comparison) -> str:
    s = comparison.settings
    return (f" Detectable: the smallest |Δ| the test finds with probability {s.power:g} at alpha={s.alpha:g} (closed: "
            "McNemar normal approximation from the observed discordance rate, image-set clusters as sample size; open: "
            "(z(1-α/2)+z(power)) × cluster-robust SE of the paired difference).")


def _flips_by_direction(comparison: Comparison) -> list[tuple[str, list[Flip]]]:
    return [(label, [f for f in comparison.flips if f.direction == direction]) for direction, label in DIRECTIONS]


def _pair_label(flip: Flip) -> str:
    return flip.baseline_model if flip.baseline_model == flip.candidate_model else f"{flip.baseline_model} → {flip.candidate_model}"


CHANGES_TITLE = "Outcome changed between the two definitions"


def change_line(change: Change) -> str:
    """One changed sample: its place, both answers (or open scores) and what decided each."""
    model = change.baseline_model if change.baseline_model == change.candidate_model else \
        f"{change.baseline_model} → {change.candidate_model}"
    gold = f" gold {change.gold}:" if change.gold else ":"
    rules = f" ({change.baseline_rule or DASH} → {change.candidate_rule or DASH})" if change.kind == "closed" else ""
    return (f"{model}  {change.task} {change.kind}  {change.key}  item {change.item_id}{gold} "
            f"{change.baseline_answer or DASH} → {change.candidate_answer or DASH}{rules}")


def _changes_markdown(comparison: Comparison, max_flips: int) -> list[str]:
    if not comparison.across_definitions:
        return []
    changes = comparison.changes
    out = [f"<details><summary>{CHANGES_TITLE}: {len(changes)}</summary>", ""]
    out += [f"- {change_line(c)}" for c in changes[:max_flips]]
    if len(changes) > max_flips:
        out.append(f"- … and {len(changes) - max_flips} more (the --json output lists all).")
    return out + ["", "</details>", ""]


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
        headers = _headers(comparison)
        out.append("| " + " | ".join(headers) + " |")
        out.append("|---|---|---|" + "---:|" * (len(headers) - 4) + "---|")
        for cell in comparison.cells:
            row = _row(cell, _powered(comparison))
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
    out += _changes_markdown(comparison, max_flips)
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
    for header in _headers(comparison):
        numeric = header in ("n", "Base", "Cand", "Δ", "p", "Agree", "Detectable")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    styles = {"regression": "bold red", "drop, n.s.": "yellow", "improved": "green"}
    for cell in comparison.cells:
        table.add_row(*_row(cell, _powered(comparison)), style=styles.get(cell.verdict, ""))
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
    if comparison.across_definitions:
        console.print(f"{CHANGES_TITLE} ({len(comparison.changes)}):", highlight=False)
        for change in comparison.changes[:max_flips]:
            console.print(f"  {change_line(change)}", highlight=False)
        if len(comparison.changes) > max_flips:
            console.print(f"  … and {len(comparison.changes) - max_flips} more (--json lists all)", highlight=False)
    for note in comparison.notes:
        console.print(f"note: {note}", style="dim", highlight=False)
    colour = {"pass": "green", "regression": "bold red"}.get(comparison.status, "yellow")
    console.print(summary_line(comparison), style=colour, highlight=False)


