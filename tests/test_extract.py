"""Closed-answer extraction: the listed forms, and no guessing."""
from __future__ import annotations

import pytest

from medmim_eval.extract import extract_choice

OPTIONS = {"A": "stable", "B": "progressive", "C": "no new symptoms"}

CASES = [
    ("B", "B"), ("b", "B"), ("(B)", "B"), ("B.", "B"), ("B:", "B"), ("B)", "B"), ("**B**", "B"),
    ("B: progressive", "B"), ("Answer: B", "B"), ("The answer is B.", "B"), ("the correct option is (B)", "B"),
    ("The correct answer is (C) no new symptoms.", "C"), ("progressive", "B"), ("Progressive.", "B"),
    ("The tumour looks progressive compared with the first scan.", "B"),
    ("The second image shows a larger lesion.", "unparseable"),
    ("The first image is clearer", "unparseable"),
    ("I cannot determine this from the images.", "unparseable"),
    ("A or B", "unparseable"),
    ("Answer: A. Actually the answer is B", "unparseable"),
    ("", "unparseable"),
    ("A lesion is visible.", "unparseable"),
    ("It is stable, not progressive.", "unparseable"),
]


@pytest.mark.parametrize("reply, expected", CASES)
def test_extract_choice(reply: str, expected: str) -> None:
    assert extract_choice(reply, OPTIONS) == expected


def test_letter_outside_the_options_is_not_an_answer() -> None:
    assert extract_choice("D", OPTIONS) == "unparseable"


def test_option_text_contained_in_another_option_prefers_the_longer() -> None:
    options = {"A": "benign", "B": "probably benign", "C": "suspicious"}
    assert extract_choice("Probably benign findings.", options) == "B"
