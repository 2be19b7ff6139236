"""The HTML report: ONE self-contained file (inline CSS, no script, no external URL of any kind).

Sections: the leaderboard tables (best bold, second underlined, intervals with ``--ci``), the
footer (metric definitions), inline SVG charts per task (:mod:`medmim_eval.exports.html_charts`;
the controls' paired differences too with ``--controls``), per-task details of the tasks with data
(n, CI, chance, best shortcut, unparseable rate, errors), the benchmark card of the reloaded tasks (:mod:`medmim_eval.exports.html_card`) and the
per-sample drill-down with embedded thumbnails (see :mod:`medmim_eval.exports.html_records`).
Nothing from the manifest beyond task names is shown: no model specs, URLs or keys.
"""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import TYPE_CHECKING

from medmim_eval import __version__
from medmim_eval.exports.drilldown import load_run_samples, record_groups
from medmim_eval.exports.html_charts import control_charts, score_charts, tasks_with_data
from medmim_eval.exports.html_records import group_details
from medmim_eval.exports.thumbnails import THUMB_PX, ThumbnailSheet
from medmim_eval.view_model import KIND_LETTER, MISSING, Table, fmt, fmt_interval
from medmim_eval.exports.html_card import card_html
from medmim_eval.exports.html_contamination import contamination_section
from medmim_eval.schema import ResultCell, Sample

if TYPE_CHECKING:
    from medmim_eval.datadir import DataPaths
    from medmim_eval.view_model import LeaderboardView
    from medmim_eval.plugins import PluginHost

DEFAULT_MAX_RECORDS = 200
TOO_MANY_TITLE = "of errors: more images than the model accepts; not sent, never truncated"
CSS = f"""
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.5rem;
color:#1b1b1b;max-width:1600px}}
h1{{font-size:1.5rem}} h2{{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}} h3{{font-size:1rem}}
table{{border-collapse:collapse;margin:.5rem 0;font-variant-numeric:tabular-nums}}
th,td{{padding:.25rem .5rem;border-bottom:1px solid #e4e4e4;text-align:right;vertical-align:top}}
th{{background:#f6f6f6}} td:first-child,th:first-child{{text-align:left}}
td small{{display:block;color:#666}} .best{{font-weight:700}} .second{{text-decoration:underline}}
.notes li,.note{{color:#555;font-size:.9rem}} .warn{{color:#a0521b;font-weight:600}}
details{{margin:.4rem 0;border:1px solid #ddd;border-radius:4px;padding:.3rem .6rem}}
summary{{cursor:pointer;font-weight:600}} summary small{{font-weight:400;color:#666}}
.rec{{display:flex;gap:.8rem;border-top:1px solid #eee;padding:.5rem 0}}
.rec dl{{display:grid;grid-template-columns:8rem 1fr;margin:0;gap:.1rem .6rem;flex:1}}
.rec dt{{color:#666}} .rec dd{{margin:0}} pre{{white-space:pre-wrap;margin:0;font-size:.85rem}}
.thumbs{{display:flex;gap:4px;flex-wrap:wrap;width:{3 * THUMB_PX + 12}px;flex-shrink:0}}
.thumbs.none{{color:#999;font-size:.8rem}}
.th{{display:inline-block;width:{THUMB_PX}px;height:{THUMB_PX}px;border:1px solid #ccc;background-size:contain;
background-repeat:no-repeat;background-position:center;-webkit-print-color-adjust:exact;print-color-adjust:exact}}
.th.miss{{font-size:.7rem;color:#a00;text-align:center}}
.tag{{padding:0 .4rem;border-radius:3px}} .tag.ok{{background:#dff3df}} .tag.bad{{background:#f8dede}}
.tag.err{{background:#fbe8c8}} .tag.open{{background:#e6eefa}}
tr.ref td{{font-style:italic;color:#555;background:#fafafa}}
.charts{{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}} figure{{margin:.3rem 0}}
svg.chart{{display:block;overflow:visible}}
.swatch{{display:inline-block;width:.8rem;height:.8rem;margin:0 .2rem 0 .6rem;vertical-align:middle}}
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _table_html(table: Table, ci: bool) -> str:
    columns = table.columns
    group_row: list[str] = []
    label_row: list[str] = []
    for attr, row in (("group", group_row), ("title", label_row)):
        spans: list[list[object]] = []
        for column in columns:
            key = (column.group, getattr(column, attr))
            if spans and spans[-1][0] == key:
                spans[-1][1] = int(spans[-1][1]) + 1  # type: ignore[call-overload]
            else:
                spans.append([key, 1])
        row.extend(f'<th colspan="{n}">{_e(key[1])}</th>' for key, n in spans)  # type: ignore[index]
    head = (f'<tr><th rowspan="3">Model</th>{"".join(group_row)}</tr><tr>{"".join(label_row)}</tr>'
            f'<tr>{"".join(f"<th>{KIND_LETTER[c.kind]}</th>" for c in columns)}</tr>')
    marks = [table.ranks(i) for i in range(len(columns))]
    body = []
    for model, values in table.rows.items():
        cells = []
        for i, value in enumerate(values):
            best, second = marks[i]
            css = "best" if value is not None and model in best else "second" if value is not None and model in second else ""
            extra = _e(table.marker(model, i))
            if ci and value is not None and table.interval(model, i):
                extra += f"<small>{fmt_interval(table.interval(model, i))}</small>"
            cells.append(f'<td class="{css}">{_e(fmt(value))}{extra}</td>' if css else f"<td>{_e(fmt(value))}{extra}</td>")
        row_class = f' class="ref {table.reference[model]}"' if model in table.reference else ""
        body.append(f"<tr{row_class}><td>{_e(model)}</td>{''.join(cells)}</tr>")
    notes = "".join(f"<li>{_e(n)}</li>" for n in table.notes)
    return (f"<h3>{_e(table.title)}</h3><table class=\"board\"><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
            f'<ul class="notes">{notes}</ul>')


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def _details_html(view: "LeaderboardView") -> str:
    """One table per task with data: every model x kind (x source) cell with its counts and statistics."""
    order = tasks_with_data(view)
    by_task: dict[str, list[ResultCell]] = {}
    for cell in view.cells:
        by_task.setdefault(cell.task, []).append(cell)
    parts = []
    source_head = "<th>Source</th>" if view.by_source else ""
    for task in order:
        rows = []
        for c in sorted(by_task.get(task, []), key=lambda c: (c.model, c.kind, c.source or "")):
            source = f"<td>{_e(c.source or '')}</td>" if view.by_source else ""
            interval = fmt_interval((c.ci_low, c.ci_high)) if c.ci_low is not None and c.ci_high is not None else MISSING
            rows.append(f"<tr><td>{_e(c.model)}</td><td>{_e(c.kind)}</td>{source}<td>{c.n}</td><td>{c.n_scored}</td>"
                        f"<td>{fmt(c.score)}</td><td>{interval}</td><td>{fmt(c.chance)}</td><td>{fmt(c.chance_normalised)}</td>"
                        f"<td>{_e(c.shortcut_rule or '')} {fmt(c.shortcut)}</td><td>{fmt(c.shortcut_normalised)}</td>"
                        f"<td>{_pct(c.unparseable_rate)}</td><td>{c.errors}</td><td>{c.too_many_images}</td>"
                        f"<td>{c.n_clusters}</td></tr>")
        parts.append(f"<h3>{_e(task)}</h3><table><thead><tr><th>Model</th><th>Kind</th>{source_head}<th>n</th>"
                     "<th>scored</th><th>score</th><th>95% CI</th><th>chance</th><th>chance-norm.</th>"
                     "<th>best shortcut</th><th>shortcut-norm.</th>"
                     f"<th>unparseable</th><th>errors</th><th title=\"{TOO_MANY_TITLE}\">too many images</th>"
                     f"<th>clusters</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return "".join(parts)


def _records_html(view: "LeaderboardView", host: "PluginHost | None", data: "DataPaths | None",
                  max_records: int, sheet: ThumbnailSheet, reloaded: dict[str, Sample]) -> str:
    """The drill-down; the task samples it reloads are added to ``reloaded`` (for the benchmark card)."""
    if max_records == 0:
        return '<p class="note">Drill-down disabled (--max-records 0).</p>'
    parts: list[str] = []
    problems: list[str] = []
    for run in view.runs:
        groups = record_groups(run)
        if not groups:
            problems.append(f"{run.run_dir.name}: no samples.jsonl, so there are no records to show")
            continue
        samples = {}
        if host is not None and data is not None:
            loaded = load_run_samples(run.run_dir, {g.task for g in groups}, host, data)
            samples, problems = loaded.samples, problems + loaded.problems
            reloaded.update(samples)
        else:
            problems.append(f"{run.run_dir.name}: tasks not reloaded; records are shown without prompts and thumbnails")
        parts.extend(group_details(g, samples, sheet, max_records) for g in groups)
    if sheet.failures:
        problems.append(f"{len(sheet.failures)} image(s) could not be read for thumbnails, e.g. "
                        f"{next(iter(sheet.failures))} ({next(iter(sheet.failures.values()))})")
    notes = "".join(f'<li class="warn">{_e(p)}</li>' for p in problems)
    return (f'<ul class="notes">{notes}</ul>' if notes else "") + "".join(parts)


def _controls_html(view: "LeaderboardView") -> str:
    if view.controls is None:
        return ""
    from medmim_eval.control_view import to_html as controls_html

    return f'<section id="controls">{controls_html(view.controls)}{control_charts(view.controls)}</section>\n'


def to_html(view: "LeaderboardView", *, host: "PluginHost | None" = None, data: "DataPaths | None" = None,
            max_records: int = DEFAULT_MAX_RECORDS) -> str:
    """The whole report as one HTML document.

    Args:
        view: the leaderboard view (tables, footer, runs).
        host, data: plugin host and data folders to reload tasks for prompts and thumbnails; without
            them records are listed without either.
        max_records: records listed per model x task (the rest are counted, not shown).
    """
    sheet = ThumbnailSheet()
    reloaded: dict[str, Sample] = {}
    records = _records_html(view, host, data, max_records, sheet, reloaded)
    card = (card_html(reloaded.values()) if reloaded else
            '<p class="note">Task data not reloaded (no --data-dir, or --max-records 0): no benchmark card.</p>')
    footer = "".join(f'<li{" class=warn" if line.startswith("WARNING") else ""}>{_e(line.strip())}</li>'
                     for line in view.footer)
    runs = ", ".join(f"{_e(run.run_dir.name)} (run id {_e(run.run_id)})" for run in view.runs)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    mode = (" Closed columns show chance-normalised accuracy." if view.chance else
            " Closed columns show the margin over the best text-only shortcut." if view.shortcuts else "")
    tables = "".join(_table_html(t, view.ci) for t in view.tables)
    charts = score_charts(view) or '<p class="note">No scores to chart.</p>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>medmim-eval leaderboard</title>
<style>{CSS}
{sheet.css()}</style></head>
<body>
<h1>medmim-eval leaderboard</h1>
<p class="note">Runs: {runs}. Generated {stamp} by medmim-eval {_e(__version__)}.{mode}</p>
<nav><a href="#tables">Tables</a> · <a href="#charts">Charts</a> · <a href="#details">Per-task details</a> · <a href="#card">Benchmark card</a> · <a href="#records">Sample records</a></nav>
<section id="tables"><h2>Leaderboard</h2>{tables}<ul class="notes">{footer}</ul></section>
<section id="charts"><h2>Scores by task</h2>{charts}</section>
{_controls_html(view)}<section id="details"><h2>Per-task details</h2>{_details_html(view)}</section>
<section id="card"><h2>Benchmark card</h2>{card}</section>
{contamination_section(view)}<section id="records"><h2>Sample records</h2>{records}</section>
</body></html>
"""
