"""Turning a model's answer into a scored record, and records into result cells."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from medmim_eval.extract import EXTRACTION_RULE_VERSION, decide_choice
from medmim_eval.metrics import OpenScorer
from medmim_eval.schema import UNPARSEABLE, ExtractionRecord, ResultCell, Sample, SampleRecord
from medmim_eval.shortcuts import best_shortcut, shortcut_normalised, shortcut_scores
from medmim_eval.stats import BootstrapSettings, chance_level, chance_normalised, cluster_bootstrap_ci


def score_answer(sample: Sample, output: str, scorer: OpenScorer) -> tuple[str | None, bool | None, dict[str, float]]:
    """(extracted answer, correct, scores) for one answer."""
    extracted, correct, scores, _ = score_answer_explained(sample, output, scorer)
    return extracted, correct, scores


def score_answer_explained(sample: Sample, output: str, scorer: OpenScorer
                           ) -> tuple[str | None, bool | None, dict[str, float], ExtractionRecord | None]:
    """(extracted answer, correct, scores, how the answer was extracted) for one answer."""
    if sample.kind == "closed":
        decision = decide_choice(output, sample.options)
        correct = decision.answer == sample.answer
        how = ExtractionRecord(rule_version=EXTRACTION_RULE_VERSION, rule=decision.rule, detail=decision.detail)
        return decision.answer, correct, {"accuracy": 100.0 if correct else 0.0}, how
    return None, None, scorer.score(output, sample.answer), None


def finish_pending(records: list[SampleRecord], references: dict[str, str], scorer: OpenScorer) -> list[SampleRecord]:
    """Fill the batched components (BERTScore) of open records and their open score.

    Args:
        records: records whose ``scores_pending`` is not empty.
        references: sample key -> reference answer.
    """
    if not records:
        return []
    recalls = scorer.bertscore_recall([r.output or "" for r in records], [references[r.key] for r in records])
    finished = []
    for record, recall in zip(records, recalls):
        scores = dict(record.scores, bertscore_recall=recall)
        scores["open_score"] = scorer.combine(scores)
        finished.append(record.model_copy(update={"scores": scores, "scores_pending": []}))
    return finished


ShortcutTable = dict[str, dict[str, bool]]  # sample key -> rule -> correct (medmim_eval.shortcuts)


def aggregate(records: Iterable[SampleRecord], bootstrap: BootstrapSettings = BootstrapSettings(),
              shortcuts: ShortcutTable | None = None) -> list[ResultCell]:
    """Per model x task x kind: n, score, unparseable rate, errors, chance, shortcut baselines, CI.

    Errored records count in ``n`` and ``errors`` but never in the score: a failure is not a
    wrong answer. Every number is a function of the records as a set, whatever their order. ``shortcuts`` (from
    :func:`medmim_eval.shortcuts.shortcut_correct`) adds the text-only baselines of closed cells whose
    every scored item it covers.
    """
    groups: dict[tuple[str, str, str], list[SampleRecord]] = defaultdict(list)
    for record in records:
        groups[(record.model, record.task, record.kind)].append(record)
    return [_cell(model, task, kind, None, items, bootstrap, shortcuts)
            for (model, task, kind), items in sorted(groups.items())]


def aggregate_by_source(records: Iterable[SampleRecord], bootstrap: BootstrapSettings = BootstrapSettings(),
                        shortcuts: ShortcutTable | None = None) -> list[ResultCell]:
    """The same cells split by source dataset (e.g. EMBED vs LUMIERE inside Temporal)."""
    groups: dict[tuple[str, str, str, str], list[SampleRecord]] = defaultdict(list)
    for record in records:
        groups[(record.model, record.task, record.kind, record.source)].append(record)
    return [_cell(m, t, k, s, items, bootstrap, shortcuts) for (m, t, k, s), items in sorted(groups.items())]


def _cell(model: str, task: str, kind: str, source: str | None, items: list[SampleRecord],
          bootstrap: BootstrapSettings, shortcuts: ShortcutTable | None = None) -> ResultCell:
    # Sample-key order, not file order: a resumed run appends its records in another order, and
    # float sums and the bootstrap must not notice.
    items = sorted(items, key=lambda r: r.key)
    # Records still waiting for batched metrics (a run killed while scoring) are not scored yet.
    scored = [r for r in items if r.error is None and not r.scores_pending]
    metrics: dict[str, float] = {}
    unparseable = chance = normalised = None
    score = None
    values: list[float] = []
    rules: dict[str, float] = {}
    best = None
    if scored:
        if kind == "closed":
            values = [100.0 if r.correct else 0.0 for r in scored]
            score = sum(values) / len(values)
            unparseable = sum(r.extracted == UNPARSEABLE for r in scored) / len(scored)
            metrics["accuracy"] = score
            chance = chance_level([r.n_options or 0 for r in scored])
            normalised = chance_normalised(score, chance)
            if shortcuts is not None and all(r.key in shortcuts for r in scored):
                rules = shortcut_scores(shortcuts, [r.key for r in scored])
                best = best_shortcut(rules)
        else:
            names = sorted({name for r in scored for name in r.scores})
            metrics = {n: sum(r.scores.get(n, 0.0) for r in scored) / len(scored) for n in names}
            score = metrics.get("open_score")
            values = [r.scores.get("open_score", 0.0) for r in scored]
    clusters = [r.image_set or r.key for r in scored]
    if kind == "closed" and any(r.rotation is not None for r in scored):
        # TASK@circular: the score is per item, right under every rotation (medmim_eval.circular).
        from medmim_eval.circular import circular_summary

        circular = circular_summary(scored)
        score, values, clusters, chance = circular.score, circular.values, circular.clusters, circular.chance
        metrics.update(circular.metrics)
        normalised = chance_normalised(score, chance) if score is not None and chance is not None else None
        rules, best = {}, None
    asked = [r.judge for r in scored if r.judge is not None]
    interval = cluster_bootstrap_ci(values, clusters, bootstrap) if score is not None else None
    return ResultCell(
        model=model, task=task, kind=kind, source=source, n=len(items), n_scored=len(scored), score=score,
        unparseable_rate=unparseable, errors=len(items) - len(scored), metrics=metrics, chance=chance,
        chance_normalised=normalised, shortcuts=rules, shortcut=best[1] if best else None,
        shortcut_rule=best[0] if best else None, shortcut_normalised=shortcut_normalised(score, best[1]) if best else None,
        ci_low=interval[0] if interval else None,
        ci_high=interval[1] if interval else None, n_clusters=len(set(clusters)), judge_asked=len(asked),
        judged=sum(j.outcome == "decided" for j in asked), judge_failed=sum(j.outcome == "failed" for j in asked),
    )
