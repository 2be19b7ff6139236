"""Closed-answer extraction, rule version 2: which option did a reply choose?

``extract_choice(reply, options)`` returns one of the option letters (a key of ``options``) or
``"unparseable"``. It never guesses (no nearest option, no first letter of the reply) and never
returns a letter that is not an option. The rule, in order:

0. Clean-up. Markdown marks (``*``, backticks, ``#``; ``_`` unless inside a word) are removed. If
   the reply holds ``<answer>…</answer>`` or ``\\boxed{…}``, only their contents are read.
   Sentences ending in ``?`` are dropped (a restated question asserts nothing), and so is a
   restated option list: two or more ``L: option text`` entries (also ``L.``, ``L)``, ``(L)``)
   in increasing letter order, separated only by blanks, ``, ; . - •``, "and" or "or".
1. Letter statements. A letter counts only where it stands as a letter:
   a. the whole reply is the letter, optionally bracketed, optionally after "(the) (final/correct/
      best) answer/option/choice (is)" and a ``:``/``=``/dash, optionally before ``.``/``!``
      (``B``, ``(b)``, ``[B]``, ``Option C``, ``Answer: B.``);
   b. the reply starts with the letter bracketed, or followed by ``:``/``.``/``)`` and a blank,
      by a spaced dash, a line break or `` (`` (``B: text``, ``C - cataract``, ``B\\n\\nWhy…``,
      ``B (text)``) — unless two or more option letters start lines that way (an
      option-by-option analysis, whose first line is not the answer);
   c. "answer", optionally "is/was/would be/should be/will be" and ``:``/``=``/dash, then the
      letter (``Answer: (C) cataract``, ``the answer is B``, ``Final answer B``); "option" or
      "choice" needs the verb or the separator (``the correct option is (B)``);
   d. "(option/choice/answer) L is/seems (to be) (the) correct/right/best/answer/most likely";
   e. "choose/chose/select/selected/pick/picked/go with/opt for (option/choice) L".
   A lower-case ``a`` or ``i`` counts only when a bracket, ``:``/``.``/``)`` plus a blank, or the
   end follows it ("the answer is a lesion" and "I think" name nothing). Upper-case letters joined
   to a named letter by ``,`` ``/`` ``&`` "and" "or" "nor" are named too ("A or B").
2. Letter mentions (upper case), read only when 1 names no option letter: ``(B)``/``[B]`` anywhere,
   ``B:``/``B)`` anywhere, ``B.`` at a line start, "option(s) B" — plus letters joined as in 1.
   In 1 and in 2: exactly one option letter named -> that letter; two or more -> unparseable.
   Letters that are not options are ignored.
3. Consistency. If the words after a named letter (same line) start with an option's text, the
   longest such option must be the letter's own: ``B (progressive)`` is B when B is
   "progressive"; ``B: stable`` or ``Answer: B. Stable …`` is unparseable then.
4. Option text, only when no letter is named. Texts are compared as lower-case word sequences
   (``[a-z0-9]+``: case, punctuation and spacing do not matter); an option occurs where its whole
   word sequence occurs in the reply. An occurrence inside a longer occurrence of another option
   is ignored ("benign" inside "probably benign"). An occurrence right after "not", "no", "nor",
   "neither", "rather than" or "instead of" (an article may intervene, same clause) rejects that
   option. A negation word (not, no, never, none, neither, nor, cannot, unlikely, incorrect,
   excluded, ruled, n't, without) elsewhere in an occurrence's clause before it, or within the
   three words after it ("with no" and "without" excepted there), makes the reply unparseable:
   its meaning then depends on the question ("The first image shows no mass"). Negation words
   inside option texts do not count. Exactly one option with an occurrence neither rejected nor
   negated, and that option never rejected -> that option; otherwise unparseable (no elimination:
   "Not progressive." chooses nothing).
   Clauses end at punctuation and at but, whereas, while, however, although, though, and, so,
   therefore, thus, hence, because, since, which, indicating, suggesting, unlike.
"""
from __future__ import annotations

import re

from medmim_eval.schema import UNPARSEABLE

EXTRACTION_RULE_VERSION = "2"

# Underscores inside words ("pleural_effusion" in real options) separate words instead.
_MARKUP = re.compile(r"[*`#]+|(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])")
_WRAPPED = re.compile(r"<answer>([^<]*)</answer>|\\boxed\{([^{}]*)\}", re.IGNORECASE | re.DOTALL)
# Anchored at sentence starts: a long reply without "?" is scanned once, not once per character.
_QUESTION = re.compile(r"(?:^|(?<=[.!?\n]))[^.!?\n]*\?")
_LIST_GAP = re.compile(r"[\s,;.\-•]*(?:(?:and|or)\b[\s,;.\-•]*)?", re.IGNORECASE)
# Adjacent optional whitespace runs (\s*x?\s*) backtrack quadratically on long blank runs;
# the patterns below are written so that each run has one owner.
_LETTER = r"[(\[]?(?P<l>[A-Za-z])[)\]]?(?!\w)"
_VERB = r"(?:is|was|would\s+be|should\s+be|will\s+be)"
_SEPARATOR = r"(?:[:=\-–—]\s*)"
# 1: statements that a letter is the answer (docstring 1a-e). Cue words are case-insensitive;
# lower-case letters go through _plausible; 1d needs upper case ("a is correct" is not English).
_WHOLE = re.compile(rf"^\s*(?i:(?:the\s+)?(?:final\s+|correct\s+|best\s+)?(?:answer|option|choice)\s*(?:is\s*)?"
                    rf"{_SEPARATOR}?)?{_LETTER}\s*(?:[.!]\s*)?$")
_LEADING = re.compile(r"^\s*(?P<o>[(\[])?(?P<l>[A-Za-z])"
                      r"(?(o)[)\]]|(?=\s*[:.)](?:\s|$)|\s+[-–—]\s|[ \t]*\n|\s+\())")
_STATEMENTS = (
    _WHOLE, _LEADING,
    re.compile(rf"(?i:\banswer\s*(?:{_VERB}\s*)?{_SEPARATOR}?"
               rf"|\b(?:option|choice)\s*(?:{_VERB}\s*{_SEPARATOR}?|{_SEPARATOR})){_LETTER}"),
    re.compile(r"(?<![\w'])(?i:(?:option|choice|answer)\s+)?[(\[]?(?P<l>[A-Z])[)\]]?\s+(?i:is|seems)\s+(?i:to\s+be\s+)?"
               r"(?i:the\s+)?(?i:most\s+(?:likely|appropriate|accurate)|correct|right|best|answer)\b"),
    re.compile(rf"(?i:\b(?:choose|chose|select|selected|pick|picked|go\s+with|opt\s+for)\s+(?:option\s+|choice\s+)?)"
               rf"{_LETTER}"),
)
# 2: weaker mentions, trusted only when no statement exists ("Options A and C are wrong" alone).
_MENTIONS = (
    re.compile(r"[(\[](?P<l>[A-Z])[)\]]"),
    re.compile(r"(?<![\w'(\[])(?P<l>[A-Z])(?:\s*:|\))(?=\s|$)"),
    re.compile(r"(?m)^[ \t]*(?P<l>[A-Z])\.(?=\s|$)"),
    re.compile(r"(?i:\b(?:option|choice)s?\s+)[(\[]?(?P<l>[A-Z])[)\]]?(?!\w)"),
)
_COORDINATED = re.compile(r"\s*(?:,\s*(?:(?:or|and)\b\s*)?|(?:/|&|\bor\b|\band\b|\bnor\b)\s*)"
                          r"(?i:(?:option|choice)\s+)?[(\[]?(?P<l>[A-Z])[)\]]?(?!\w)")
_LINE_LETTER = re.compile(r"(?m)^[ \t]*[(\[]?(?P<l>[A-Z])(?:[)\]]|[:.)](?=\s|$))")
_ENTRY = re.compile(r"(?<![A-Za-z0-9])[(\[]?(?P<l>[A-Z])(?:[)\]]\s*(?:[:.\-]\s*)?|\s*[:.)\-]\s*)")
_NEXT_WORD = re.compile(r"[^A-Za-z0-9]*([A-Za-z0-9]+)")
_LETTER_END = re.compile(r"[)\]]|\s*(?:[:.)!]\s*)?$|\s*[:.)]\s")
_TOKEN = re.compile(r"[a-z0-9]+|[.;:!?,()\[\]\n]")
_WORD = re.compile(r"[a-z0-9]+")
_CLAUSE_WORDS = frozenset("but whereas while however although though and so therefore thus hence because "
                          "since which indicating suggesting unlike".split())
# "isn't" tokenises as "isn", "t"; a lone "t" only ever comes from such contractions.
_NEGATORS = frozenset("not no never without none neither nor cannot unlikely incorrect excluded ruled t isn "
                      "aren doesn don didn wasn weren hasn haven won couldn shouldn wouldn".split())
_REJECTORS = frozenset({"not", "no", "nor", "neither"})
_ARTICLES = frozenset({"a", "an", "the"})


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _plausible(letter: str, text: str, end: int) -> bool:
    """Whether a lower-case ``a``/``i`` is a letter rather than an English word."""
    return letter.isupper() or letter not in "ai" or _LETTER_END.match(text, end) is not None


def _clean(reply: str, option_words: dict[str, list[str]]) -> str:
    text = _MARKUP.sub("", reply or "")
    wrapped = [a or b for a, b in _WRAPPED.findall(text)]
    if wrapped:
        text = "\n".join(wrapped)
    text = _QUESTION.sub(" ", text)
    # A restated option list would otherwise name every letter and mention every text. Matched
    # word by word rather than with a regex per option: compiling one per call dominated run time.
    entries: list[tuple[int, int, str]] = []
    for match in _ENTRY.finditer(text):
        letter, position = match.group("l"), match.end()
        if not option_words.get(letter):
            continue
        for expected in option_words[letter]:
            word = _NEXT_WORD.match(text, position)
            if word is None or word.group(1).lower() != expected:
                break
            position = word.end()
        else:
            entries.append((match.start(), position, letter))
    runs: list[list[tuple[int, int, str]]] = []
    for entry in entries:
        last = runs[-1][-1] if runs else None
        # A list goes A, B, C...; "D: text" then "C: text" is the list, then the answer.
        if last and entry[2] > last[2] and _LIST_GAP.fullmatch(text, last[1], max(entry[0], last[1])):
            runs[-1].append(entry)
        else:
            runs.append([entry])
    pieces: list[str] = []
    kept_from = 0
    for run in runs:
        if len(run) >= 2:
            pieces += [text[kept_from:run[0][0]], "\n"]
            kept_from = run[-1][1]
    return ("".join(pieces) + text[kept_from:]).strip()


def _named(text: str, patterns: tuple[re.Pattern[str], ...]) -> list[tuple[str, int]]:
    """(upper-case letter, end offset) for every letter the patterns name, with coordinated ones."""
    found: list[tuple[str, int]] = []
    for pattern in patterns:
        for match in pattern.finditer(text):
            if not _plausible(match.group("l"), text, match.end("l")):
                continue
            found.append((match.group("l").upper(), match.end("l")))
            position = match.end()
            while (more := _COORDINATED.match(text, position)) is not None:
                found.append((more.group("l"), more.end("l")))
                position = more.end()
    return found


def _consistent(letter: str, text: str, ends: list[int], option_words: dict[str, list[str]]) -> bool:
    """Whether every option text written right after the letter is the letter's own."""
    # Only the first words after the letter matter; bounding the slice keeps long replies linear.
    reach = 8 * max(len(" ".join(words)) for words in option_words.values()) + 16
    for end in ends:
        line_end = text.find("\n", end, end + reach)
        follow = _words(text[end:line_end if line_end >= 0 else end + reach])
        starts = [k for k, words in option_words.items() if words and follow[:len(words)] == words]
        if starts and (letter not in starts
                       or len(option_words[letter]) < max(len(option_words[k]) for k in starts)):
            return False
    return True


def _by_text(text: str, option_words: dict[str, list[str]]) -> str:
    words: list[str] = []
    clause_start: list[int] = []  # for each word, the index of the first word of its clause
    new_clause = True
    for token in _TOKEN.findall(text.lower()):
        new_clause = new_clause or not token[0].isalnum() or token in _CLAUSE_WORDS
        if token[0].isalnum():
            clause_start.append(len(words) if new_clause else clause_start[-1])
            words.append(token)
            new_clause = False
    spans = [(start, start + len(ow), key) for key, ow in option_words.items() if ow
             for start in range(len(words) - len(ow) + 1) if words[start:start + len(ow)] == ow]
    # Drop occurrences inside a longer occurrence of another option ("benign" in "probably benign").
    longest = max((len(ow) for ow in option_words.values()), default=0)
    by_start: dict[int, list[tuple[int, str]]] = {}
    for s, e, k in spans:
        by_start.setdefault(s, []).append((e, k))
    spans = [(s, e, k) for s, e, k in spans
             if not any(k2 != k and e <= e2 and e2 - s2 > e - s
                        for s2 in range(max(0, s - longest), s + 1) for e2, k2 in by_start.get(s2, []))]
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
            return UNPARSEABLE
        positive.add(key)
    if len(positive) == 1 and not positive & rejected:
        return positive.pop()
    return UNPARSEABLE


def extract_choice(reply: str, options: dict[str, str]) -> str:
    """Return the chosen option letter (a key of ``options``), or ``"unparseable"``.

    Args:
        reply: the model's raw output.
        options: letter -> option text of the question (2–7 options in Med-MIM).
    """
    keys = {key.upper(): key for key in options}
    option_words = {key.upper(): _words(value) for key, value in options.items()}
    text = _clean(reply, option_words)
    if not text or not keys:
        return UNPARSEABLE
    statements = _STATEMENTS
    # "A: ...\nB: ..." is an option-by-option analysis; its first line is not an answer given first.
    if len({match.group("l") for match in _LINE_LETTER.finditer(text)} & keys.keys()) >= 2:
        statements = tuple(pattern for pattern in _STATEMENTS if pattern is not _LEADING)
    for patterns in (statements, _MENTIONS):
        named = [(letter, end) for letter, end in _named(text, patterns) if letter in keys]
        letters = {letter for letter, _ in named}
        if len(letters) > 1:
            return UNPARSEABLE
        if letters:
            letter = letters.pop()
            ends = [end for _, end in named]
            return keys[letter] if _consistent(letter, text, ends, option_words) else UNPARSEABLE
    choice = _by_text(text, option_words)
    return keys.get(choice, UNPARSEABLE)
