"""A human review queue for generated QA pairs: export, reviewers' decisions, and applying them.

Plain functions over :class:`~.question_templates.Draft` items, independent of the harness (the
standard library only), so they work from a notebook as well as from a builder:

- :func:`export_queue` writes one row per item to CSV or JSONL (by the file's suffix) with the
  columns ``QUEUE_COLUMNS``; reviewers fill ``decision`` (``accept``, ``edit`` or ``reject``) and,
  for edits, ``edited_question`` and/or ``edited_answer`` (for a closed item: a letter or the exact
  text of one of its options).
- :func:`read_decisions` reads that file back, refusing unknown decisions, edits without text and
  duplicate keys, each error naming the file and row.
- :func:`apply_decisions` drops rejected items and uses edited text. A decision whose
  ``fingerprint`` no longer matches the item's text (the item changed since it was reviewed) is not
  applied: the item counts as stale and is treated as unreviewed.

Builders expose this as ``--option review=decisions.csv`` (apply) and ``--option
review_export=csv|jsonl`` (write ``review_queue.<ext>`` into the output folder).
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from medmim_eval.dataset_builders.question_templates import Draft

QUEUE_COLUMNS = ("key", "fingerprint", "file", "item_id", "kind", "images", "question", "options", "answer",
                 "origin", "decision", "edited_question", "edited_answer", "note")
_DECISIONS = {"accept": "accept", "accepted": "accept", "edit": "edit", "edited": "edit",
              "reject": "reject", "rejected": "reject"}
_OPTION_LINE = re.compile(r"\n\s*[A-Z]:")


class ReviewFileError(ValueError):
    """A decisions file that cannot be applied; the message names the file and row."""


@dataclass(frozen=True)
class Decision:
    key: str
    decision: str  # accept, edit or reject
    fingerprint: str = ""
    edited_question: str = ""
    edited_answer: str = ""
    where: str = ""  # "FILE row N", for messages


@dataclass
class ReviewOutcome:
    kept: list[Draft] = field(default_factory=list)
    accepted: int = 0
    edited: int = 0
    rejected: int = 0
    stale: list[str] = field(default_factory=list)
    unreviewed: int = 0
    unknown_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"review: {self.accepted} accepted, {self.edited} edited, {self.rejected} rejected, "
                f"{self.unreviewed} unreviewed ({len(self.stale)} stale), "
                f"{len(self.unknown_keys)} decisions for items not in this build")


def queue_rows(drafts: Iterable[Draft]) -> list[dict[str, str]]:
    """One reviewable row per draft, decision columns empty."""
    rows = []
    for d in drafts:
        options = "" if d.options is None else " | ".join(f"{chr(65 + i)}: {t}" for i, t in enumerate(d.options))
        answer = d.answer if d.answer_index is None else f"{chr(65 + d.answer_index)}: {d.answer}"
        rows.append({"key": d.key, "fingerprint": d.fingerprint(), "file": d.file_stem, "item_id": d.item_id,
                     "kind": d.kind, "images": " | ".join(d.images), "question": d.question, "options": options,
                     "answer": answer, "origin": d.origin, "decision": "", "edited_question": "",
                     "edited_answer": "", "note": ""})
    return rows


def export_queue(drafts: Iterable[Draft], path: Path) -> Path:
    """Write the review queue to ``path`` (``.csv`` or ``.jsonl``); returns ``path``."""
    rows = queue_rows(drafts)
    if path.suffix.lower() == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=QUEUE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return path


def _raw_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewFileError(f"{path}: cannot be read ({exc})") from None
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReviewFileError(f"{path} line {number}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ReviewFileError(f"{path} line {number}: not a JSON object")
            rows.append((number, {k: "" if v is None else str(v) for k, v in row.items()}))
        return rows
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "key" not in reader.fieldnames or "decision" not in reader.fieldnames:
        raise ReviewFileError(f"{path}: a decisions file needs the columns 'key' and 'decision' "
                              f"(found {', '.join(reader.fieldnames or []) or 'none'})")
    return [(reader.line_num, {k: v or "" for k, v in row.items() if k}) for row in reader]


def read_decisions(path: Path) -> dict[str, Decision]:
    """Decisions by item key; rows with an empty decision are skipped (unreviewed)."""
    decisions: dict[str, Decision] = {}
    for number, row in _raw_rows(path):
        where = f"{path} row {number}"
        key = row.get("key", "").strip()
        raw = row.get("decision", "").strip().lower()
        if not raw:
            continue
        if not key:
            raise ReviewFileError(f"{where}: decision without a key")
        decision = _DECISIONS.get(raw)
        if decision is None:
            raise ReviewFileError(f"{where}: unknown decision {raw!r}; use accept, edit or reject")
        question, answer = row.get("edited_question", "").strip(), row.get("edited_answer", "").strip()
        if decision == "edit" and not (question or answer):
            raise ReviewFileError(f"{where}: decision 'edit' needs edited_question and/or edited_answer")
        if decision != "edit" and (question or answer):
            raise ReviewFileError(f"{where}: edited text with decision {decision!r}; set the decision to 'edit'")
        if key in decisions:
            raise ReviewFileError(f"{where}: a second decision for {key} (first at {decisions[key].where})")
        decisions[key] = Decision(key, decision, row.get("fingerprint", "").strip(), question, answer, where)
    return decisions


def _edited(draft: Draft, decision: Decision) -> Draft:
    question = decision.edited_question or None
    if question is not None and ("<image>" in question or _OPTION_LINE.search(question)):
        raise ReviewFileError(f"{decision.where}: edited_question must not contain <image> tokens or option lines")
    if not decision.edited_answer:
        return draft.with_text(question=question, origin="review-edit")
    if draft.options is None:
        return draft.with_text(question=question, answer=decision.edited_answer, origin="review-edit")
    letter = decision.edited_answer.rstrip(":.").strip().upper()
    letters = [chr(65 + i) for i in range(len(draft.options))]
    if letter in letters:
        index = letters.index(letter)
    elif decision.edited_answer in draft.options:
        index = draft.options.index(decision.edited_answer)
    else:
        raise ReviewFileError(f"{decision.where}: edited_answer {decision.edited_answer!r} of closed item "
                              f"{draft.key} is neither a letter {'/'.join(letters)} nor one of its options")
    return draft.with_text(question=question, answer_index=index, origin="review-edit")


def apply_decisions(drafts: Iterable[Draft], decisions: dict[str, Decision], *, drop_unreviewed: bool = False) -> ReviewOutcome:
    """Apply reviewers' decisions: rejected items dropped, edits used, stale decisions ignored."""
    outcome = ReviewOutcome()
    seen: set[str] = set()
    for draft in drafts:
        seen.add(draft.key)
        decision = decisions.get(draft.key)
        if decision is not None and decision.fingerprint and decision.fingerprint != draft.fingerprint():
            outcome.stale.append(draft.key)
            decision = None
        if decision is None:
            outcome.unreviewed += 1
            if not drop_unreviewed:
                outcome.kept.append(draft)
        elif decision.decision == "reject":
            outcome.rejected += 1
        elif decision.decision == "edit":
            outcome.edited += 1
            outcome.kept.append(_edited(draft, decision))
        else:
            outcome.accepted += 1
            outcome.kept.append(draft)
    outcome.unknown_keys = sorted(k for k in decisions if k not in seen)
    return outcome
