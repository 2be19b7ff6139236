"""The contamination section of the HTML report: the audit a run excluded by (``contamination.json``
in its run directory, written by ``run --exclude-contaminated``), or one audit as a page of its own
(``audit contamination --format html``)."""
from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from medmim_eval.contamination import LABELS, ContaminationAudit
from medmim_eval.exclusion import AUDIT_COPY

if TYPE_CHECKING:
    from medmim_eval.view_model import LeaderboardView


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def audit_html(report: ContaminationAudit) -> str:
    """One table (count and % per flag and task), the example keys and the definitions."""
    files = ", ".join(Path(f["path"]).name for f in report.train_files)
    heads = "".join(f"<th>{_e(h)}</th>" for h in LABELS.values())
    rows = []
    for t in report.tasks:
        cells = "".join(f"<td>{t.counts.get(f, 0)}<small>{t.percent.get(f, 0.0):.1f}%</small></td>" for f in LABELS)
        rows.append(f"<tr><td>{_e(t.task)}</td><td>{t.n_items}</td>{cells}"
                    f"<td>{t.images.get('here', 0)} / {t.images.get('absent', 0)}</td></tr>")
    examples = "".join(f"<li>{_e(t.task)}: {_e(', '.join(t.examples['contaminated']))}</li>"
                       for t in report.tasks if t.examples.get("contaminated"))
    definitions = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in report.definitions.items())
    notes = "".join(f'<li class="warn">{_e(n)}</li>' for n in report.notes)
    return (f'<p class="note">Benchmark items found in {report.train_items} training items ({_e(files)}).</p>'
            f"<table><thead><tr><th>Task</th><th>items</th>{heads}<th>images here / absent</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            + (f'<h3>Example keys (contaminated)</h3><ul class="notes">{examples}</ul>' if examples else "")
            + f'<details><summary>Definitions</summary><ul class="notes">{definitions}</ul></details>'
            + (f'<ul class="notes">{notes}</ul>' if notes else ""))


def run_audits(run_dirs: Iterable[Path]) -> list[tuple[Path, ContaminationAudit | None]]:
    """The audit copied into each run directory that has one (None where the copy is unreadable)."""
    found = []
    for run_dir in run_dirs:
        path = run_dir / AUDIT_COPY
        if path.is_file():
            try:
                found.append((run_dir, ContaminationAudit.model_validate_json(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                found.append((run_dir, None))
    return found


def contamination_section(view: "LeaderboardView") -> str:
    """``<section id="contamination">`` for runs that excluded contaminated items; empty when none did."""
    parts = []
    for run_dir, report in run_audits(run.run_dir for run in view.runs):
        body = audit_html(report) if report is not None else f'<p class="warn">{_e(AUDIT_COPY)} is unreadable.</p>'
        parts.append(f"<h3>{_e(run_dir.name)}: the audit its clean subset excludes by</h3>{body}")
    if not parts:
        return ""
    return f'<section id="contamination"><h2>Contamination audit</h2>{"".join(parts)}</section>\n'


def standalone_html(report: ContaminationAudit) -> str:
    """The audit as a self-contained page (``audit contamination --format html``)."""
    from medmim_eval.exports.html_report import CSS

    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>medmim-eval contamination audit'
            f"</title><style>{CSS}</style></head><body><h1>Contamination audit</h1>"
            f'<section id="contamination">{audit_html(report)}</section></body></html>\n')
