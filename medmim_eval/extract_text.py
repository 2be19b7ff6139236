"""Answer extraction, step 4: which option's text a reply asserts, when it names no letter.

``choice_by_text`` returns ``(letter or None, reason)``; ``None`` with reason ``"no option text"``
means the reply never wrote an option's text. Yes/no and left/right options are also read in
German, French, Spanish, Italian, Portuguese and Chinese.
"""
from __future__ import annotations

import re

_TOKEN = re.compile(r"[a-z0-9]+|[.;:!?,()\[\]\n]")
_CLAUSE_WORDS = frozenset("but whereas while however although though and so therefore thus hence because "
                          "since which indicating suggesting unlike".split())
# "isn't" tokenises as "isn", "t"; a lone "t" only ever comes from such contractions.
_NEGATORS = frozenset("not no never without none neither nor cannot unlikely incorrect excluded ruled t isn "
                      "aren doesn don didn wasn weren hasn haven won couldn shouldn wouldn".split())
_REJECTORS = frozenset({"not", "no", "nor", "neither"})
_ARTICLES = frozenset({"a", "an", "the"})
# A conclusion opens the last part of a reasoning reply; an option text there beats the discussion before.
_CONCLUSION = re.compile(r"(?im)(?:^|(?<=[.!:\n])\s*)(?:therefore|thus|hence|so|in\s+conclusion|in\s+summary|"
                         r"overall|to\s+summari[sz]e|conclusion|final\s+answer|based\s+on\s+(?:this|the\s+above|"
                         r"these|my)\b[^,.\n]*)\b")
NO_TEXT = "no option text"

# Polar answers: the reply's first word decides ("No, there is no change" answers No).
_POLAR = {
    "yes": ("yes", "yeah", "yep", "ja", "si", "sí", "oui", "sim", "是", "是的", "对", "对的"),
    "no": ("no", "nope", "nein", "non", "não", "nao", "否", "不", "不是"),
}
_SIDES = {
    "left": ("left", "links", "linke", "linken", "linker", "izquierda", "izquierdo", "gauche", "sinistra",
             "sinistro", "esquerda", "esquerdo"),
    "right": ("right", "rechts", "rechte", "rechten", "rechter", "derecha", "derecho", "droite", "destra",
              "destro", "direita", "direito"),
}
_SIDE_CHARS = {"left": "左", "right": "右"}
_FIRST_WORD = re.compile(r"^[^\w]*([^\W\d_]+)")
_POLAR_STATEMENT = re.compile(r"(?i)\banswer\s+is\s*:?\s*(yes|no)\b(?!\s*(?:or|/|and)\b)")


def _polar_choice(text: str, kinds: dict[str, str]) -> tuple[str | None, str]:
    """Yes/no options: the reply's first word, or "the answer is yes/no"."""
    first = _FIRST_WORD.match(text)
    word = first.group(1).lower() if first else ""
    for kind, spellings in _POLAR.items():
        # Chinese has no spaces: the first characters are the word ("否，没有变化").
        if word in spellings or any(word.startswith(s) for s in spellings if not s.isascii()):
            return kinds.get(kind), f"reply opens with '{first.group(1) if first else ''}'"
    statement = _POLAR_STATEMENT.search(text)
    if statement:
        return kinds.get(statement.group(1).lower()), f"'{statement.group(0)}'"
    return None, "no yes or no opening the reply"


def _sides_to_english(text: str) -> str:
    """Left/right options: other languages' words for the sides, spelled in English."""
    for side, chars in _SIDE_CHARS.items():
        text = text.replace(chars, f" {side} ")
    for side, spellings in _SIDES.items():
        text = re.sub(r"(?i)\b(?:" + "|".join(spellings[1:]) + r")\b", side, text)
    return text


def _tokens(text: str) -> tuple[list[str], list[int]]:
    """Words of the text and, per word, the index of the first word of its clause."""
    words: list[str] = []
    clause_start: list[int] = []
    new_clause = True
    for token in _TOKEN.findall(text.lower()):
        new_clause = new_clause or not token[0].isalnum() or token in _CLAUSE_WORDS
        if token[0].isalnum():
            clause_start.append(len(words) if new_clause else clause_start[-1])
            words.append(token)
            new_clause = False
    return words, clause_start


def _occurrences(words: list[str], option_words: dict[str, list[str]]) -> list[tuple[int, int, str]]:
    """(start, end, letter) per option-text occurrence, without those inside a longer option's occurrence."""
    spans = [(start, start + len(ow), key) for key, ow in option_words.items() if ow
             for start in range(len(words) - len(ow) + 1) if words[start:start + len(ow)] == ow]
    longest = max((len(ow) for ow in option_words.values()), default=0)
    by_start: dict[int, list[tuple[int, str]]] = {}
    for s, e, k in spans:
        by_start.setdefault(s, []).append((e, k))
    return [(s, e, k) for s, e, k in spans
            if not any(k2 != k and e <= e2 and e2 - s2 > e - s
                       for s2 in range(max(0, s - longest), s + 1) for e2, k2 in by_start.get(s2, []))]


def _asserted(text: str, option_words: dict[str, list[str]]) -> tuple[str | None, str]:
    words, clause_start = _tokens(text)
    spans = _occurrences(words, option_words)
    if not spans:
        return None, NO_TEXT
    covered = {i for s, e, _ in spans for i in range(s, e)}  # negations inside option texts don't count
    negations = [0]  # negations[i]: negation words before word i (prefix sums keep this linear)
    for i, word in enumerate(words):
        negations.append(negations[-1] + (word in _NEGATORS and i not in covered))
    positive: set[str] = set()
    rejected: set[str] = set()
    for start, end, key in spans:
        before = start - 1
        while before >= clause_start[start] and words[before] in _ARTICLES:
            before -= 1
        prior = words[before] if before >= clause_start[start] else ""
        pair = " ".join(words[before - 1:before + 1]) if before - 1 >= clause_start[start] else ""
        if prior in _REJECTORS or pair in {"rather than", "instead of"}:
            rejected.add(key)
            continue
        after = [j for j in range(end, min(end + 3, len(words)))
                 if clause_start[j] == clause_start[end - 1] and j not in covered and words[j] in _NEGATORS
                 and words[j] != "without" and words[j - 1:j + 1] != ["with", "no"]]
        if negations[start] - negations[clause_start[start]] or after:
            return "", f"option {key}'s text stands next to a negation"
        positive.add(key)
    if len(positive) == 1 and not positive & rejected:
        key = positive.pop()
        return key, f"only option {key}'s text is asserted"
    if len(positive) > 1:
        return "", "texts of options " + ", ".join(sorted(positive)) + " are all asserted"
    return "", "option texts are only rejected"


def choice_by_text(text: str, option_words: dict[str, list[str]]) -> tuple[str | None, str]:
    """(letter, reason); letter is ``""`` for a text that names options but asserts none clearly.

    The last conclusion ("Therefore, ...", "In conclusion, ...") is read first: there, one option
    asserted beats the option-by-option discussion before it.
    """
    texts = {" ".join(words) for words in option_words.values()}
    if texts == {"yes", "no"}:
        kinds = {" ".join(w): k for k, w in option_words.items()}
        letter, reason = _polar_choice(text, kinds)
        return letter, reason
    if texts == {"left", "right"}:
        text = _sides_to_english(text)
    conclusions = list(_CONCLUSION.finditer(text))
    if conclusions:
        letter, reason = _asserted(text[conclusions[-1].start():], option_words)
        if letter is not None:
            return letter, f"in the conclusion '{conclusions[-1].group(0).strip()} ...': {reason}"
    return _asserted(text, option_words)
