"""Closed-answer extraction, rule version 3: which option did a reply choose, and which rule said so?

``extract_choice(reply, options)`` returns one of the option letters (a key of ``options``) or
``"unparseable"``; ``decide_choice`` returns the same answer as a :class:`Decision` that also names
the rule that decided (or why none did). The rule never guesses (no nearest option, no first
letter of the reply) and never returns a letter that is not an option. In order:

0. Clean-up (:mod:`medmim_eval.extract_clean`). Chat-template tokens (``<s>``, ``</s>``,
   ``<|im_end|>``, ``<eos>``...), a leading ``ASSISTANT:`` and markdown marks are removed. If the
   reply holds ``<answer>…</answer>`` or ``\\boxed{…}``, only their contents are read. Sentences
   ending in ``?`` are dropped (a restated question asserts nothing), and so is a restated option
   list (two or more ``L: option text`` entries in letter order, separated only by blanks, commas
   or "and"/"or").
   Enumerations never select: lists of two or more capital letters ("points A, B, C, and D",
   "(A or B)", "B/C") are blanked. Headers never select: in an option-by-option analysis (two or
   more option letters opening lines, or one opening the line after a colon) the opening letters
   and the option text restated after them are blanked.
1. Letter statements (:mod:`medmim_eval.extract_letters`): the whole reply is a letter (``B``,
   ``(b)``, ``Answer: B.``, ``答案：B``); the reply opens with a letter (``B: text``, ``(B) text``,
   ``B\\n\\nWhy…``; not in an analysis); "answer (is/would be)(:)" then the letter, also after line
   breaks and bullets ("the correct answer would be:\\n- (D)", "So, the answer is: (A) the second
   image", "Antwort ist B", "答案是 B"); "option/choice is L"; "L is correct/the best answer/most
   likely" ("right" and "best" only when nothing follows them: "Point D is the right ear tip"
   calls nothing correct); "choose/select/pick/go with (:) L" ("I would select:\\n\\n(C) ...");
   a sentence ending on "is (point/option) L" ("The point ... is C."); "is:" then a letter on
   the next line ("Therefore, the point ... is:\\n(B) Point B"); hedges ("Most likely B",
   "Probably C"). A lower-case ``a``/``i`` counts only where a bracket, ``:``/``.``/``)`` plus a
   blank, or the end follows it.
2. Letter mentions, read only when 1 names no option letter: ``(B)``/``[B]``, ``B:``/``B)``,
   ``B.`` opening a line, "option/choice/point/letter B" (upper case only).
   In 1 and in 2: exactly one option letter -> that letter; two or more -> unparseable (a reply
   that commits to two answers). Letters that are not options are ignored.
3. Agreement: if the words after a named letter (same line) start with an option's text, the
   longest such option must be the letter's own (``B: stable`` for A=stable is unparseable).
4. Option text, only when no letter is named (:mod:`medmim_eval.extract_text`). Texts compare as
   lower-case word sequences. The last conclusion ("Therefore", "Thus", "In conclusion", "Based
   on this analysis"...) is read first; then the whole reply. An option asserted there, not
   negated and not inside a longer option's text, is chosen if it is the only one; "not X",
   "rather than X" reject X; a negation elsewhere in the clause makes the reply unparseable; two
   options asserted -> unparseable (no elimination: "Not progressive." chooses nothing).
   Yes/no options are read from the reply's first word (or "the answer is yes/no"), in English,
   German, French, Spanish, Italian, Portuguese and Chinese; a "no" later in a sentence is a
   negation, not an answer. Left/right options also accept those languages' words for the sides.
"""
from __future__ import annotations

from dataclasses import dataclass

from medmim_eval.extract_clean import (analysis_headers, clean_reply, mask_letter_lists, strip_header_texts,
                                       words_of)
from medmim_eval.extract_letters import Hit, mentioned_letters, stated_letters, text_disagreement
from medmim_eval.extract_text import NO_TEXT, choice_by_text
from medmim_eval.schema import UNPARSEABLE

EXTRACTION_RULE_VERSION = "3"


@dataclass(frozen=True)
class Decision:
    """What the rule extracted, the rule (step) that decided, and the evidence or the reason for none."""

    answer: str
    rule: str
    detail: str

    def line(self) -> str:
        return f"{self.answer} — {self.rule}: {self.detail}"


def _by_letters(hits: list[Hit], tier: str, text: str, keys: dict[str, str],
                option_words: dict[str, list[str]]) -> Decision:
    letters = sorted({hit.letter for hit in hits})
    if len(letters) > 1:
        quotes = "; ".join(f"'{h.quote}'" for h in hits[:4])
        return Decision(UNPARSEABLE, f"{tier}s disagree", f"letters {', '.join(letters)} ({quotes})")
    letter = letters[0]
    first = hits[0]
    other = text_disagreement(letter, text, [hit.end for hit in hits], option_words)
    if other is not None:
        return Decision(UNPARSEABLE, "letter and option text disagree",
                        f"'{first.quote}' is followed by option {other}'s text")
    return Decision(keys[letter], f"{tier} ({first.rule})", f"'{first.quote}'")


def decide_choice(reply: str, options: dict[str, str]) -> Decision:
    """The extracted option letter (a key of ``options``) or ``"unparseable"``, with the rule that decided.

    Args:
        reply: the model's raw output.
        options: letter -> option text of the question (2–7 options in Med-MIM).
    """
    keys = {key.upper(): key for key in options}
    option_words = {key.upper(): words_of(value) for key, value in options.items()}
    text = clean_reply(reply, option_words)
    if not text or not keys:
        return Decision(UNPARSEABLE, "no rule", "the reply is empty once tokens and markup are removed")
    headers = analysis_headers(text, set(keys))
    analysis = len({h.group("l") for h in headers}) >= 2
    letters_text = mask_letter_lists(strip_header_texts(text, headers, option_words))
    for tier, found in (("letter statement", lambda: stated_letters(letters_text, set(keys), analysis)),
                        ("letter mention", lambda: mentioned_letters(letters_text, set(keys)))):
        hits = found()
        if hits:
            return _by_letters(hits, tier, letters_text, keys, option_words)
    letter, reason = choice_by_text(strip_header_texts(text, headers, option_words), option_words)
    if letter:
        return Decision(keys[letter], "option text", reason)
    if letter is None and reason == NO_TEXT:
        return Decision(UNPARSEABLE, "no rule", "no option letter and no option text in the reply")
    return Decision(UNPARSEABLE, "option text unclear", reason)


def extract_choice(reply: str, options: dict[str, str]) -> str:
    """Return the chosen option letter (a key of ``options``), or ``"unparseable"``."""
    return decide_choice(reply, options).answer
