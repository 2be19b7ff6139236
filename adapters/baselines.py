"""Reference baselines that need no model: ``random``, ``majority`` and the text-only shortcut rules
(``longest-option``, ``shortest-option``, ``question-overlap``; defined in :mod:`medmim_eval.shortcuts`).

All answer closed questions only; for open questions they give an empty answer, which the open
metrics score as zero.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from medmim_eval.adapter import AdapterContext, Capabilities, GenerationRequest, GenerationResult
from medmim_eval.schema import PromptRecord, Sample, content_hash
from medmim_eval.shortcuts import TEXT_RULES, letter_ranking, majority_choice

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
        self.ranking[task] = letter_ranking(samples)

    def answer(self, sample: Sample) -> str:
        if sample.kind != "closed":
            return ""
        ranking = self.ranking.get(sample.task)
        if ranking is None:
            raise RuntimeError(f"majority baseline was not prepared for task '{sample.task}'")
        return majority_choice(sample, ranking)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        return [GenerationResult(self.answer(r.sample), sent=_sent(r)) for r in requests]

    async def aclose(self) -> None:
        return None


class TextRuleBaseline:
    """One text-only shortcut rule of :mod:`medmim_eval.shortcuts`: reads the options, never an image."""

    capabilities = _INSTANT

    def __init__(self, model_id: str, rule: str) -> None:
        self.model_id = model_id
        self.rule = rule
        self._choose: Callable[[Sample], str] = TEXT_RULES[rule]

    def fingerprint(self) -> dict[str, Any]:
        return {"adapter": self.rule}

    def answer(self, sample: Sample) -> str:
        if sample.kind != "closed" or not sample.options:
            return ""
        return self._choose(sample)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        return [GenerationResult(self.answer(r.sample), sent=_sent(r)) for r in requests]

    async def aclose(self) -> None:
        return None


def make_random(target: str | None, options: dict[str, str], context: AdapterContext) -> RandomBaseline:
    seed = int(options.get("seed", context.seed))
    return RandomBaseline(options.get("label") or "random", seed)


def make_majority(target: str | None, options: dict[str, str], context: AdapterContext) -> MajorityBaseline:
    return MajorityBaseline(options.get("label") or "majority")


def _text_rule_factory(rule: str) -> Callable[[str | None, dict[str, str], AdapterContext], TextRuleBaseline]:
    def make(target: str | None, options: dict[str, str], context: AdapterContext) -> TextRuleBaseline:
        return TextRuleBaseline(options.get("label") or rule, rule)

    return make


make_longest_option = _text_rule_factory("longest-option")
make_shortest_option = _text_rule_factory("shortest-option")
make_question_overlap = _text_rule_factory("question-overlap")
