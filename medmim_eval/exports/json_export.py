"""JSON export: long-format rows plus the metric and bootstrap definitions of every run."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from medmim_eval import __version__
from medmim_eval.exports.metric_notes import definitions_agree
from medmim_eval.exports.rows import COLUMNS, long_rows

if TYPE_CHECKING:
    from medmim_eval.view_model import LeaderboardView

FORMAT_NAME = "medmim-eval leaderboard"
FORMAT_VERSION = 1


def to_dict(view: "LeaderboardView") -> dict[str, Any]:
    """The export as plain data.

    Keys: ``format``/``version``; ``harness_version``; ``by_source``; ``runs`` (run dir, run id,
    ``metrics`` and ``bootstrap`` definitions, model names as shown); ``metric_definitions`` (the
    shared definition, or ``None`` when runs differ, see ``metric_definitions_agree``); ``notes``
    (the footer lines); ``not_scored`` (per model: ``too_many_images``, samples not evaluated for
    having more images than the model accepts, and ``other_errors``); ``columns`` (what each row
    field means); ``rows`` (measured rows, then the paper's reported rows shown, marked by
    ``origin``); ``paper`` (with ``--with-paper``/``--vs-paper``: the reported table's source,
    units and caveats as written in it, and which run models matched which paper model; else ``None``).
    """
    from medmim_eval.flags import not_scored_by_model

    agree = definitions_agree(view.runs)
    not_scored = not_scored_by_model(c for run in view.runs for c in run.cells)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "harness_version": __version__,
        "by_source": view.by_source,
        "runs": [{"run": run.run_dir.name, "run_dir": str(run.run_dir), "run_id": run.run_id,
                  "metrics": run.metrics, "bootstrap": run.bootstrap, "models": run.names} for run in view.runs],
        "metric_definitions_agree": agree,
        "metric_definitions": view.runs[0].metrics if agree and view.runs else None,
        "notes": view.footer,
        "not_scored": {model: {"too_many_images": n.too_many_images, "other_errors": n.other_errors}
                       for model, n in not_scored.items()},
        "columns": COLUMNS,
        "rows": long_rows(view),
        "paper": _paper(view),
        **({"controls": view.controls.as_dict()} if view.controls is not None else {}),
    }


def _paper(view: "LeaderboardView") -> dict[str, Any] | None:
    if view.paper is None or view.paper_matches is None:
        return None
    return {"source": view.paper.source, "units": view.paper.units, "notes": view.paper.notes,
            "with_paper": view.with_paper, "vs_paper": view.vs_paper,
            "matched": {model: row.name for model, row in view.paper_matches.matched.items()},
            "unmatched": view.paper_matches.unmatched}


def to_json(view: "LeaderboardView") -> str:
    return json.dumps(to_dict(view), indent=2, ensure_ascii=False) + "\n"
