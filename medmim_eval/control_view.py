"""The controls view: each control's score beside the standard one, their paired difference with a
clustered paired-bootstrap interval, and a per model x task verdict on whether the model uses the images.

Records of the given run directories are pooled (a control may have run in another directory than
its standard task); a control's record ``KEY@CONTROL`` pairs with the standard record ``KEY`` of the
same model. The interval is :func:`medmim_eval.compare_stats.paired_delta_ci`, the one ``compare``
uses, clustered by the standard item's image set. ``@shuffle`` is reported on two subsets: items
whose question names an image by its place (their right answer is no longer right: a drop is
expected) and the others.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from medmim_eval.compare_stats import paired_delta_ci
from medmim_eval.controls import CONTROLS, IMAGE_REMOVING, POSITION_RULE, POSITION_RULE_VERSION, base_key, base_task
from medmim_eval.run_reader import RunDirectory
from medmim_eval.schema import SampleRecord
from medmim_eval.stats import BootstrapSettings, chance_level, cluster_bootstrap_ci

Subset = Literal["all", "position-referring", "order-free"]
UsesImages = Literal["yes", "no", "not measurable"]
VERDICT_RULE = (
    "yes: the paired difference of @blind or @noimage from the standard run has its 95% interval entirely "
    "below 0 in some kind (closed or open); no: at least one such difference could measure it (2+ scored "
    "pairs and, for closed questions, the standard accuracy's interval above chance) and none is significantly "
    "below 0; not measurable: otherwise (no @blind/@noimage pairs, or the model is not above chance)"
)
CONTROL_VIEW_VERSION = 1


def definition() -> dict[str, Any]:
    """What the manifest records about the controls and their view (``metrics.controls``)."""
    return {"version": CONTROL_VIEW_VERSION, "controls": dict(CONTROLS),
            "task_name": "TASK@CONTROL; record keys KEY@CONTROL",
            "difference": "control - standard score, per model, task and kind, over the items scored in both "
                          "(record KEY@CONTROL paired with KEY)",
            "interval": "95% percentile paired bootstrap resampling the standard items' image sets "
                        "(the method of compare), seeded by the run's seed",
            "verdict": VERDICT_RULE, "image_removing": list(IMAGE_REMOVING),
            "position_rule": {"version": POSITION_RULE_VERSION, "rule": POSITION_RULE}}


@dataclass(frozen=True)
class ControlCell:
    """One model x task x kind x control (x subset for ``@shuffle``), scores on 0-100.

    ``delta`` is control - standard over the ``n`` scored pairs; ``ci_low``/``ci_high`` bound its
    paired cluster-bootstrap interval (``None`` below two pairs); ``flagged`` counts control samples
    not sent for their image count (e.g. ``@noimage`` on a model that needs an image).
    """

    model: str
    task: str
    kind: str
    control: str
    subset: Subset
    n: int
    standard: float | None
    score: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    n_clusters: int = 0
    flagged: int = 0
    informative: bool = False


@dataclass(frozen=True)
class ImageUse:
    model: str
    task: str
    verdict: UsesImages
    reason: str


@dataclass
class ControlReport:
    cells: list[ControlCell] = field(default_factory=list)
    verdicts: list[ImageUse] = field(default_factory=list)
    rule: str = VERDICT_RULE
    position_rule: str = POSITION_RULE

    def as_dict(self) -> dict[str, Any]:
        return {"cells": [asdict(c) for c in self.cells], "verdicts": [asdict(v) for v in self.verdicts],
                "rule": self.rule, "position_rule": self.position_rule}


def _value(record: SampleRecord) -> float | None:
    if record.error is not None:
        return None
    if record.kind == "closed":
        return None if record.correct is None else (100.0 if record.correct else 0.0)
    return None if record.scores_pending else record.scores.get("open_score")


def pooled_records(run_dirs: list[Path]) -> tuple[dict[tuple[str, str], SampleRecord], int]:
    """Every record of the runs by (model, key), later runs winning; and the first run's seed."""
    records: dict[tuple[str, str], SampleRecord] = {}
    seed = None
    for run_dir in run_dirs:
        run = RunDirectory(run_dir)
        manifest = run.manifest()
        seed = seed if seed is not None else (manifest.seed if manifest else 0)
        records.update(run.records())
    return records, seed or 0


def control_report(run_dirs: list[Path], settings: BootstrapSettings | None = None) -> ControlReport:
    records, seed = pooled_records(run_dirs)
    settings = settings or BootstrapSettings(seed=seed)
    pairs: dict[tuple[str, str, str, str, Subset], list[tuple[SampleRecord, SampleRecord]]] = defaultdict(list)
    flagged: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for (model, key), record in records.items():
        control = record.control
        if control not in CONTROLS:
            continue
        standard = records.get((model, base_key(key)))
        task = base_task(record.task)
        if record.error is not None and record.error.type in ("TooManyImagesError", "TooFewImagesError"):
            flagged[(model, task, record.kind, control)] += 1
        if standard is None or _value(standard) is None or _value(record) is None:
            continue
        subset: Subset = "all"
        if control == "shuffle":
            subset = "position-referring" if record.refers_to_position else "order-free"
        pairs[(model, task, record.kind, control, subset)].append((standard, record))
    report = ControlReport()
    for (model, task, kind, control, subset), items in sorted(pairs.items(), key=lambda kv: _order(kv[0])):
        report.cells.append(_cell(model, task, kind, control, subset, items, settings,
                                  flagged.get((model, task, kind, control), 0)))
    models_tasks = sorted({(c.model, c.task) for c in report.cells}
                          | {(m, base_task(r.task)) for (m, _), r in records.items() if r.control in CONTROLS})
    report.verdicts = [uses_images(model, task, [c for c in report.cells if (c.model, c.task) == (model, task)])
                       for model, task in models_tasks]
    return report


def _order(key: tuple[str, str, str, str, str]) -> tuple[Any, ...]:
    model, task, kind, control, subset = key
    return (model, task, kind, list(CONTROLS).index(control), subset)


def _cell(model: str, task: str, kind: str, control: str, subset: Subset,
          items: list[tuple[SampleRecord, SampleRecord]], settings: BootstrapSettings, flagged: int) -> ControlCell:
    standard = [_value(s) or 0.0 for s, _ in items]
    scores = [_value(c) or 0.0 for _, c in items]
    clusters = [s.image_set or s.key for s, _ in items]
    interval = paired_delta_ci(standard, scores, clusters, settings)
    n = len(items)
    base_score, score = sum(standard) / n, sum(scores) / n
    informative = n >= 2
    if kind == "closed" and informative:
        chance = chance_level([s.n_options or 0 for s, _ in items])
        standard_ci = cluster_bootstrap_ci(standard, clusters, settings)
        informative = chance is None or (standard_ci is not None and standard_ci[0] > chance)
    return ControlCell(model=model, task=task, kind=kind, control=control, subset=subset, n=n, standard=base_score,
                       score=score, delta=score - base_score, ci_low=interval[0] if interval else None,
                       ci_high=interval[1] if interval else None, n_clusters=len(set(clusters)), flagged=flagged,
                       informative=informative)


def uses_images(model: str, task: str, cells: list[ControlCell]) -> ImageUse:
    """The verdict of :data:`VERDICT_RULE` for one model and task."""
    removing = [c for c in cells if c.control in IMAGE_REMOVING]
    drops = [c for c in removing if c.ci_high is not None and c.ci_high < 0]
    if drops:
        c = drops[0]
        return ImageUse(model, task, "yes", f"@{c.control} {c.kind}: {c.delta:+.1f} [{c.ci_low:+.1f}, {c.ci_high:+.1f}]")
    measured = [c for c in removing if c.informative and c.ci_high is not None]
    if measured:
        c = measured[0]
        return ImageUse(model, task, "no", f"@{c.control} {c.kind}: {c.delta:+.1f} [{c.ci_low:+.1f}, {c.ci_high:+.1f}] "
                        "includes 0")
    why = "no scored @blind/@noimage pairs" if not removing else "standard score not above chance"
    return ImageUse(model, task, "not measurable", why)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _interval(cell: ControlCell) -> str:
    if cell.ci_low is None or cell.ci_high is None:
        return "—"
    return f"[{cell.ci_low:+.1f}, {cell.ci_high:+.1f}]"


HEADERS = ("Model", "Task", "Kind", "Control", "Items", "n", "Standard", "Control score", "Δ", "95% CI", "Flagged")


def table_rows(report: ControlReport) -> list[list[str]]:
    """One row of strings per cell, in :data:`HEADERS` order."""
    return [[c.model, c.task, c.kind, f"@{c.control}", c.subset, str(c.n), _fmt(c.standard), _fmt(c.score),
             _fmt(c.delta, signed=True), _interval(c), str(c.flagged)] for c in report.cells]


def verdict_lines(report: ControlReport) -> list[str]:
    lines = [f"{v.model} · {v.task}: uses the images: {v.verdict} ({v.reason})" for v in report.verdicts]
    return lines + [f"Rule: {report.rule}.", f"Position-referring items (@shuffle): {report.position_rule}."]


def to_markdown(report: ControlReport) -> str:
    out = ["## Image controls", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    return "\n".join(out + [""] + [f"- {line}" for line in verdict_lines(report)]) + "\n"


def print_rich(report: ControlReport, console: Any | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="Image controls (Δ = control − standard, paired cluster bootstrap)")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("Model", "Task", "Control", "Items") else "right")
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
    for line in verdict_lines(report):
        console.print(line, highlight=False, markup=False)


def to_html(report: ControlReport) -> str:
    """The controls section of the HTML report (a table and the verdict lines)."""
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in table_rows(report))
    notes = "".join(f"<li>{escape(line)}</li>" for line in verdict_lines(report))
    return (f'<h2>Image controls</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<ul class="notes">{notes}</ul>')
