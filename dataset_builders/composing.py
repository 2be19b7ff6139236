"""Small helpers shared by the held-out builders: builder options, position words, item counts.

Everything here is deterministic; randomness always comes from a ``random.Random`` the caller
seeded with a string naming the builder, its version and the user's seed.
"""
from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import TypeVar

from medmim_eval.builders_api import BuildOptions
from medmim_eval.errors import MedmimError

ORDINALS = ("first", "second", "third")
DEFAULT_PER_KIND = 300  # closed and open items each, as in the paper's MIM-RAD and MIM-ODIR

T = TypeVar("T")


def check_option_keys(options: BuildOptions, known: Mapping[str, str]) -> None:
    """Reject ``--option KEY=VALUE`` keys the builder does not know, so a typo is not ignored.

    Args:
        options: the build options.
        known: option key -> one-line help, shown in the error.
    """
    unknown = sorted(set(options.extra) - set(known))
    if unknown:
        listing = "; ".join(f"{key}: {help_text}" for key, help_text in known.items())
        raise MedmimError(f"{options.name}: unknown --option {', '.join(unknown)}. Known options: {listing}")


def items_per_kind(options: BuildOptions) -> int:
    """Closed items and open items to build: 300 each, capped by ``--limit``."""
    return min(DEFAULT_PER_KIND, options.limit) if options.limit else DEFAULT_PER_KIND


def as_sub_question(question: str) -> str:
    """A raw question ready to follow ``"In the first image, "``: whitespace collapsed, first word
    lower-cased unless it is an acronym (``"CT"``, ``"MRI"``), and ending in ``?`` or ``.``."""
    text = re.sub(r"\s+", " ", question).strip()
    first = text.split(" ", 1)[0]
    if first[:1].isupper() and not any(ch.isupper() for ch in first[1:]):
        text = text[0].lower() + text[1:]
    if text and text[-1] not in "?.":
        text += "?"
    return text


def clean_answer(answer: str) -> str:
    """A raw answer as a phrase: whitespace collapsed, trailing full stops removed."""
    return re.sub(r"\s+", " ", answer).strip().rstrip(".").strip()


def weighted_sample(rng: random.Random, pool: Sequence[tuple[T, int]], k: int) -> list[T]:
    """Draw up to ``k`` distinct values from ``(value, weight)`` pairs, without replacement.

    The caller passes the pool in a fixed order, so the draw depends only on the rng's state.
    """
    remaining = [(value, weight) for value, weight in pool if weight > 0]
    chosen: list[T] = []
    while remaining and len(chosen) < k:
        total = sum(weight for _, weight in remaining)
        point = rng.random() * total
        for index, (value, weight) in enumerate(remaining):
            point -= weight
            if point < 0 or index == len(remaining) - 1:
                chosen.append(value)
                del remaining[index]
                break
    return chosen


def place_answer(rng: random.Random, correct: str, distractors: Sequence[str]) -> tuple[list[str], int]:
    """Shuffle the correct option among the distractors; returns (options, index of the correct one)."""
    options = [correct, *distractors]
    rng.shuffle(options)
    return options, options.index(correct)
