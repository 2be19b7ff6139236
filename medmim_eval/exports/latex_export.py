"""LaTeX export: booktabs tables in the Table-1 layout, ready for ``\\input`` (needs ``booktabs``).

Group headers (Held-in / Held-out), task headers and C/O columns use ``\\multicolumn`` with
``\\cmidrule``; the best value of each column is ``\\textbf``, the second ``\\underline``, a missing
value ``--``. Model names, titles and notes are escaped.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from medmim_eval.exports.text_export import PLAIN_GROUPS
from medmim_eval.view_model import KIND_LETTER, Table, fmt

if TYPE_CHECKING:
    from medmim_eval.view_model import LeaderboardView

LATEX_MISSING = "--"
_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "—": "---", "–": "--", "·": r"\textperiodcentered{}", "…": r"\ldots{}",
    "†": r"\textdagger{}", "Δ": r"$\Delta$", "−": "--",
}


def latex_escape(text: str) -> str:
    """``text`` with every LaTeX special character made literal."""
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


def _number(value: float | None) -> str:
    text = fmt(value)
    if value is None:
        return LATEX_MISSING
    return f"$-${text[1:]}" if text.startswith("-") else text


def _spans(labels: list[str]) -> list[tuple[str, int, int]]:
    """Runs of equal consecutive labels as (label, first column, last column), 1-based after Model."""
    spans: list[tuple[str, int, int]] = []
    for i, label in enumerate(labels, start=2):
        if spans and spans[-1][0] == label:
            spans[-1] = (label, spans[-1][1], i)
        else:
            spans.append((label, i, i))
    return spans


def _header_row(spans: list[tuple[str, int, int]]) -> list[str]:
    cells = " & ".join(f"\\multicolumn{{{last - first + 1}}}{{c}}{{{latex_escape(label)}}}" for label, first, last in spans)
    rules = " ".join(f"\\cmidrule(lr){{{first}-{last}}}" for _, first, last in spans)
    return [f" & {cells} \\\\", rules]


def table_to_latex(table: Table, *, ci: bool = False, footer: list[str] | None = None) -> str:
    """One ``table`` float: caption, booktabs rules, grouped headers, marked best/second."""
    columns = table.columns
    lines = [
        "\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(table.title)}}}", "\\small",
        "\\begin{tabular}{l" + "c" * len(columns) + "}", "\\toprule",
    ]
    if any(c.group not in PLAIN_GROUPS for c in columns):
        lines += _header_row(_spans([c.group for c in columns]))
    # Key task spans by (group, title) so equal titles in two groups stay apart.
    task_spans = _spans([f"{c.group}\x00{c.title}" for c in columns])
    lines += _header_row([(label.split("\x00", 1)[1], first, last) for label, first, last in task_spans])
    lines.append("Model & " + " & ".join(KIND_LETTER[c.kind] for c in columns) + " \\\\")
    lines.append("\\midrule")
    marks = [table.ranks(i) for i in range(len(columns))]
    for model, values in table.rows.items():
        cells = []
        for i, value in enumerate(values):
            text = _number(value)
            best, second = marks[i]
            if value is not None and model in best:
                text = f"\\textbf{{{text}}}"
            elif value is not None and model in second:
                text = f"\\underline{{{text}}}"
            text += table.marker(model, i)
            interval = table.interval(model, i) if ci and value is not None else None
            if interval is not None:
                text += f"\\,{{\\scriptsize[{_number(interval[0])}, {_number(interval[1])}]}}"
            cells.append(text)
        label = f"\\textit{{{latex_escape(model)}}}" if model in table.reference else latex_escape(model)
        lines.append(f"{label} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    notes = [*table.notes, *(footer or [])]
    if notes:
        lines.append("\\par\\smallskip")
        lines.append("{\\footnotesize " + " \\\\\n".join(latex_escape(n.strip()) for n in notes) + "\\par}")
    lines.append("\\end{table}")
    return "\n".join(lines)


def to_latex(view: "LeaderboardView") -> str:
    """Every table of the view, each with its notes and the footer (metric definitions)."""
    head = "% medmim-eval leaderboard; needs \\usepackage{booktabs}\n"
    return head + "\n\n".join(table_to_latex(t, ci=view.ci, footer=view.footer) for t in view.tables) + "\n"
