"""Turning a model's answer into a scored record, and records into result cells."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from medmim_eval.extract import extract_choice
from medmim_eval.metrics import OpenScorer
from medmim_eval.schema import UNPARSEABLE, ResultCell, Sample, SampleRecord


def score_answer(sample: Sample, output: str, scorer: OpenScorer) -> tuple[str | None, bool | None, dict[str, float]]:
    """(extracted answer, correct, scores) for one answer."""
    if sample.kind == "closed":
        extracted = extract_choice(output, sample.options)
        correct = extracted == sample.answer
        return extracted, correct, {"accuracy": 100.0 if correct else 0.0}
    return None, None, scorer.score(output, sample.answer)


def aggregate(records: Iterable[SampleRecord]) -> list[ResultCell]:
    """Per model x task x kind: n, score, unparseable rate, errors.

    Errored records count in ``n`` and ``errors`` but never in the score: a failure is not a
    wrong answer.
    """
    groups: dict[tuple[str, str, str], list[SampleRecord]] = defaultdict(list)
    for record in records:
        groups[(record.model, record.task, record.kind)].append(record)
    cells = []
    for (model, task, kind), items in sorted(groups.items()):
        scored = [r for r in items if r.error is None]
        errors = len(items) - len(scored)
        metrics: dict[str, float] = {}
        unparseable = None
        score = None
        if scored:
            if kind == "closed":
                score = 100.0 * sum(bool(r.correct) for r in scored) / len(scored)
                unparseable = sum(r.extracted == UNPARSEABLE for r in scored) / len(scored)
                metrics["accuracy"] = score
            else:
                names = sorted({name for r in scored for name in r.scores})
                metrics = {n: sum(r.scores.get(n, 0.0) for r in scored) / len(scored) for n in names}
                score = metrics.get("open_score")
        cells.append(
            ResultCell(
                model=model, task=task, kind=kind, n=len(items), n_scored=len(scored), score=score,
                unparseable_rate=unparseable, errors=errors, metrics=metrics,
            )
        )
    return cells
