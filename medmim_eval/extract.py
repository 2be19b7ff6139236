"""Closed-answer extraction: which option did the reply choose?

The rule is conservative and versioned. It never guesses: a reply that asserts no option, or two
different ones, is ``unparseable``. Letters count only where they stand as a letter — alone, in
brackets, before ``:``/``.``/``)``, or after words like "answer"/"option" — so "The second image"
never becomes option "T".
"""
from __future__ import annotations

import re

from medmim_eval.schema import UNPARSEABLE

EXTRACTION_RULE_VERSION = "1"

_MARKUP = re.compile(r"[*_`#]+")
# "B", "(B)", "[B]", "B.", "B:", "B)" at the start of the reply.
_LEADING = re.compile(r"^\s*[\(\[]?([A-Za-z])(?:[\)\]]|\s*[:.)](?=\s|$))")
_LEADING_ALONE = re.compile(r"^\s*[\(\[]?([A-Za-z])[\)\]]?\s*[.!]?\s*$")
# "answer: B", "the answer is (B)", "correct option is B", "I choose B"
_CUE = re.compile(
    r"\b(?:answer|option|choice|choose|select|pick)s?\b(?:\s+(?:would\s+be|is|are|:))?\s*[:\-]?\s*"
    r"[\(\[]?([A-Za-z])(?:[\)\]]|(?=[\s.,;:!]|$))",
    re.IGNORECASE,
)
# "(B)" anywhere.
_BRACKETED = re.compile(r"[\(\[]([A-Z])[\)\]]")
_WORD = re.compile(r"[a-z0-9]+")


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def extract_choice(reply: str, options: dict[str, str]) -> str:
    """Return the chosen option letter, or ``"unparseable"``.

    Args:
        reply: the model's raw output.
        options: letter -> option text of the question.
    """
    text = _MARKUP.sub("", reply or "").strip()
    if not text:
        return UNPARSEABLE
    letters = {letter.upper() for letter in options}
    normalised_options = {letter: _normalise(option) for letter, option in options.items()}

    alone = _LEADING_ALONE.match(text)
    if alone and alone.group(1).upper() in letters:
        return alone.group(1).upper()

    asserted: set[str] = set()
    leading = _LEADING.match(text)
    if leading:
        letter = leading.group(1)
        # A lone lower-case "a" or "i" at the start is more likely an English word.
        if letter.upper() in letters and (letter.isupper() or text[leading.end(1):leading.end(1) + 1] in ":.)]"):
            asserted.add(letter.upper())
    for match in _CUE.finditer(text):
        letter = match.group(1)
        if letter.upper() in letters and (letter.isupper() or match.group(0).rstrip()[-1:] in ")]" or len(match.group(0).split()) <= 3):
            asserted.add(letter.upper())
    for match in _BRACKETED.finditer(text):
        if match.group(1) in letters:
            asserted.add(match.group(1))
    if len(asserted) == 1:
        return asserted.pop()
    if len(asserted) > 1:
        return UNPARSEABLE

    reply_norm = _normalise(text)
    for letter, option in normalised_options.items():
        if option and reply_norm == option:
            return letter
    mentioned = [
        letter
        for letter, option in normalised_options.items()
        if option and re.search(rf"(?<![a-z0-9]){re.escape(option)}(?![a-z0-9])", reply_norm)
    ]
    # Drop options whose text is contained in another mentioned option ("stable" in "not stable").
    mentioned = [
        a for a in mentioned
        if not any(a != b and normalised_options[a] in normalised_options[b] for b in mentioned)
    ]
    if len(mentioned) == 1:
        return mentioned[0]
    return UNPARSEABLE
