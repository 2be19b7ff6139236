"""Answer extraction, step 0: the reply text the rule reads (markup, special tokens, echoes removed).

``clean_reply`` removes what never states an answer: chat-template tokens, markdown marks, a
restated question, a restated option list. ``analysis_headers`` finds the letters that open the
lines of an option-by-option analysis; ``mask_letter_lists`` blanks enumerations of letters. Both
are read by the letter rules (:mod:`medmim_eval.extract_letters`), never select by themselves.
"""
from __future__ import annotations

import re

# Chat-template and tokenizer tokens models leak: <s>, </s>, <|im_end|>, <eos>, <end_of_utterance>...
_SPECIAL = re.compile(r"</?s>|<\|[^|<>\n]{1,40}\|>|</?(?:eos|bos|pad|unk|end_of_utterance|end_of_turn|"
                      r"start_of_turn|image|im_end|im_start)>|\[/?INST\]", re.IGNORECASE)
_ROLE = re.compile(r"^\s*(?:assistant|gpt|answer\s+from\s+the\s+model)\s*:\s*", re.IGNORECASE)
# Underscores inside words ("pleural_effusion" in real options) separate words instead.
_MARKUP = re.compile(r"[*`#]+|(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])")
_WRAPPED = re.compile(r"<answer>([^<]*)</answer>|\\boxed\{([^{}]*)\}", re.IGNORECASE | re.DOTALL)
# Anchored at sentence starts: a long reply without "?" is scanned once, not once per character.
_QUESTION = re.compile(r"(?:^|(?<=[.!?\n]))[^.!?\n]*\?")
_LIST_GAP = re.compile(r"[\s,;.\-•]*(?:(?:and|or)\b[\s,;.\-•]*)?", re.IGNORECASE)
_ENTRY = re.compile(r"(?<![A-Za-z0-9])[(\[]?(?P<l>[A-Z])(?:[)\]]\s*(?:[:.\-]\s*)?|\s*[:.)\-]\s*)")
_NEXT_WORD = re.compile(r"[^A-Za-z0-9]*([A-Za-z0-9]+)")
# A letter opening a line as an entry: "(B) ...", "B. ...", "B: ...", "B) ...", "- B: ...", "Option B: ...".
_LINE_ENTRY = re.compile(r"(?m)^[ \t]*(?:[-•][ \t]*)?(?:(?i:option|choice)[ \t]+)?[(\[]?(?P<l>[A-Z])"
                         r"(?:[)\]]|[:.)](?=\s|$)|(?=[ \t]+\(|[ \t]+[-–—][ \t]))")
# A line that ends by announcing the answer ("the answer is:", "I would select:") heads no analysis.
_ANSWER_CUE_LINE = re.compile(r"(?i)\b(?:answer|select|choose|chose|pick|go\s+with|is|are|be)\s*[:：]$")
# Two or more capital letters joined by , / & and or nor: "A, B, and D", "(A or B)", "B/C".
_LETTER_LIST = re.compile(r"(?<![\w'])[(\[]?[A-Z][)\]]?(?:(?:\s*,\s*(?:(?:and|or)\s+)?|\s*(?:/|&)\s*|\s+(?:and|or|nor)\s+)"
                          r"(?:(?i:option|choice|point)\s+)?[(\[]?[A-Z][)\]]?(?!\w))+")


def words_of(text: str) -> list[str]:
    """Lower-case word sequence of a text: case, punctuation and spacing never matter."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _restated_entries(text: str, option_words: dict[str, list[str]]) -> list[tuple[int, int, str]]:
    """(start, end, letter) of every ``L: option text`` (also ``L.``, ``L)``, ``(L)``) in the text."""
    entries: list[tuple[int, int, str]] = []
    for match in _ENTRY.finditer(text):
        letter, position = match.group("l"), match.end()
        if not option_words.get(letter):
            continue
        # Matched word by word rather than with a regex per option: compiling one per call was slow.
        for expected in option_words[letter]:
            word = _NEXT_WORD.match(text, position)
            if word is None or word.group(1).lower() != expected:
                break
            position = word.end()
        else:
            entries.append((match.start(), position, letter))
    return entries


def _drop_option_lists(text: str, option_words: dict[str, list[str]]) -> str:
    """Remove runs of two or more restated options in letter order, separated only by blanks and commas."""
    runs: list[list[tuple[int, int, str]]] = []
    for entry in _restated_entries(text, option_words):
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
    return "".join(pieces) + text[kept_from:]


def clean_reply(reply: str, option_words: dict[str, list[str]]) -> str:
    """The reply without tokens, markup, restated questions and restated option lists."""
    text = _ROLE.sub("", _SPECIAL.sub(" ", reply or ""))
    text = _MARKUP.sub("", text)
    wrapped = [a or b for a, b in _WRAPPED.findall(text)]
    if wrapped:
        text = "\n".join(wrapped)
    text = _QUESTION.sub(" ", text)
    return _drop_option_lists(text, option_words).strip()


def analysis_headers(text: str, letters: set[str]) -> list[re.Match[str]]:
    """Line-opening letters that head an option-by-option discussion rather than answer.

    Two or more different option letters opening lines make every such line a header; a single
    one is a header when the line before it ends with a colon ("Let's analyze each option:").
    """
    entries = [m for m in _LINE_ENTRY.finditer(text) if m.group("l") in letters]
    if len({m.group("l") for m in entries}) >= 2:
        return entries
    headers = []
    for match in entries:
        before = text[:match.start()].rstrip()
        if before.endswith(":") and not _ANSWER_CUE_LINE.search(before[-60:]):
            headers.append(match)
    return headers


def strip_header_texts(text: str, headers: list[re.Match[str]], option_words: dict[str, list[str]]) -> str:
    """Blank each header's letter and the option text restated right after it (the comment stays)."""
    spans = []
    restated = {start: (end, letter) for start, end, letter in _restated_entries(text, option_words)}
    for header in headers:
        at = header.start("l")
        end = max((restated[start][0] for start in (at - 1, at) if start in restated), default=header.end())
        spans.append((header.start(), max(end, header.end())))
    return blank(text, spans)


def mask_letter_lists(text: str) -> str:
    """Blank enumerations of letters ("points A, B, C and D", "(A or B)"): a list never selects."""
    return blank(text, [m.span() for m in _LETTER_LIST.finditer(text)])


def blank(text: str, spans: list[tuple[int, int]]) -> str:
    """The text with each span replaced by spaces (offsets elsewhere stay valid)."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)
