"""The benchmark card: what a task file gives away before any model looks at an image.

Per task: closed/open counts, the distribution of gold letters and of option counts, chance level,
image-set reuse, repeated item ids, items per source dataset and the accuracy of every text-only
shortcut rule (:mod:`medmim_eval.shortcuts`) on the closed items. Computed from the loaded
samples only, so it works where the images are absent.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from pydantic import BaseModel, Field

from medmim_eval import SCHEMA_VERSION
from medmim_eval.schema import Sample
from medmim_eval.shortcuts import best_shortcut, shortcut_correct, shortcut_scores
from medmim_eval.stats import chance_level


class TaskCard(BaseModel):
    """The card of one task; percentages on 0-100.

    ``image_sets_reused`` counts the image sets used by more than one item and
    ``items_on_reused_image_sets`` the items on them; ``repeated_ids`` counts the ids held by more
    than one item and ``items_with_repeated_ids`` those items. ``best_letter`` is the most frequent
    gold letter with ``best_letter_share`` its share of the closed items.
    """

    task: str
    n_closed: int
    n_open: int
    gold_letters: dict[str, int] = Field(default_factory=dict)
    option_counts: dict[int, int] = Field(default_factory=dict)
    chance: float | None = None
    best_letter: str | None = None
    best_letter_share: float | None = None
    image_sets: int = 0
    image_sets_reused: int = 0
    items_on_reused_image_sets: int = 0
    max_items_per_image_set: int = 0
    repeated_ids: int = 0
    items_with_repeated_ids: int = 0
    sources: dict[str, int] = Field(default_factory=dict)
    shortcuts: dict[str, float] = Field(default_factory=dict)
    best_shortcut: str | None = None
    best_shortcut_accuracy: float | None = None


class BenchmarkCard(BaseModel):
    version: int = SCHEMA_VERSION
    tasks: list[TaskCard] = Field(default_factory=list)
    definitions: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def task_card(task: str, samples: Sequence[Sample]) -> TaskCard:
    """The card of one task from its samples (both kinds; letter and shortcut figures from closed ones)."""
    closed = [s for s in samples if s.kind == "closed"]
    letters = Counter(s.answer for s in closed)
    per_set = Counter(s.image_set for s in samples)
    per_id = Counter(s.item_id for s in samples)
    scores = shortcut_scores(shortcut_correct(closed))
    best = best_shortcut(scores)
    top = min(letters, key=lambda letter: (-letters[letter], letter)) if letters else None
    return TaskCard(
        task=task, n_closed=len(closed), n_open=len(samples) - len(closed),
        gold_letters=dict(sorted(letters.items())),
        option_counts=dict(sorted(Counter(len(s.options) for s in closed).items())),
        chance=chance_level([len(s.options) for s in closed]),
        best_letter=top, best_letter_share=100.0 * letters[top] / len(closed) if top else None,
        image_sets=len(per_set), image_sets_reused=sum(n > 1 for n in per_set.values()),
        items_on_reused_image_sets=sum(n for n in per_set.values() if n > 1),
        max_items_per_image_set=max(per_set.values(), default=0),
        repeated_ids=sum(n > 1 for n in per_id.values()),
        items_with_repeated_ids=sum(n for n in per_id.values() if n > 1),
        sources=dict(sorted(Counter(s.source for s in samples).items())),
        shortcuts=scores, best_shortcut=best[0] if best else None, best_shortcut_accuracy=best[1] if best else None,
    )


def benchmark_card(tasks: dict[str, Sequence[Sample]]) -> BenchmarkCard:
    """One card per task, in the given order, with the shortcut rules' definition."""
    from medmim_eval.shortcuts import definition

    return BenchmarkCard(tasks=[task_card(name, samples) for name, samples in tasks.items()], definitions=definition())
