"""Reading training files for the contamination audit: Med-MIM chat JSON (``images`` +
``conversation`` of ``role``/``content`` turns, as the released training files) and LLaVA-Med JSON or
JSONL (``image`` + ``conversations`` of ``from``/``value`` turns), given as files or folders.

Each item becomes a :class:`TrainItem`: its images (relative paths as written, and where they would
be on disk), its user turns' questions (options split off) and its assistant turns' answers (a
leading ``"B: "`` letter dropped). Bad input is one :class:`DataError` naming the file and item.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmim_eval.errors import DataError
from medmim_eval.medmim_format import IMAGE_TOKEN, parse_options, read_json_array, read_text_file, source_of

if TYPE_CHECKING:
    from medmim_eval.datadir import DataPaths

USER_ROLES = {"user", "human"}
ASSISTANT_ROLES = {"assistant", "gpt"}
TRAIN_SUFFIXES = (".json", ".jsonl")
_LETTER = re.compile(r"^\s*[A-Z]:\s*")
MAX_PROBLEMS_SHOWN = 10


@dataclass
class TrainItem:
    """One training item, reduced to what the audit compares."""

    file: str
    index: int
    item_id: str
    images: list[str]
    image_paths: list[str]
    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # every turn's text, image tokens removed


@dataclass(frozen=True)
class TrainFile:
    path: str
    sha256: str
    items: int


def relative_image(path: str) -> str:
    """An image path as the data files write it, for identity by path: forward slashes, no ``./``."""
    text = path.replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def training_files(specs: list[Path], leave_out: set[Path] | None = None) -> list[Path]:
    """The files behind ``--train``: each file as given, each folder's ``.json``/``.jsonl`` files
    (recursively) except those in ``leave_out`` (resolved paths: the benchmark files audited)."""
    files: list[Path] = []
    for spec in specs:
        if spec.is_dir():
            found = sorted(p for p in spec.rglob("*") if p.suffix in TRAIN_SUFFIXES and p.is_file()
                           and p.resolve() not in (leave_out or set()))
            if not found:
                raise DataError(f"{spec}: no .json or .jsonl training file in this folder; give the files with --train")
            files.extend(found)
        elif spec.is_file():
            files.append(spec)
        else:
            raise DataError(f"{spec}: training file not found; --train takes files or folders, comma-separated")
    return files


def _rows(path: Path) -> list[Any]:
    if path.suffix != ".jsonl":
        return read_json_array(path)
    rows = []
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: malformed JSON on line {number}, column {exc.colno}: {exc.msg}; "
                            "fix or remove that line") from None
    return rows


def _turns(item: dict[str, Any]) -> list[tuple[str, str]]:
    if "conversation" in item:
        turns, role_key, text_key = item["conversation"], "role", "content"
    elif "conversations" in item:
        turns, role_key, text_key = item["conversations"], "from", "value"
    else:
        raise ValueError("no 'conversation' (Med-MIM) or 'conversations' (LLaVA-Med) field")
    if not isinstance(turns, list) or not turns:
        raise ValueError("the conversation must be a non-empty list of turns")
    out = []
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get(text_key), str) or not isinstance(turn.get(role_key), str):
            raise ValueError(f"every turn needs a '{role_key}' and a '{text_key}' string")
        role = turn[role_key].lower()
        if role not in USER_ROLES | ASSISTANT_ROLES:
            raise ValueError(f"unknown turn role {turn[role_key]!r}")
        out.append((role, turn[text_key]))
    return out


def _images(item: dict[str, Any]) -> list[str]:
    images = item.get("images", item.get("image", []))
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ValueError("'images' must be a list of paths ('image': one path)")
    return [relative_image(i) for i in images]


def _item(raw: Any, index: int, path: Path, data: "DataPaths | None", image_dir: Path | None) -> TrainItem:
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object, found {type(raw).__name__}")
    images = _images(raw)
    if image_dir is not None:
        root = image_dir
    else:
        _, folder = source_of(str(raw.get("source", "")))
        root = data.image_root(folder) if folder and data is not None else path.parent
    item = TrainItem(file=path.name, index=index, item_id=str(raw.get("id", index)), images=images,
                     image_paths=[str(root / rel) for rel in images])
    closed = False
    for role, text in _turns(raw):
        plain = text.replace(IMAGE_TOKEN, "").strip()
        item.texts.append(plain)
        if role in USER_ROLES:
            try:
                parsed = parse_options(plain)
            except ValueError:
                parsed = None  # an option-like block we cannot read: the whole turn is the question
            closed = parsed is not None
            item.questions.append(parsed.question if parsed else plain)
        else:
            item.answers.append(_LETTER.sub("", plain, count=1) if closed else plain)
    return item


def read_training(specs: list[Path], data: "DataPaths | None" = None, image_dir: Path | None = None,
                  leave_out: set[Path] | None = None) -> tuple[list[TrainItem], list[TrainFile]]:
    """Every item of every training file.

    Args:
        specs: files or folders (see :func:`training_files`).
        data: the data folders; an item's images are looked for under the folder its ``source`` tag
            names (as for the benchmark), else beside its file.
        image_dir: one folder all training image paths are relative to (overrides the above).
        leave_out: resolved paths a folder's files skip (the benchmark files audited, when they
            lie in a training folder such as the release's).

    Raises:
        DataError: a missing file or folder, malformed JSON, or items that are not training items
            (each named by file, index and id).
    """
    items: list[TrainItem] = []
    files: list[TrainFile] = []
    for path in training_files(specs, leave_out):
        rows = _rows(path)
        problems = []
        before = len(items)
        for index, raw in enumerate(rows):
            try:
                items.append(_item(raw, index, path, data, image_dir))
            except ValueError as exc:
                item_id = raw.get("id") if isinstance(raw, dict) else None
                problems.append(f"item {index}" + (f" (id {item_id})" if item_id else "") + f": {exc}")
        if problems:
            shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
            more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
            raise DataError(f"{path}: {len(problems)} item(s) are not training items:\n  {shown}{more}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        files.append(TrainFile(path=str(path), sha256=digest, items=len(items) - before))
    return items, files
