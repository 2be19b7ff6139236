"""The paper's reported Table 1 (shipped as package data): loading, the check of its † rows, and
the map from the paper's model names to registry names.

The file (``medmim_eval/data/paper_table1.json``) holds the paper's numbers with their provenance
and caveats; rows of kind ``"improvement"`` (the paper's † rows) are the fine-tuned model minus its
base model, so :func:`load_paper_table` recomputes them and refuses a table whose printed values
disagree. Standard library only, so ``leaderboard`` stays light.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from medmim_eval.errors import MedmimError

BUNDLED_FILE = "paper_table1.json"
REPORTED = "reported"
IMPROVEMENT = "improvement"
# A printed † value may differ from the difference of its two printed cells by rounding only.
IMPROVEMENT_TOLERANCE = 0.01 + 1e-9

# The paper's spelling -> the registry name of the same model (adapters/vllm/model_registry.py and the
# OpenAI plugin register these as paper models; the Mantis-8B of the paper is the SigLIP variant
# that Med-Mantis was fine-tuned from).
PAPER_TO_REGISTRY: dict[str, str] = {
    "GPT-4o": "gpt-4o",
    "Med-Flamingo-9B": "med-flamingo-9b",
    "deepseek-VL-7B": "deepseek-vl-7b",
    "InternVL2-8B": "internvl2-8b",
    "LLaVA-Med-7B": "llava-med-7b",
    "Mantis-8B": "mantis-8b",
    "MIM-LLaVA-Med": "mim-llava-med",
    "Med-Mantis": "med-mantis",
}


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's table; ``scores[(task, kind)]`` on 0-100; ``of`` = (fine-tuned, base) for †."""

    name: str
    kind: str
    scores: dict[tuple[str, str], float]
    of: tuple[str, str] | None = None

    @property
    def registry_name(self) -> str | None:
        return PAPER_TO_REGISTRY.get(self.name)


@dataclass
class PaperTable:
    """The reported table: its rows in the paper's order, provenance and caveats as written."""

    path: str
    source: str
    units: str
    notes: list[str]
    tasks: list[str]
    rows: list[PaperRow] = field(default_factory=list)

    def for_model(self, model_id: str) -> PaperRow | None:
        """The reported row of a run's model id: its registry name or the paper's spelling (any case)."""
        wanted = model_id.strip().lower()
        for row in self.rows:
            if row.kind == REPORTED and wanted in {row.name.lower(), (row.registry_name or "").lower()}:
                return row
        return None

    def improvement_rows(self) -> list[PaperRow]:
        return [row for row in self.rows if row.kind == IMPROVEMENT]


def bundled_path() -> Any:
    """The packaged copy of the paper's Table 1 (an importlib.resources traversable)."""
    return resources.files("medmim_eval").joinpath("data", BUNDLED_FILE)


def load_paper_table(path: Path | None = None) -> PaperTable:
    """Read the paper's table (the bundled copy unless ``path``) and check every † row.

    Raises:
        MedmimError: for an unreadable file, a row of unknown shape, or a † value that is not the
            difference of its two models (naming the row, the cell and both numbers).
    """
    source = path if path is not None else bundled_path()
    where = str(source)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        table = PaperTable(path=where, source=str(data["source"]), units=str(data.get("units", "")),
                           notes=[str(n) for n in data.get("notes", [])], tasks=list(data["tasks"]))
        for entry in data["models"]:
            scores = {(task, kind): float(value) for task, cell in entry["scores"].items()
                      for kind, value in cell.items()}
            of = tuple(entry["of"]) if entry.get("of") else None
            if entry["kind"] not in (REPORTED, IMPROVEMENT) or (entry["kind"] == IMPROVEMENT and (of is None or len(of) != 2)):
                raise ValueError(f"row {entry.get('name')!r}: kind must be 'reported', or 'improvement' with 'of' naming two rows")
            table.rows.append(PaperRow(name=str(entry["name"]), kind=entry["kind"], scores=scores,
                                       of=of))  # type: ignore[arg-type]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise MedmimError(f"{where}: not a readable copy of the paper's Table 1 ({detail})") from None
    problems = improvement_mismatches(table)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MedmimError(f"{where}: {problems[0]}{more}; correct the file or use the bundled copy")
    return table


def improvement_mismatches(table: PaperTable) -> list[str]:
    """Every † cell whose printed value is not its fine-tuned minus base value (to 0.01), described."""
    by_name = {row.name: row for row in table.rows}
    problems = []
    for row in table.improvement_rows():
        assert row.of is not None
        missing = [name for name in row.of if name not in by_name]
        if missing:
            problems.append(f"† row {row.name!r} names {', '.join(map(repr, missing))}, which the table lacks")
            continue
        tuned, base = (by_name[name] for name in row.of)
        for key, printed in row.scores.items():
            if key not in tuned.scores or key not in base.scores:
                problems.append(f"† row {row.name!r} has {key[0]} {key[1]}, which {row.of[0]!r} or {row.of[1]!r} lacks")
                continue
            recomputed = tuned.scores[key] - base.scores[key]
            if abs(printed - recomputed) > IMPROVEMENT_TOLERANCE:
                problems.append(f"† row {row.name!r}, {key[0]} {key[1]}: printed {printed:.2f}, but "
                                f"{row.of[0]} - {row.of[1]} = {recomputed:.2f}")
    return problems
