"""The chart sections of the HTML report: per task and kind the models' scores (bars, 95% interval
whiskers, chance line), and per task and kind the image controls' paired differences (see
:mod:`medmim_eval.exports.svg_charts`). Tasks without any cell get no chart."""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from medmim_eval.exports.svg_charts import CONTROL_COLOURS, PALETTE, Bar, Delta, delta_chart, model_colours, score_chart
from medmim_eval.schema import ResultCell

if TYPE_CHECKING:
    from medmim_eval.view_model import LeaderboardView

KIND_AXIS = {"closed": "accuracy (%)", "open": "open score (0-100)"}


def tasks_with_data(view: "LeaderboardView") -> list[str]:
    """The tasks of the view's tables, in table order, that have at least one cell."""
    present = {c.task for c in view.cells}
    ordered = dict.fromkeys(c.task for t in view.tables for c in t.columns)
    return [task for task in ordered if task in present] + sorted(present - set(ordered))


def _bar(cell: ResultCell, label: str, colour: str) -> Bar:
    note = f"n={cell.n}, scored {cell.n_scored}" + (f", {cell.errors} errors" if cell.errors else "")
    return Bar(label=label, value=cell.score, low=cell.ci_low, high=cell.ci_high, colour=colour, note=note)


def score_charts(view: "LeaderboardView") -> str:
    """A chart per task with data and kind present, in table order; a bar per model (x source)."""
    cells = view.cells
    colours = model_colours(sorted({c.model for c in cells}))
    figures = []
    for task in tasks_with_data(view):
        for kind in ("closed", "open"):
            mine = sorted((c for c in cells if c.task == task and c.kind == kind),
                          key=lambda c: (c.source or "", c.model))
            if not mine:
                continue
            bars = [_bar(c, f"{c.model} · {c.source}" if view.by_source and c.source else c.model, colours[c.model])
                    for c in mine]
            chance = [c.chance for c in mine] if kind == "closed" else None
            title = f"{task} — {kind}"
            figures.append(f'<figure data-task="{escape(task, quote=True)}" data-kind="{kind}">'
                           f"{score_chart(title, bars, chance=chance, axis_label=KIND_AXIS[kind])}</figure>")
    if not figures:
        return ""
    return ('<p class="note">Bars: score per model; whiskers: 95% cluster-bootstrap interval; dashed red line: '
            f'chance level (closed questions). Hover a bar for its numbers.</p><div class="charts">{"".join(figures)}</div>')


def control_charts(report: Any) -> str:
    """Per task and kind of a :class:`medmim_eval.control_view.ControlReport`: each model x control's
    paired difference from the standard score, with its interval."""
    groups: dict[tuple[str, str], list[Delta]] = {}
    for c in report.cells:
        subset = "" if c.subset == "all" else f" ({c.subset})"
        note = f"n={c.n} pairs, {c.n_clusters} clusters; standard {c.standard:.1f}, control {c.score:.1f}" \
            if c.standard is not None and c.score is not None else f"n={c.n}"
        groups.setdefault((c.task, c.kind), []).append(
            Delta(label=f"{c.model} @{c.control}{subset}", value=c.delta, low=c.ci_low, high=c.ci_high,
                  colour=CONTROL_COLOURS.get(c.control, PALETTE[-1]), note=note))
    figures = [f'<figure data-task="{escape(task, quote=True)}" data-kind="{kind}">'
               f"{delta_chart(f'{task} — {kind}: control − standard', rows)}</figure>"
               for (task, kind), rows in groups.items()]
    if not figures:
        return ""
    legend = " ".join(f'<span class="swatch" style="background:{colour}"></span>@{name}'
                      for name, colour in CONTROL_COLOURS.items())
    return (f'<p class="note">Paired differences (control − standard) with their 95% clustered paired-bootstrap '
            f"intervals; left of 0: the control lowers the score. {legend}</p>"
            f'<div class="charts">{"".join(figures)}</div>')
