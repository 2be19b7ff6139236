"""The paper's reported rows in leaderboard views: ``--with-paper`` (all of them) and ``--vs-paper``
(each measured model beside its reported row, with the difference).

Reported rows go into the Med-MIM table as reference rows (see ``Table.reference``): their labels
say they are reported, they are never ranked, and the footer says what makes them differ from a
measurement here (the released MIM-RAD file, unstated metric variants).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medmim_eval.view_model import MEDMIM_TITLE, Column, Table, empty_medmim_table
from medmim_eval.paper_table import IMPROVEMENT, PaperRow, PaperTable

if TYPE_CHECKING:
    from medmim_eval.view_model import RunData

REPORTED_MARK = "(paper, reported)"
DIFFERENCE = "difference"
PAPER_RUN = "paper"
# |measured - reported| in points: within MATCHES_WITHIN "matches", within CLOSE_WITHIN "close", else "differs".
MATCHES_WITHIN = 2.5
CLOSE_WITHIN = 5.0
BANDS_LINE = (f"Bands (--vs-paper): |measured − reported| ≤ {MATCHES_WITHIN:g} points \"matches\", ≤ {CLOSE_WITHIN:g} "
              "\"close\", else \"differs\"; cell by cell, where both exist.")


def band(difference: float | None) -> str | None:
    """The band of one measured-minus-reported difference (points), ``None`` where there is none."""
    if difference is None:
        return None
    size = abs(difference)
    return "matches" if size <= MATCHES_WITHIN + 1e-9 else "close" if size <= CLOSE_WITHIN + 1e-9 else "differs"


def _band_note(model: str, columns: list[Column], differences: list[float | None]) -> str | None:
    groups: dict[str, list[str]] = {"matches": [], "close": [], "differs": []}
    for column, difference in zip(columns, differences):
        name = band(difference)
        if name is not None and difference is not None:
            groups[name].append(f"{column.group} {column.title} {column.kind} {difference:+.2f}".replace("  ", " "))
    if not any(groups.values()):
        return None
    parts = [f"{name} {len(cells)}" + (f" ({'; '.join(cells)})" if cells else "") for name, cells in groups.items()]
    return f"{model} vs paper: " + ", ".join(parts) + "."


def reported_label(row: PaperRow) -> str:
    """The row label of a reported row, e.g. ``GPT-4o (paper, reported)``."""
    return f"{row.name} {REPORTED_MARK}"


def difference_label(model: str) -> str:
    """The row label of a measured model's difference from its reported row."""
    return f"Δ {model} − paper"


@dataclass
class PaperMatches:
    """Shown model name -> its reported row, and the shown names that match no paper model."""

    matched: dict[str, PaperRow]
    unmatched: list[str]


def match_models(runs: list["RunData"], paper: PaperTable) -> PaperMatches:
    """Match each run's model ids (not the ``[run]``-suffixed shown names) to the paper's rows."""
    matched: dict[str, PaperRow] = {}
    unmatched: list[str] = []
    for run in runs:
        for model_id, shown in run.names.items():
            row = paper.for_model(model_id)
            if row is None:
                unmatched.append(shown)
            else:
                matched[shown] = row
    return PaperMatches(matched=matched, unmatched=sorted(set(unmatched)))


def _paper_values(row: PaperRow, columns: list[Column]) -> list[float | None]:
    return [row.scores.get((c.task, c.kind)) for c in columns]


def add_paper_rows(tables: list[Table], paper: PaperTable, matches: PaperMatches, *, with_paper: bool,
                   vs_paper: bool) -> list[Table]:
    """The tables with reported rows added to the Med-MIM table (created first when absent).

    With ``vs_paper`` each matched model is followed by its reported row and a difference row
    (measured minus reported, where both exist); with ``with_paper`` every reported row not yet
    shown follows the measured rows, in the paper's order.
    """
    table = next((t for t in tables if t.title.startswith(MEDMIM_TITLE)), None)
    if table is None:
        table = empty_medmim_table()
        tables = [table, *tables]
    rows: dict[str, list[float | None]] = {}
    shown_rows: set[str] = set()
    band_notes: list[str] = []
    for model, values in table.rows.items():
        rows[model] = values
        row = matches.matched.get(model) if vs_paper else None
        if row is None:
            continue
        reported = _paper_values(row, table.columns)
        if reported_label(row) not in rows:
            rows[reported_label(row)] = reported
            table.reference[reported_label(row)] = row.kind
            shown_rows.add(row.name)
        differences = [None if m is None or r is None else m - r for m, r in zip(values, reported)]
        rows[difference_label(model)] = differences
        table.reference[difference_label(model)] = DIFFERENCE
        note = _band_note(model, table.columns, differences)
        if note:
            band_notes.append(note)
    if with_paper:
        for row in paper.rows:
            if row.name not in shown_rows:
                rows[reported_label(row)] = _paper_values(row, table.columns)
                table.reference[reported_label(row)] = row.kind
                shown_rows.add(row.name)
    table.rows = rows
    table.notes.append(f"Rows marked {REPORTED_MARK} are the paper's published numbers, not measured by these runs; "
                       "bold and underline rank measured rows only.")
    improvements = [r for r in paper.improvement_rows() if r.name in shown_rows]
    if improvements:
        pairs = "; ".join(f"{r.name} = {r.of[0]} − {r.of[1]}" for r in improvements if r.of)
        table.notes.append(f"† rows are the paper's improvements of the fine-tuned model over its base, cell by cell "
                           f"({pairs}); each was recomputed from its two reported rows and agrees to 0.01.")
    if any(kind == DIFFERENCE for kind in table.reference.values()):
        table.notes.append("Δ rows: measured minus reported, in points, where both exist.")
        table.notes.extend(band_notes)
    return tables


def paper_footer(paper: PaperTable, matches: PaperMatches, *, vs_paper: bool) -> list[str]:
    """Footer lines: where the reported numbers come from and why they are not the same measurement."""
    lines = [
        f"Reported rows: {paper.source}. Units: {paper.units}.",
        "MIM-RAD: the paper scored 300 closed items (its closed scores are multiples of 1/300), where the "
        "released Held_out_RAD file has 293 closed and 73 open items; reported and measured MIM-RAD cells "
        "are not the same sample set.",
        "The paper does not say which BERTScore model/layer, BLEU variant or ROUGE-L tokenisation it used; "
        "reported open cells may rest on another definition than the one named above.",
    ]
    if vs_paper:
        lines.append(BANDS_LINE)
    if vs_paper and matches.unmatched:
        lines.append(f"--vs-paper: no paper model for {', '.join(matches.unmatched)}; a model is matched by its "
                     "registry name (e.g. --models gpt-4o, or label=gpt-4o in its spec).")
    if vs_paper and not matches.matched:
        lines.append("--vs-paper: no model of these runs matches a paper model, so no difference is shown.")
    return lines


def paper_long_rows(paper: PaperTable, matches: PaperMatches, *, with_paper: bool) -> list[dict[str, Any]]:
    """Long-format rows of the reported cells shown (all with ``with_paper``, else the matched ones)."""
    wanted = {row.name for row in matches.matched.values()}
    out = []
    for row in paper.rows:
        if not with_paper and row.name not in wanted:
            continue
        for (task, kind), score in row.scores.items():
            out.append({"run": PAPER_RUN, "run_id": "", "model": row.name, "task": task, "kind": kind,
                        "score": score, "origin": row.kind,
                        "of": " - ".join(row.of) if row.kind == IMPROVEMENT and row.of else None})
    return out
