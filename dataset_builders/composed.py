"""``composed``: multi-image samples composed from single-image LLaVA-Med VQA-style data.

Raw format (docs/task-format.md, "Raw datasets"): a JSON array of ``{"id", "image", "conversations": [{"from": "human"|"gpt",
"value"}...]}`` with ``<image>`` at the start or end of the first human turn. ``--source`` is that
JSON file (images under ``--option images=DIR``, default the file's folder) or a folder holding
exactly one such JSON file (or ``--option file=NAME``) and the images.

Each raw item gives one question-answer pair: its first human turn (``<image>`` removed) and the
gpt turn after it; later turns may lean on earlier ones ("and its size?"), so they are not used.
The pairs are shuffled with the seed and cut into samples of 2 or 3 (the size drawn per sample),
never the same image twice in a sample and every pair in at most one sample. The open question
asks each sub-question behind a location prefix ("In the first image, ...", "Regarding the second
image, ..."); the reference answer gives each image's answer ("First image: ... Second image: ...").
Images are copied to ``images/<image>``. Deterministic for a seed.
"""
from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmim_eval.builders_api import BuildOptions, DatasetWriter
from medmim_eval.dataset_builders.composing import as_sub_question, clean_answer
from medmim_eval.dataset_builders.question_templates import (
    ORDINALS, Draft, ImageJob, check_options, finish_build, item_rng, open_draft, pick,
)
from medmim_eval.errors import DataError

VERSION = "1"
FILE_STEM = "composed_coreference"
ABILITY = "co-reference"
SOURCE_TAG = "LLaVA_Med_composed_conv"
OPTIONS_HELP = {
    "images": "folder the items' 'image' paths are relative to (default: the JSON file's folder)",
    "file": "the JSON file inside --source, when the folder holds several",
    "missing_images": "error (default) or skip: what to do with items whose image file is absent",
}
_FIRST_PREFIXES = ("In the first image, {q}", "Looking at the first image, {q}", "For the first image, {q}")
_LATER_PREFIXES = ("Regarding the {o} image, {q}", "In the {o} image, {q}", "As for the {o} image, {q}")
_SHORT_ANSWER_WORDS = 4


@dataclass(frozen=True)
class SingleQA:
    index: int  # position in the raw JSON array
    item_id: str
    image: str
    question: str
    answer: str


def build_composed(options: BuildOptions, writer: DatasetWriter) -> None:
    """Write ``composed_coreference.json`` (open items) and the images it uses."""
    extra = check_options(options, OPTIONS_HELP)
    json_path, image_root = _locate(options.source, extra)
    writer.record_input(json_path)
    pairs = read_llava_med(json_path)
    missing = [qa for qa in pairs if not (image_root / qa.image).is_file()]
    if missing and extra.get("missing_images", "error") != "skip":
        qa = missing[0]
        raise DataError(f"{json_path}: item {qa.index} (id {qa.item_id}): image {image_root / qa.image} not found "
                        f"({len(missing)} missing in all); pass --option images=DIR or --option missing_images=skip")
    if missing:
        writer.notes.append(f"{len(missing)} items skipped: image file absent")
        pairs = [qa for qa in pairs if (image_root / qa.image).is_file()]
    groups, leftover = compose_groups(pairs, options.seed)
    if leftover:
        writer.notes.append(f"{leftover} pair(s) left over: no partner on another image")
    drafts: list[Draft] = []
    jobs: dict[str, ImageJob] = {}
    for number, group in enumerate(groups):
        rng = item_rng(options.seed, "composed", number)
        drafts.append(_draft(number, group, rng))
        for qa in group:
            jobs[f"images/{qa.image}"] = ImageJob(image_root / qa.image, f"{json_path} item {qa.index} (id {qa.item_id})")
    finish_build(drafts, jobs, options, writer, extra=extra)


def _locate(source: Path, extra: dict[str, str]) -> tuple[Path, Path]:
    if source.is_file():
        json_path = source
    elif extra.get("file"):
        json_path = source / extra["file"]
    else:
        found = sorted(source.glob("*.json"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise DataError(f"{source}: expected one LLaVA-Med JSON file, found {names}; pass --option file=NAME")
        json_path = found[0]
    if not json_path.is_file():
        raise DataError(f"{json_path}: file not found")
    return json_path, Path(extra["images"]) if extra.get("images") else json_path.parent


def read_llava_med(path: Path) -> list[SingleQA]:
    """One :class:`SingleQA` per raw item (its first human/gpt exchange), in file order.

    Raises:
        DataError: naming the file and the item (index and id) for malformed JSON or items.
    """
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({type(exc).__name__})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON array of LLaVA-Med items, found {type(items).__name__}")
    pairs = []
    for index, item in enumerate(items):
        try:
            pairs.append(_pair(index, item))
        except ValueError as exc:
            label = item.get("id") if isinstance(item, dict) else None
            raise DataError(f"{path}: item {index}" + (f" (id {label})" if label else "") + f": {exc}") from None
    if not pairs:
        raise DataError(f"{path}: no items")
    return pairs


def _pair(index: int, item: Any) -> SingleQA:
    if not isinstance(item, dict):
        raise ValueError("expected an object")
    image, turns = item.get("image"), item.get("conversations")
    if not isinstance(image, str) or not image.strip():
        raise ValueError("missing field 'image' (a path)")
    if Path(image).is_absolute() or ".." in Path(image).parts:
        raise ValueError(f"image path {image!r} must be relative, inside the image folder")
    if not isinstance(turns, list) or not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns):
        raise ValueError("missing field 'conversations' (a list of {'from', 'value'} turns)")
    roles = [str(t.get("from", "")).strip() for t in turns]
    if "human" not in roles or "gpt" not in roles[roles.index("human"):]:
        raise ValueError("'conversations' needs a 'human' turn followed by a 'gpt' turn")
    first = roles.index("human")
    reply = next(i for i in range(first + 1, len(turns)) if roles[i] == "gpt")
    question = turns[first]["value"].replace("<image>", " ").strip()
    answer = turns[reply]["value"].replace("<image>", " ").strip()
    if not question or not answer:
        raise ValueError("empty question or answer")
    return SingleQA(index, str(item.get("id", index)), image.strip(), question, answer)


def compose_groups(pairs: list[SingleQA], seed: int) -> tuple[list[list[SingleQA]], int]:
    """Shuffle with the seed and cut into groups of 2-3 pairs on distinct images.

    Returns the groups and the number of pairs left over (no partner on another image).
    """
    rng = random.Random(f"composed/v{VERSION}/seed{seed}")
    pool = list(pairs)
    rng.shuffle(pool)
    queue = deque(pool)
    groups: list[list[SingleQA]] = []
    while queue:
        size = rng.choice((2, 3))
        group, skipped = [queue.popleft()], []
        while queue and len(group) < size:
            qa = queue.popleft()
            (skipped if any(qa.image == g.image for g in group) else group).append(qa)
        queue.extendleft(reversed(skipped))
        if len(group) < 2:
            return groups, 1 + len(queue)  # every remaining pair is on this one image
        groups.append(group)
    return groups, 0


def _draft(number: int, group: list[SingleQA], rng: random.Random) -> Draft:
    asks = [pick(rng, _FIRST_PREFIXES if i == 0 else _LATER_PREFIXES, o=ORDINALS[i], q=as_sub_question(qa.question))
            for i, qa in enumerate(group)]
    answers = [clean_answer(qa.answer) for qa in group]
    reference = " ".join(f"{ORDINALS[i].capitalize()} image: {a}." for i, a in enumerate(answers))
    short = [(a,) for a in answers if len(a.split()) <= _SHORT_ANSWER_WORDS]
    return open_draft(
        file_stem=FILE_STEM, ability=ABILITY, item_id=f"composed-{number}", images=[f"images/{qa.image}" for qa in group],
        question=" ".join(asks), answer=reference, source_tag=SOURCE_TAG,
        context={f"image {i + 1} question": qa.question for i, qa in enumerate(group)},
        gold={f"image {i + 1} answer": a for i, a in enumerate(answers)}, required=short)
