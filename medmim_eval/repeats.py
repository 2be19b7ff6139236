"""``run --repeat K``: the same evaluation K times with seeds ``seed .. seed+K-1`` (sampling
settings), each an ordinary run directory ``OUTPUT/repeat-N``; then per cell the mean and spread of
the score across repeats and the share of items whose outcome flips between repeats.

Written to ``OUTPUT/repeats.json``. An item "flips" when its closed outcome (right/wrong) is not
the same in every repeat; for open items, when its answer text is not. Items missing from a repeat
(errors) are left out of the flip count and counted apart.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from medmim_eval.errors import MedmimError
from medmim_eval.records import RESULTS_FILE, RecordStore
from medmim_eval.schema import Results

REPEATS_FILE = "repeats.json"
REPEATS_VERSION = 1


def repeat_dir(output: Path, index: int) -> Path:
    """The run directory of repeat ``index`` (1-based)."""
    return output / f"repeat-{index}"


@dataclass(frozen=True)
class RepeatCell:
    """One model x task x kind across repeats; scores on 0-100."""

    model: str
    task: str
    kind: str
    scores: list[float | None]
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None
    items: int
    flipped: int
    incomplete: int

    @property
    def flip_rate(self) -> float | None:
        return None if not self.items else self.flipped / self.items


def _results(run: Path) -> Results:
    path = run / RESULTS_FILE
    try:
        return Results.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise MedmimError(f"{path}: cannot read this repeat's results ({exc}); rerun the same command to finish it") from None


def _outcome(record: Any) -> Any:
    if getattr(record, "error", None) is not None:
        return None
    if record.kind == "closed":
        return record.correct
    return record.output


def summarize(runs: list[Path]) -> list[RepeatCell]:
    """Per-cell spread and flips across the repeat run directories ``runs`` (in repeat order)."""
    if len(runs) < 2:
        raise MedmimError("a repeat summary needs at least two repeats")
    scores: dict[tuple[str, str, str], list[float | None]] = {}
    for i, run in enumerate(runs):
        for cell in _results(run).cells:
            scores.setdefault((cell.model, cell.task, cell.kind), [None] * len(runs))[i] = cell.score
    outcomes: dict[tuple[str, str, str], dict[str, list[Any]]] = {}
    for i, run in enumerate(runs):
        for (model, key), record in RecordStore(run).load(repair=False).items():
            per_item = outcomes.setdefault((model, record.task, record.kind), {})
            per_item.setdefault(key, [None] * len(runs))[i] = _outcome(record)
    cells = []
    for (model, task, kind), values in sorted(scores.items()):
        present = [v for v in values if v is not None]
        items = outcomes.get((model, task, kind), {})
        complete = [v for v in items.values() if all(o is not None for o in v)]
        cells.append(RepeatCell(
            model=model, task=task, kind=kind, scores=values,
            mean=mean(present) if present else None, sd=stdev(present) if len(present) > 1 else None,
            low=min(present) if present else None, high=max(present) if present else None,
            items=len(complete), flipped=sum(len(set(map(str, v))) > 1 for v in complete),
            incomplete=len(items) - len(complete)))
    return cells


def write_summary(output: Path, runs: list[Path], cells: list[RepeatCell], settings: dict[str, Any]) -> Path:
    """``OUTPUT/repeats.json``: the settings, the repeat directories and every cell."""
    path = output / REPEATS_FILE
    data = {"version": REPEATS_VERSION, "settings": settings, "repeats": [str(r.relative_to(output)) for r in runs],
            "definition": {"sd": "sample standard deviation of the cell score across repeats",
                           "flip_rate": "closed: share of items whose right/wrong outcome differs between repeats; "
                                        "open: share whose answer text differs; items errored in any repeat excluded"},
            "cells": [asdict(c) | {"flip_rate": c.flip_rate} for c in cells]}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def summary_lines(cells: list[RepeatCell], k: int) -> list[str]:
    """A plain-text table for the console (works in a CI log)."""
    def num(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}"

    lines = [f"Across {k} repeats: mean ± sd [min, max] of each cell, and the share of items whose outcome flips",
             f"{'model':<20} {'task':<24} {'kind':<6} {'mean':>7} {'sd':>6} {'range':>16} {'flips':>14}"]
    for c in cells:
        rate = "—" if c.flip_rate is None else f"{100 * c.flip_rate:.1f}% ({c.flipped}/{c.items})"
        lines.append(f"{c.model:<20} {c.task:<24} {c.kind:<6} {num(c.mean):>7} {num(c.sd):>6} "
                     f"{'[' + num(c.low) + ', ' + num(c.high) + ']':>16} {rate:>14}")
    return lines
