"""Reference baselines that need no model: ``random`` and ``majority``.

Both answer closed questions only; for open questions they give an empty answer, which the open
metrics score as zero.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Any, Sequence

from medmim_eval.adapter import AdapterContext, Capabilities, GenerationRequest, GenerationResult
from medmim_eval.schema import PromptRecord, Sample, content_hash

_INSTANT = Capabilities(max_images=99, batch_size=64, max_concurrency=1, cacheable=False)


def _sent(request: GenerationRequest) -> PromptRecord:
    images = request.sample.prompt.images
    return PromptRecord(n_images=len(images), image_order=[p.index for p in images])


class RandomBaseline:
    """Uniform over the options; the draw for a sample depends only on the seed and its key."""

    capabilities = _INSTANT

    def __init__(self, model_id: str, seed: int) -> None:
        self.model_id = model_id
        self.seed = seed

    def fingerprint(self) -> dict[str, Any]:
        return {"adapter": "random", "seed": self.seed}

    def answer(self, sample: Sample) -> str:
        if sample.kind != "closed":
            return ""
        rng = random.Random(content_hash(f"{self.seed}|{sample.key}"))
        return rng.choice(sorted(sample.options))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        return [GenerationResult(self.answer(r.sample), sent=_sent(r)) for r in requests]

    async def aclose(self) -> None:
        return None


class MajorityBaseline:
    """The task's most frequent gold letter; where an item lacks that letter, the next most
    frequent one it has. ``prepare`` must see the task's samples first."""

    capabilities = _INSTANT

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.ranking: dict[str, list[str]] = {}

    def fingerprint(self) -> dict[str, Any]:
        return {"adapter": "majority"}

    def prepare(self, task: str, samples: Sequence[Sample]) -> None:
        counts = Counter(s.answer for s in samples if s.kind == "closed")
        self.ranking[task] = sorted(counts, key=lambda letter: (-counts[letter], letter))

    def answer(self, sample: Sample) -> str:
        if sample.kind != "closed":
            return ""
        ranking = self.ranking.get(sample.task)
        if ranking is None:
            raise RuntimeError(f"majority baseline was not prepared for task '{sample.task}'")
        for letter in ranking:
            if letter in sample.options:
                return letter
        return sorted(sample.options)[0]

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        return [GenerationResult(self.answer(r.sample), sent=_sent(r)) for r in requests]

    async def aclose(self) -> None:
        return None


def make_random(target: str | None, options: dict[str, str], context: AdapterContext) -> RandomBaseline:
    seed = int(options.get("seed", context.seed))
    return RandomBaseline(options.get("label") or "random", seed)


def make_majority(target: str | None, options: dict[str, str], context: AdapterContext) -> MajorityBaseline:
    return MajorityBaseline(options.get("label") or "majority")
