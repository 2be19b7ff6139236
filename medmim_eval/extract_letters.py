"""Answer extraction, steps 1-2: which option letters a reply states, and which it merely mentions.

``stated_letters`` finds statements that a letter is the answer ("Answer: B", "I would select:
(C)", "the point ... is C."); ``mentioned_letters`` finds weaker mentions ("(B)", "option B",
"point B") with analysis headers and letter lists already blanked. Each hit is a :class:`Hit`
carrying the rule's name and the quoted words, so a decision can be explained.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from medmim_eval.extract_clean import words_of

# Adjacent optional whitespace runs (\s*x?\s*) backtrack quadratically on long blank runs;
# the patterns below are written so that each run has one owner.
_LETTER = r"[(\[]?(?P<l>[A-Za-z])[)\]]?(?![\w'])"
_VERB = r"(?:is|was|would\s+be|should\s+be|will\s+be|ist|es|est|sera|é|è)(?!\w)"
# After a separator, bullets and line breaks may come before the letter ("would be:\n- (D)").
_SEPARATOR = r"(?:[:=\-–—：][\s\-•]*)"
_ANSWER = r"(?:answer|antwort|respuesta|r[ée]ponse|resposta|risposta)"
_FILLER = r"(?:(?:la|le|die|der)\s+)?(?:(?:option|choice|opción|letter)\s+)?"
_CORRECT = (r"(?:most\s+(?:likely|appropriate|accurate)|correct|best|better|preferred|right|answer)"
            r"(?:\s+(?:answer|choice|option|one|match|fit))?")
# "right" and "best" describe the letter only when nothing else follows ("D is the right ear tip").
_ENDS_CLAIM = r"(?=\s*(?:[.,;:!)\n]|$)|\s+(?:because|since|as|given|for|here|based|in|according|with)\b)"

STATEMENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("whole reply is a letter", re.compile(
        rf"^\s*(?i:(?:the\s+)?(?:final\s+|correct\s+|best\s+|my\s+)?(?:answer|option|choice)\s*(?:is\s*)?"
        rf"{_SEPARATOR}?|答案\s*(?:是|为)?\s*[:：]?\s*|选\s*)?{_LETTER}\s*(?:[.!。]\s*)?$")),
    ("reply opens with a letter", re.compile(
        r"^\s*(?P<o>[(\[])?(?P<l>[A-Za-z])(?(o)[)\]]|(?=\s*[:.)](?:\s|$)|\s+[-–—]\s|[ \t]*\n|\s+\())")),
    ("answer statement", re.compile(
        rf"(?i:\b(?:{_ANSWER})\s*(?:(?:correct[ao]?|correcte|final|finale)\s+)?(?:{_VERB}\s*)?{_SEPARATOR}?{_FILLER}"
        rf"|\b(?:option|choice)\s*(?:{_VERB}\s*{_SEPARATOR}?|{_SEPARATOR})"
        rf"|答案\s*(?:是|为|應為|应为|应该是)?\s*[:：]?\s*|选(?:择)?\s*){_LETTER}")),
    ("letter called correct", re.compile(
        rf"(?<![\w'])(?i:(?:option|choice|answer|point)\s+)?[(\[]?(?P<l>[A-Z])[)\]]?\s+(?i:is|seems)\s+"
        rf"(?i:to\s+be\s+)?(?i:the\s+)?(?i:{_CORRECT}){_ENDS_CLAIM}")),
    ("letter chosen", re.compile(
        rf"(?i:\b(?:choose|chose|select|selected|pick|picked|go\s+with|opt\s+for)\s*:?[\s\-•]*"
        rf"(?:option\s+|choice\s+)?){_LETTER}")),
    ("sentence ends on a letter", re.compile(
        r"(?i:\b(?:is|would\s+be|will\s+be|be)\s+(?:(?:option|choice|point|letter)\s+)?)"
        r"[(\[]?(?P<l>[A-Z])[)\]]?(?=\s*(?:[.!;]|$))")),
    ("letter after 'is:'", re.compile(
        r"(?i:\b(?:is|would\s+be|are)\s*:[\s\-•]*)[(\[]?(?P<l>[A-Z])(?:[)\]]|[.:)](?=\s|$)|(?=\s*$))")),
    ("hedged letter", re.compile(
        r"(?i:\b(?:most\s+likely|probably|possibly|perhaps|likely|i\s+think(?:\s+it'?s)?|"
        r"i\s+believe(?:\s+it'?s)?)\s*[:,]?\s+(?:option\s+|choice\s+)?)[(\[]?(?P<l>[A-Z])[)\]]?(?![\w'])")),
)
MENTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bracketed letter", re.compile(r"[(\[](?P<l>[A-Z])[)\]]")),
    ("letter with a colon", re.compile(r"(?<![\w'(\[])(?P<l>[A-Z])(?:\s*:|\))(?=\s|$)")),
    ("letter opening a line", re.compile(r"(?m)^[ \t]*(?P<l>[A-Z])\.(?=\s|$)")),
    ("option named", re.compile(r"(?i:\b(?:option|choice|point|letter)s?\s+)[(\[]?(?P<l>[A-Z])[)\]]?(?![\w'])")),
)
_LETTER_END = re.compile(r"[)\]]|\s*(?:[:.)!]\s*)?$|\s*[:.)]\s")


@dataclass(frozen=True)
class Hit:
    """One place where a rule found a letter: the rule's name, the letter, where it ends, the words."""

    rule: str
    letter: str
    end: int
    quote: str


def _plausible(letter: str, text: str, end: int) -> bool:
    """Whether a lower-case ``a``/``i`` is a letter rather than an English word ("the answer is a lesion")."""
    return letter.isupper() or letter not in "ai" or _LETTER_END.match(text, end) is not None


def _hits(text: str, patterns: tuple[tuple[str, re.Pattern[str]], ...], letters: set[str]) -> list[Hit]:
    found: list[Hit] = []
    for name, pattern in patterns:
        for match in pattern.finditer(text):
            letter = match.group("l")
            if letter.upper() not in letters or not _plausible(letter, text, match.end("l")):
                continue
            found.append(Hit(name, letter.upper(), match.end("l"), _quote(text, match.start(), match.end())))
    return found


def _quote(text: str, start: int, end: int) -> str:
    """The line around a match, blanks collapsed, at most about 100 characters."""
    line_start = max(text.rfind("\n", 0, start) + 1, start - 60)
    line_end = text.find("\n", end)
    line_end = min(line_end if line_end >= 0 else len(text), end + 40)
    return " ".join(text[line_start:line_end].split())


def stated_letters(text: str, letters: set[str], analysis: bool) -> list[Hit]:
    """Statements that a letter is the answer. In an option-by-option analysis, the first line is no answer."""
    patterns = tuple(p for p in STATEMENTS if not (analysis and p[0] == "reply opens with a letter"))
    return _hits(text, patterns, letters)


def mentioned_letters(text: str, letters: set[str]) -> list[Hit]:
    """Mentions of a letter, read only where no statement names one."""
    return _hits(text, MENTIONS, letters)


def text_disagreement(letter: str, text: str, ends: list[int], option_words: dict[str, list[str]]) -> str | None:
    """The other option whose text follows the letter on its line (``B: stable`` for A=stable), if any."""
    # Only the first words after the letter matter; bounding the slice keeps long replies linear.
    reach = 8 * max(len(" ".join(words)) for words in option_words.values()) + 16
    for end in ends:
        line_end = text.find("\n", end, end + reach)
        follow = words_of(text[end:line_end if line_end >= 0 else end + reach])
        starts = [k for k, words in option_words.items() if words and follow[:len(words)] == words]
        if not starts:
            continue
        longest = max(starts, key=lambda k: len(option_words[k]))
        if letter not in starts or len(option_words[letter]) < len(option_words[longest]):
            return longest
    return None
