"""Renderers of a :class:`medmim_eval.leaderboard.LeaderboardView` into files.

One small module per format; each imports only what it needs (PIL only for the HTML report), so
``medmim-eval leaderboard`` stays light. :func:`render` picks the module by format name.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medmim_eval.view_model import LeaderboardView

TEXT_FORMATS = ("markdown", "csv", "json", "latex", "html")


def render(fmt: str, view: "LeaderboardView", **options: Any) -> str:
    """The view as text in ``fmt`` (one of :data:`TEXT_FORMATS`); ``options`` go to the HTML report."""
    if fmt == "markdown":
        from medmim_eval.exports.text_export import to_markdown

        text = to_markdown(view.tables, ci=view.ci, footer=view.footer)
        if view.controls is not None:
            from medmim_eval.control_view import to_markdown as controls_markdown

            text += "\n" + controls_markdown(view.controls)
        return text
    if fmt == "csv":
        from medmim_eval.exports.csv_export import to_csv

        return to_csv(view)
    if fmt == "json":
        from medmim_eval.exports.json_export import to_json

        return to_json(view)
    if fmt == "latex":
        from medmim_eval.exports.latex_export import to_latex

        return to_latex(view)
    if fmt == "html":
        from medmim_eval.exports.html_report import to_html

        return to_html(view, **options)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(TEXT_FORMATS)}")
