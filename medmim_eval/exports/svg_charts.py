"""Hand-written inline SVG charts for the HTML report: score bars with interval whiskers and a chance
line, and paired differences with their intervals around zero. No dependency, no external reference.

Geometry is fixed (``PLOT_H`` pixels for 0-100, bars ``BAR_W`` wide, crisp edges, model colours from
:data:`PALETTE` in model order), so a browser's rendering can be checked pixel by pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

PLOT_H = 200  # pixels from 0 to 100 on the score axis
BAR_W = 28
BAR_GAP = 14
LEFT = 44  # room for the y tick labels
TOP = 38  # room for the title and a value label above a full bar
MAX_LABEL = 36
CHAR_W = 6.2  # average width of a character of the 11px label font, for sizing
FONT = 'font-family="system-ui,Helvetica,Arial,sans-serif" font-size="11"'
# Colour-blind-safe categorical palette (Okabe-Ito without black/yellow), then a few more.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#7f7f7f", "#8c564b", "#17becf",
           "#bcbd22")
CHANCE_COLOUR = "#c0392b"
WHISKER_COLOUR = "#222222"
# Distinct from PALETTE, so a control is never mistaken for a model.
CONTROL_COLOURS = {"blind": "#332288", "noimage": "#117733", "shuffle": "#882255", "single": "#999933"}


@dataclass(frozen=True)
class Bar:
    """One bar: its label, value on 0-100 (``None``: no score) and interval; ``note`` goes in the tooltip."""

    label: str
    value: float | None
    low: float | None = None
    high: float | None = None
    colour: str = PALETTE[0]
    note: str = ""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def model_colours(models: list[str]) -> dict[str, str]:
    """A stable colour per model, in the given order (cycling past the palette)."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


def _interval_text(low: float | None, high: float | None, signed: bool = False) -> str:
    if low is None or high is None:
        return ""
    f = "{:+.1f}" if signed else "{:.1f}"
    return f" [{f.format(low)}, {f.format(high)}]"


def score_chart(title: str, bars: list[Bar], *, chance: list[float | None] | None = None,
                axis_label: str = "score") -> str:
    """Vertical bars on a 0-100 axis with whiskers; ``chance`` (one value per bar) as a dashed red line.

    Where every bar has the same chance level (within 0.05) the line spans the whole plot; otherwise
    each bar gets its own segment.
    """
    label_w = max((len(_short(b.label)) for b in bars), default=0) * CHAR_W
    bottom = int(label_w * 0.58) + 24  # labels are rotated by -35 degrees (sin 35 = 0.57)
    # the first label reaches left of its bar by label_w * cos 35
    left = max(LEFT, int(label_w * 0.82) - BAR_GAP - BAR_W // 2 + 2)
    plot_w = len(bars) * (BAR_W + BAR_GAP) + BAR_GAP
    width = left + plot_w + 64  # the chance label sits right of the plot
    width = max(width, int(len(title) * CHAR_W) + left)
    height = TOP + PLOT_H + bottom
    base = TOP + PLOT_H

    def y(v: float) -> float:
        return base - max(0.0, min(100.0, v)) * PLOT_H / 100

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" {FONT}>',
           f'<text x="{left}" y="16" font-weight="600">{_e(title)}</text>']
    for tick in (0, 25, 50, 75, 100):
        ty = y(tick)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{ty}" y2="{ty}" stroke="#e6e6e6" '
                   'shape-rendering="crispEdges"/>')
        out.append(f'<text x="{left - 6}" y="{ty + 4}" text-anchor="end" fill="#555">{tick}</text>')
    out.append(f'<text transform="translate({left - 30},{TOP + PLOT_H / 2}) rotate(-90)" text-anchor="middle" '
               f'fill="#555">{_e(axis_label)}</text>')
    for i, bar in enumerate(bars):
        x = left + BAR_GAP + i * (BAR_W + BAR_GAP)
        cx = x + BAR_W / 2
        tip = f"{bar.label}: " + ("no score" if bar.value is None else
                                  f"{bar.value:.1f}{_interval_text(bar.low, bar.high)}") + (
            f" ({bar.note})" if bar.note else "")
        out.append(f'<g class="bar"><title>{_e(tip)}</title>')
        if bar.value is None:
            out.append(f'<text x="{cx}" y="{base - 4}" text-anchor="middle" fill="#999">—</text>')
        else:
            top = round(y(bar.value))
            out.append(f'<rect x="{x}" y="{top}" width="{BAR_W}" height="{base - top}" fill="{bar.colour}" '
                       'shape-rendering="crispEdges"/>')
            label_y = top - 4
            if bar.low is not None and bar.high is not None:
                lo, hi = y(bar.low), y(bar.high)
                out.append(f'<path d="M{cx} {lo}V{hi}M{cx - 5} {lo}H{cx + 5}M{cx - 5} {hi}H{cx + 5}" '
                           f'stroke="{WHISKER_COLOUR}" stroke-width="1.5" fill="none"/>')
                label_y = min(label_y, hi - 4)
            out.append(f'<text x="{cx}" y="{max(label_y, TOP - 8)}" text-anchor="middle" fill="#222">'
                       f'{_n(bar.value)}</text>')
        out.append(f'<text transform="translate({cx + 4},{base + 12}) rotate(-35)" text-anchor="end">'
                   f'{_e(_short(bar.label))}</text></g>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{base}" y2="{base}" stroke="#444" '
               'shape-rendering="crispEdges"/>')
    out.extend(_chance_lines(chance or [], len(bars), y, plot_w, left))
    out.append("</svg>")
    return "".join(out)


def _short(label: str) -> str:
    """A label cut to :data:`MAX_LABEL` characters (the full one is in the tooltip)."""
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _chance_lines(chance: list[float | None], n_bars: int, y, plot_w: int, left: int) -> list[str]:  # type: ignore[no-untyped-def]
    known = [c for c in chance if c is not None]
    if not known:
        return []
    style = f'stroke="{CHANCE_COLOUR}" stroke-width="2" stroke-dasharray="6 3" shape-rendering="crispEdges"'
    if max(known) - min(known) <= 0.05:
        cy = round(y(known[0]))
        return [f'<g class="chance"><title>chance level {known[0]:.1f}</title>'
                f'<line x1="{left}" x2="{left + plot_w}" y1="{cy}" y2="{cy}" {style}/>'
                f'<text x="{left + plot_w + 4}" y="{cy + 4}" fill="{CHANCE_COLOUR}">chance</text>'
                f'<text x="{left + plot_w + 4}" y="{cy + 16}" fill="{CHANCE_COLOUR}">{_n(known[0])}</text></g>']
    parts = ['<g class="chance"><title>chance level per bar (items differ)</title>']
    for i, value in enumerate(chance[:n_bars]):
        if value is None:
            continue
        x = left + BAR_GAP + i * (BAR_W + BAR_GAP)
        cy = round(y(value))
        parts.append(f'<line x1="{x - 4}" x2="{x + BAR_W + 4}" y1="{cy}" y2="{cy}" {style}/>')
    return parts + ["</g>"]


@dataclass(frozen=True)
class Delta:
    """One paired difference (control - standard) with its interval, on the score's points."""

    label: str
    value: float | None
    low: float | None
    high: float | None
    colour: str = PALETTE[0]
    note: str = ""


def _nice_limit(extent: float) -> float:
    for step in (5, 10, 20, 25, 50, 100):
        if extent <= step:
            return float(step)
    return 100.0


ROW_H = 22
DELTA_W = 320  # plot width of the difference axis
D_TOP = 26  # room for the title


def delta_chart(title: str, rows: list[Delta]) -> str:
    """Horizontal bars from 0 to each difference with whiskers, on a symmetric axis with a zero line."""
    extent = max([abs(v) for r in rows for v in (r.value, r.low, r.high) if v is not None] or [1.0])
    limit = _nice_limit(extent)
    left = int(max((len(r.label) for r in rows), default=0) * CHAR_W) + 16
    width = max(left + DELTA_W + 70, int(len(title) * CHAR_W) + 16)
    height = D_TOP + len(rows) * ROW_H + 34
    zero = left + DELTA_W / 2

    def x(v: float) -> float:
        return zero + max(-limit, min(limit, v)) * (DELTA_W / 2) / limit

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" {FONT}>',
           f'<text x="8" y="16" font-weight="600">{_e(title)}</text>']
    bottom = D_TOP + len(rows) * ROW_H
    for tick in (-limit, -limit / 2, 0.0, limit / 2, limit):
        tx = x(tick)
        colour = "#444" if tick == 0 else "#e6e6e6"
        out.append(f'<line x1="{tx}" x2="{tx}" y1="{D_TOP}" y2="{bottom}" stroke="{colour}" shape-rendering="crispEdges"/>')
        out.append(f'<text x="{tx}" y="{bottom + 14}" text-anchor="middle" fill="#555">{tick:+g}</text>')
    out.append(f'<text x="{zero}" y="{bottom + 28}" text-anchor="middle" fill="#555">'
               'control − standard (points), 95% paired interval</text>')
    for i, row in enumerate(rows):
        cy = D_TOP + i * ROW_H + ROW_H / 2
        tip = f"{row.label}: " + ("no pairs" if row.value is None else
                                  f"{row.value:+.1f}{_interval_text(row.low, row.high, signed=True)}") + (
            f" ({row.note})" if row.note else "")
        out.append(f'<g class="delta"><title>{_e(tip)}</title>'
                   f'<text x="{left - 8}" y="{cy + 4}" text-anchor="end">{_e(row.label)}</text>')
        if row.value is not None:
            x0, x1 = sorted((zero, x(row.value)))
            out.append(f'<rect x="{round(x0)}" y="{round(cy - 6)}" width="{max(1, round(x1 - x0))}" height="12" '
                       f'fill="{row.colour}" shape-rendering="crispEdges"/>')
            if row.low is not None and row.high is not None:
                lo, hi = x(row.low), x(row.high)
                out.append(f'<path d="M{lo} {cy}H{hi}M{lo} {cy - 5}V{cy + 5}M{hi} {cy - 5}V{cy + 5}" '
                           f'stroke="{WHISKER_COLOUR}" stroke-width="1.5" fill="none"/>')
            out.append(f'<text x="{left + DELTA_W + 8}" y="{cy + 4}" fill="#222">{row.value:+.1f}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)
