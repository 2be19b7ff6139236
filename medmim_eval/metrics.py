"""Open-answer metrics (first version): ROUGE-L recall and sentence BLEU, each on 0-100.

Issue 3 adds BERTScore recall; until then the open score is the mean of these two. Every setting
is part of :data:`OPEN_METRICS_DEFINITION`, which the manifest and ``results.json`` record.
"""
from __future__ import annotations

from functools import cached_property
from importlib import metadata
from typing import Any


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


OPEN_METRICS_DEFINITION: dict[str, Any] = {
    "open_score": "mean of rougeL_recall and bleu (BERTScore recall joins in a later version)",
    "rougeL_recall": {"package": "rouge-score", "variant": "rougeL", "use_stemmer": False, "scale": 100},
    "bleu": {
        "package": "sacrebleu",
        "function": "BLEU.sentence_score",
        "tokenize": "13a",
        "smooth_method": "exp",
        "effective_order": True,
        "lowercase": False,
        "scale": 100,
    },
}


class OpenScorer:
    """Scores open answers against references; build one per run and reuse it."""

    @cached_property
    def _rouge(self) -> Any:
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    @cached_property
    def _bleu(self) -> Any:
        from sacrebleu.metrics import BLEU

        return BLEU(tokenize="13a", smooth_method="exp", effective_order=True)

    def score(self, prediction: str, reference: str) -> dict[str, float]:
        prediction = (prediction or "").strip()
        if not prediction:
            return {"rougeL_recall": 0.0, "bleu": 0.0, "open_score": 0.0}
        # rouge-score takes (target, prediction): recall = LCS / reference length.
        rouge = self._rouge.score(reference, prediction)["rougeL"].recall * 100
        bleu = float(self._bleu.sentence_score(prediction, [reference]).score)
        return {"rougeL_recall": rouge, "bleu": bleu, "open_score": (rouge + bleu) / 2}

    @staticmethod
    def definition() -> dict[str, Any]:
        definition = dict(OPEN_METRICS_DEFINITION)
        definition["versions"] = {p: _version(p) for p in ("rouge-score", "sacrebleu")}
        return definition
