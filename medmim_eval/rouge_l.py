"""ROUGE-L recall exactly as rouge-score's ``RougeScorer(['rougeL'])`` computes it, without its
per-pair overhead: tokens come from rouge-score's own tokenizer (each reference tokenised once),
and the longest common subsequence is measured with a bit-parallel algorithm (Allison & Dix 1986;
Hyyrö 2004) instead of a Python table, so long answers cost microseconds. Without stemming only
``rouge_score.tokenize`` is imported (no nltk).
"""
from __future__ import annotations

from typing import Callable


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a
    positions: dict[str, int] = {}
    for i, token in enumerate(b):  # one bit per position of the shorter list
        positions[token] = positions.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    row = full
    for token in a:
        matches = row & positions.get(token, 0)
        row = ((row + matches) | (row - matches)) & full
    return len(b) - bin(row).count("1")


class RougeLRecall:
    """ROUGE-L recall (0-1) of a prediction against a reference: LCS / reference tokens."""

    def __init__(self, use_stemmer: bool = False) -> None:
        if use_stemmer:
            from rouge_score.tokenizers import DefaultTokenizer

            self._tokenize: Callable[[str], list[str]] = DefaultTokenizer(use_stemmer=True).tokenize
        else:
            from rouge_score.tokenize import tokenize

            self._tokenize = lambda text: tokenize(text, None)
        self._references: dict[str, list[str]] = {}

    def __call__(self, prediction: str, reference: str) -> float:
        target = self._references.get(reference)
        if target is None:
            target = self._references[reference] = self._tokenize(reference)
        tokens = self._tokenize(prediction)
        if not target or not tokens:
            return 0.0
        return lcs_length(target, tokens) / len(target)
