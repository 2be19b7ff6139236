"""Long-format rows (one per run x model x task x kind, x source with ``--by-source``) for CSV and JSON."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medmim_eval.view_model import LeaderboardView

# Column order of the long format, with what each column means (written into the JSON export).
COLUMNS: dict[str, str] = {
    "run": "run directory name",
    "run_id": "run id from results.json / manifest.json",
    "model": "model id as shown in the tables (suffixed with [run] when two runs hold the same model)",
    "task": "task name",
    "kind": "closed or open",
    "source": "source dataset (per-source rows only; empty otherwise)",
    "n": "samples in the cell, errored ones included",
    "n_scored": "samples that produced an answer (errors excluded)",
    "score": "closed: accuracy in %; open: open score 0-100 (see metric definitions)",
    "ci_low": "lower bound of the 95% cluster-bootstrap interval of score",
    "ci_high": "upper bound of the 95% cluster-bootstrap interval of score",
    "chance": "closed: expected accuracy of uniform guessing, in % (mean of 100/k)",
    "chance_normalised": "closed: 100 x (score - chance) / (100 - chance)",
    "shortcut": "closed: accuracy in % of the best text-only shortcut rule on the same items",
    "shortcut_rule": "closed: which rule that is (longest-option, shortest-option, question-overlap, majority)",
    "shortcut_normalised": "closed: 100 x (score - shortcut) / (100 - shortcut)",
    "unparseable_rate": "closed: fraction (0-1) of scored answers naming no option",
    "errors": "samples that ended in a model error (not scored)",
    "too_many_images": "of errors: samples with more images than the model accepts (not sent, never truncated)",
    "origin": "measured (by the run); reported (the paper's Table 1, not measured here); improvement "
              "(the paper's dagger rows: fine-tuned minus base, see 'of')",
    "of": "improvement rows: the two paper models subtracted (fine-tuned - base)",
    "paper_score": "with --vs-paper: the paper's reported value for the same model, task and kind",
    "paper_difference": "with --vs-paper: score - paper_score (the paper scored 300 closed MIM-RAD items, "
                        "the released file has 293)",
    "paper_band": "with --vs-paper: matches (|paper_difference| <= 2.5), close (<= 5), else differs",
    "judged": "closed, runs with an LLM judge: answers the rule left unparseable that the judge mapped to an option",
    "excluded": "items of the task the run left out (run --exclude / --exclude-contaminated): a clean-subset "
                "cell, marked with a double dagger in the tables; 0 for a full run",
}


def long_rows(view: "LeaderboardView") -> list[dict[str, Any]]:
    """Every cell the view shows, as flat dicts keyed by :data:`COLUMNS`, in a stable order."""
    matched = view.paper_matches.matched if view.paper_matches and view.vs_paper else {}
    rows = []
    for run in view.runs:
        for cell in run.by_source if view.by_source else run.cells:
            rows.append({
                "run": run.run_dir.name, "run_id": run.run_id, "model": cell.model, "task": cell.task,
                "kind": cell.kind, "source": cell.source if view.by_source else None, "n": cell.n,
                "n_scored": cell.n_scored, "score": cell.score, "ci_low": cell.ci_low, "ci_high": cell.ci_high,
                "chance": cell.chance, "chance_normalised": cell.chance_normalised,
                "shortcut": cell.shortcut, "shortcut_rule": cell.shortcut_rule,
                "shortcut_normalised": cell.shortcut_normalised,
                "unparseable_rate": cell.unparseable_rate, "errors": cell.errors,
                "too_many_images": cell.too_many_images, "judged": cell.judged, "excluded": cell.excluded,
                "origin": "measured", "of": None,
                **_beside_paper(cell.model, cell.task, cell.kind, cell.score, matched),
            })
    rows.sort(key=lambda r: (r["model"], r["task"], r["kind"], r["source"] or "", r["run"]))
    if view.paper is not None and view.paper_matches is not None:
        from medmim_eval.paper_view import paper_long_rows

        reported = paper_long_rows(view.paper, view.paper_matches, with_paper=view.with_paper)
        rows += [{**dict.fromkeys(COLUMNS), **r} for r in reported]
    return rows


def _beside_paper(model: str, task: str, kind: str, score: float | None, matched: dict[str, Any]) -> dict[str, Any]:
    """``paper_score`` and ``paper_difference`` of a measured cell whose model matches a paper row."""
    row = matched.get(model)
    reported = row.scores.get((task, kind)) if row is not None else None
    difference = None if reported is None or score is None else score - reported
    from medmim_eval.paper_view import band

    return {"paper_score": reported, "paper_difference": difference, "paper_band": band(difference) if row else None}
