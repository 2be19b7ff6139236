"""Text-only shortcut rules: closed answers chosen without looking at any image.

The official files can be partly solved from the text alone (on MIM-RAD the longest option is the
gold one 70.6% of the time against a 33.3% chance level). These rules measure that, per task and
per result cell, so a model's score can be read against the best of them. Every rule is
deterministic; every tie goes to the earliest option letter.

Rules (``SHORTCUT_RULES``):

- ``longest-option``: the option with the most characters (surrounding spaces stripped).
- ``shortest-option``: the option with the fewest characters.
- ``question-overlap``: the option sharing the most distinct words (lower-cased runs of letters
  and digits) with the question text.
- ``majority``: the task's most frequent gold letter; where an item lacks it, the next most
  frequent one it has (this one reads the gold letters of the task, like a trained prior).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Iterable, Sequence

from medmim_eval.schema import Sample

LONGEST = "longest-option"
SHORTEST = "shortest-option"
QUESTION_OVERLAP = "question-overlap"
MAJORITY = "majority"
SHORTCUT_RULES: tuple[str, ...] = (LONGEST, SHORTEST, QUESTION_OVERLAP, MAJORITY)
SHORTCUT_RULES_VERSION = 1
TIE_RULE = "ties go to the earliest option letter"
_WORD = re.compile(r"[a-z0-9]+")


def _best(options: dict[str, str], key: Callable[[str], float]) -> str:
    """The letter with the highest ``key(text)``; ties to the earliest letter."""
    letters = sorted(options)
    return max(letters, key=lambda letter: (key(options[letter]), -letters.index(letter)))


def words(text: str) -> set[str]:
    """Distinct lower-cased words (runs of letters and digits)."""
    return set(_WORD.findall(text.lower()))


def longest_option(sample: Sample) -> str:
    return _best(sample.options, lambda text: len(text.strip()))


def shortest_option(sample: Sample) -> str:
    return _best(sample.options, lambda text: -len(text.strip()))


def question_overlap(sample: Sample) -> str:
    question = words(sample.question)
    return _best(sample.options, lambda text: len(words(text) & question))


def letter_ranking(samples: Iterable[Sample]) -> list[str]:
    """Gold letters of the closed samples, most frequent first; equal counts in letter order."""
    counts = Counter(s.answer for s in samples if s.kind == "closed")
    return sorted(counts, key=lambda letter: (-counts[letter], letter))


def majority_choice(sample: Sample, ranking: Sequence[str]) -> str:
    """The first letter of ``ranking`` the sample offers; else its earliest letter."""
    for letter in ranking:
        if letter in sample.options:
            return letter
    return sorted(sample.options)[0]


TEXT_RULES: dict[str, Callable[[Sample], str]] = {
    LONGEST: longest_option, SHORTEST: shortest_option, QUESTION_OVERLAP: question_overlap}


def shortcut_answers(samples: Sequence[Sample]) -> dict[str, dict[str, str]]:
    """Sample key -> rule -> chosen letter, for the closed samples.

    The majority rule ranks letters per task over the closed samples given here.
    """
    rankings: dict[str, list[str]] = {}
    for task in dict.fromkeys(s.task for s in samples):
        rankings[task] = letter_ranking(s for s in samples if s.task == task)
    answers: dict[str, dict[str, str]] = {}
    for sample in samples:
        if sample.kind != "closed" or not sample.options:
            continue
        chosen = {name: rule(sample) for name, rule in TEXT_RULES.items()}
        chosen[MAJORITY] = majority_choice(sample, rankings[sample.task])
        answers[sample.key] = chosen
    return answers


def shortcut_correct(samples: Sequence[Sample]) -> dict[str, dict[str, bool]]:
    """Sample key -> rule -> whether the rule's letter is the gold one (closed samples only)."""
    gold = {s.key: s.answer for s in samples}
    return {key: {rule: letter == gold[key] for rule, letter in chosen.items()}
            for key, chosen in shortcut_answers(samples).items()}


def shortcut_scores(correct: dict[str, dict[str, bool]], keys: Iterable[str] | None = None) -> dict[str, float]:
    """Accuracy (0-100) of every rule over ``keys`` (default: every key of ``correct``).

    Returns an empty dict when none of the keys is a closed sample in ``correct``.
    """
    chosen = [correct[k] for k in (correct if keys is None else keys) if k in correct]
    if not chosen:
        return {}
    return {rule: 100.0 * sum(c[rule] for c in chosen) / len(chosen) for rule in SHORTCUT_RULES}


def best_shortcut(scores: dict[str, float]) -> tuple[str, float] | None:
    """(rule, accuracy) of the best rule; equal scores go to the earlier rule of ``SHORTCUT_RULES``."""
    if not scores:
        return None
    rule = max(SHORTCUT_RULES, key=lambda r: (scores.get(r, -1.0), -SHORTCUT_RULES.index(r)))
    return rule, scores[rule]


def shortcut_normalised(accuracy: float | None, shortcut: float | None) -> float | None:
    """``100 * (acc - shortcut) / (100 - shortcut)``: 0 at the best text-only rule, 100 when perfect."""
    if accuracy is None or shortcut is None or shortcut >= 100:
        return None
    return 100.0 * (accuracy - shortcut) / (100.0 - shortcut)


def definition() -> dict[str, object]:
    """What the manifest records about the shortcut rules."""
    return {"version": SHORTCUT_RULES_VERSION, "rules": list(SHORTCUT_RULES), "ties": TIE_RULE, "length": "characters of the option text, stripped",
            "words": "distinct lower-cased runs of [a-z0-9]", "majority": "gold-letter ranking per task",
            "best": "the highest-scoring rule on the cell's own closed samples; equal scores to the earlier rule",
            "shortcut_normalised": "100 x (accuracy - best shortcut) / (100 - best shortcut)"}
