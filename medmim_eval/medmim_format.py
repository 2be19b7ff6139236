"""Reading the Med-MIM JSON format (the official release, builder output, synthetic suite).

Each file is a JSON array of ``{"id", "images", "conversation", "source"}`` items with one user
and one assistant turn. Closed items list options as ``\\nA: text`` lines and answer
``"<Letter>: <text>"``. Every rule enforced here is listed in docs/task-format.md, with the quirks
of the release handled here: options separated by ``"  \\n"`` without a trailing newline, a stray
``"`` after the question mark in ODIR prompts, ids reused across items (so keys use file, index
and a content hash).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medmim_eval.errors import DataError
from medmim_eval.schema import ImagePart, Prompt, Sample, TextPart, content_hash

IMAGE_TOKEN = "<image>"
_OPTION_LINE = re.compile(r"^([A-Z]): ?(.*?)\s*$")
_GOLD = re.compile(r"^\s*([A-Z]):\s*(.*)$", re.S)
_STRAY_QUOTE = re.compile(r'\?"(\s*)$')
MAX_PROBLEMS_SHOWN = 20

# The official "source" tag prefix -> (source dataset name, data folder holding its images).
SOURCE_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("MS_CXR_T", "MS-CXR-T", "ms-cxr-t"),
    ("EMBED", "EMBED", "embed"),
    ("LUMIERE", "LUMIERE", "lumiere"),
    ("VQA_RAD", "VQA-RAD", "vqa-rad"),
    ("VQA_ODIR", "ODIR", "odir"),
)


def source_of(tag: str) -> tuple[str, str | None]:
    """(dataset name, data folder) for an official ``source`` tag; unknown tags keep their name."""
    for prefix, dataset, folder in SOURCE_PREFIXES:
        if tag.startswith(prefix):
            return dataset, folder
    return tag or "unknown", None


@dataclass(frozen=True)
class ParsedQuestion:
    question: str
    options: dict[str, str]


def parse_options(text: str) -> ParsedQuestion | None:
    """Split a user prompt (without image tokens) into the question and its lettered options.

    Returns ``None`` when the prompt has no ``\\nA: `` option block (an open question). Raises
    ``ValueError`` when an option block exists but its letters do not increase (A, B, C...).
    """
    if "\nA: " not in text and "\nA:" not in text:
        return None
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if _OPTION_LINE.match(line.strip()) and line.strip().startswith("A:"))
    question = "\n".join(lines[:start]).strip()
    options: dict[str, str] = {}
    for line in lines[start:]:
        stripped = line.strip()
        if not stripped:
            continue
        match = _OPTION_LINE.match(stripped)
        if match is None:
            # A continuation of the previous option's text.
            if not options:
                raise ValueError(f"cannot read option line {stripped[:40]!r}")
            last = list(options)[-1]
            options[last] = f"{options[last]} {stripped}"
            continue
        letter, option_text = match.group(1), match.group(2).strip()
        # Letters must increase; a gap is allowed (one released ODIR item lists A, B, D).
        if options and letter <= list(options)[-1]:
            raise ValueError(f"option {letter} after option {list(options)[-1]}; letters must increase")
        options[letter] = option_text
    if len(options) < 2:
        raise ValueError("fewer than two options")
    return ParsedQuestion(question=_STRAY_QUOTE.sub(r"?\1", question), options=options)


def build_prompt(user_text: str, image_paths: list[str]) -> Prompt:
    """The interleaved prompt: text pieces and image parts in the order they appear."""
    pieces = user_text.split(IMAGE_TOKEN)
    parts: list[TextPart | ImagePart] = []
    for i, piece in enumerate(pieces):
        if piece:
            parts.append(TextPart(text=piece))
        if i < len(pieces) - 1:
            parts.append(ImagePart(index=i, path=image_paths[i]))
    return Prompt(parts=parts)


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """A data file's text; a missing or unreadable file is one ``DataError`` line naming it."""
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None


def read_json_array(path: Path) -> list[Any]:
    """Read a Med-MIM JSON file, turning any format problem into one ``DataError`` line."""
    raw = read_text_file(path)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
            "re-download or rebuild the file"
        ) from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of items, found {type(data).__name__}")
    return data


def load_medmim_file(
    path: Path,
    *,
    task: str,
    ability: str,
    image_root: Callable[[str], Path],
) -> list[Sample]:
    """Load and validate every item of one Med-MIM JSON file.

    Args:
        path: the JSON file.
        task: the task name written into each sample.
        ability: temporal, reasoning, comparison, co-reference, or a task's own label.
        image_root: maps an item's ``source`` tag to the folder its image paths are relative to.

    Raises:
        DataError: listing every invalid item with its index and id.
    """
    items = read_json_array(path)
    samples: list[Sample] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            samples.append(_parse_item(item, index, path, task, ability, image_root))
        except ValueError as exc:
            item_id = item.get("id") if isinstance(item, dict) else None
            label = f"item {index}" + (f" (id {item_id})" if item_id else "")
            problems.append(f"{label}: {exc}")
    if problems:
        shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise DataError(f"{path}: {len(problems)} invalid item(s):\n  {shown}{more}")
    return samples


def _parse_item(
    item: Any, index: int, path: Path, task: str, ability: str, image_root: Callable[[str], Path]
) -> Sample:
    if not isinstance(item, dict):
        raise ValueError(f"expected an object, found {type(item).__name__}")
    for field in ("images", "conversation"):
        if field not in item:
            raise ValueError(f"missing field '{field}'")
    images = item["images"]
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise ValueError("'images' must be a non-empty list of paths")
    conversation = item["conversation"]
    if (
        not isinstance(conversation, list)
        or len(conversation) < 2
        or not all(isinstance(t, dict) and isinstance(t.get("content"), str) for t in conversation[:2])
    ):
        raise ValueError("'conversation' must hold a user turn and an assistant turn with 'content'")
    user, assistant = conversation[0]["content"], conversation[1]["content"]
    n_tokens = user.count(IMAGE_TOKEN)
    if n_tokens != len(images):
        raise ValueError(f"{n_tokens} {IMAGE_TOKEN} token(s) in the prompt but {len(images)} image(s)")
    tag = str(item.get("source", ""))
    dataset, _ = source_of(tag)
    root = image_root(tag)
    image_paths = [str(root / rel) for rel in images]
    text = user.replace(IMAGE_TOKEN, "")
    parsed = parse_options(text)
    metadata: dict[str, Any] = {"source_tag": tag}
    if parsed is not None:
        gold = _GOLD.match(assistant)
        if gold is None or gold.group(1) not in parsed.options:
            raise ValueError(f"gold answer {assistant[:40]!r} names none of the options {', '.join(parsed.options)}")
        letter = gold.group(1)
        if gold.group(2).strip() != parsed.options[letter]:
            metadata["gold_text_differs"] = gold.group(2).strip()
        kind, answer, question, options = "closed", letter, parsed.question, parsed.options
    else:
        if not assistant.strip():
            raise ValueError("empty reference answer")
        kind, answer, question, options = "open", assistant.strip(), text.strip(), {}
    digest = content_hash(json.dumps(item, sort_keys=True, ensure_ascii=False), 12)
    return Sample(
        key=f"{path.stem}#{index}#{digest}",
        task=task,
        ability=ability,
        source=dataset,
        item_id=str(item.get("id", index)),
        file=path.name,
        index=index,
        images=list(images),
        image_paths=image_paths,
        prompt=build_prompt(user, image_paths),
        question=question,
        kind=kind,
        options=options,
        answer=answer,
        metadata=metadata,
    )
