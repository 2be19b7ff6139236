"""Reading and validating the raw VQA-RAD release (``VQA_RAD Dataset Public.json`` + image folder).

Contract: :func:`read_vqa_rad` returns one :class:`RadQA` per question-answer pair of the chosen
split, in file order, or raises ``DataError`` naming the raw file and the item (0-based index and
``qid``) — a missing field, an unknown ``answer_type``/``phrase_type``, an empty answer, or an
image listed but absent from the image folder. Quirks handled (see docs/task-format.md, "Raw datasets"): ``answer_type``
``"CLOSED "`` with a trailing space, numeric ``answer`` values, ``qid`` as int or string,
``question_type`` values such as ``"PRES, POS"`` (the first type counts), ``"Other"`` and the
typos ``"ATRIB"``/``"PRSE"``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmim_eval.errors import DataError

QA_FILE = "VQA_RAD Dataset Public.json"
IMAGE_FOLDER = "VQA_RAD Image Folder"
REQUIRED_FIELDS = ("qid", "phrase_type", "image_name", "image_organ", "question", "question_type", "answer",
                   "answer_type")
SPLITS: dict[str, frozenset[str]] = {
    "test": frozenset({"test_freeform", "test_para"}),
    "train": frozenset({"freeform", "para"}),
    "all": frozenset({"freeform", "para", "test_freeform", "test_para"}),
}
_QUESTION_TYPE_TYPOS = {"ATRIB": "ATTRIB", "PRSE": "PRES"}


@dataclass(frozen=True)
class RadQA:
    """One VQA-RAD question about one image."""

    qid: str
    index: int  # position in the raw JSON array
    image: str  # file name inside the image folder
    organ: str  # HEAD, CHEST or ABD
    question_type: str  # primary type, upper case: PRES, POS, MODALITY, ...
    closed: bool
    question: str
    answer: str


def read_vqa_rad(source: Path, split: str) -> tuple[list[RadQA], Path, Path]:
    """Read the QA pairs of ``split`` (test, train or all); returns (pairs, JSON path, image folder)."""
    if split not in SPLITS:
        raise DataError(f"mim-rad: --option split={split} is not one of {', '.join(SPLITS)}")
    qa_path, image_dir = source / QA_FILE, source / IMAGE_FOLDER
    if not qa_path.is_file():
        raise DataError(f"{qa_path}: not found; --source must be the VQA-RAD folder holding '{QA_FILE}' "
                        f"and '{IMAGE_FOLDER}/'")
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found beside '{QA_FILE}'")
    try:
        raw = json.loads(qa_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{qa_path}: cannot be read ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{qa_path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(raw, list):
        raise DataError(f"{qa_path}: expected a JSON array of QA items, found {type(raw).__name__}")
    wanted = SPLITS[split]
    pairs: list[RadQA] = []
    for index, item in enumerate(raw):
        qa, phrase_type = _parse_item(item, index, qa_path)
        if phrase_type not in wanted:
            continue
        if not (image_dir / qa.image).is_file():
            raise DataError(f"{qa_path}: {_label(item, index)}: image '{qa.image}' is listed but not in "
                            f"'{image_dir}'")
        pairs.append(qa)
    return pairs, qa_path, image_dir


def _label(item: Any, index: int) -> str:
    qid = item.get("qid") if isinstance(item, dict) else None
    return f"item {index}" + (f" (qid {qid})" if qid is not None else "")


def _parse_item(item: Any, index: int, path: Path) -> tuple[RadQA, str]:
    def fail(problem: str) -> DataError:
        return DataError(f"{path}: {_label(item, index)}: {problem}")

    if not isinstance(item, dict):
        raise fail(f"expected an object, found {type(item).__name__}")
    for field in REQUIRED_FIELDS:
        if field not in item or item[field] is None:
            raise fail(f"missing field '{field}'")
    phrase_type = str(item["phrase_type"]).strip()
    if phrase_type not in SPLITS["all"]:
        raise fail(f"phrase_type {phrase_type!r} is not one of {', '.join(sorted(SPLITS['all']))}")
    answer_type = str(item["answer_type"]).strip().upper()
    if answer_type not in ("OPEN", "CLOSED"):
        raise fail(f"answer_type {item['answer_type']!r} is neither OPEN nor CLOSED")
    answer = item["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise fail(f"answer must be text or a number, found {type(answer).__name__}")
    answer_text = str(answer).strip()
    question = str(item["question"]).strip()
    image = str(item["image_name"]).strip()
    if not answer_text:
        raise fail("empty answer")
    if not question:
        raise fail("empty question")
    if not image or Path(image).name != image:
        raise fail(f"image_name {image!r} must be a file name inside '{IMAGE_FOLDER}'")
    question_type = str(item["question_type"]).split(",")[0].strip().upper()
    qa = RadQA(
        qid=str(item["qid"]).strip(), index=index, image=image, organ=str(item["image_organ"]).strip().upper(),
        question_type=_QUESTION_TYPE_TYPOS.get(question_type, question_type), closed=answer_type == "CLOSED",
        question=question, answer=answer_text,
    )
    return qa, phrase_type
