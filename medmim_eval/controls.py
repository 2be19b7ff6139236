"""Image controls: task variants ``TASK@blind``, ``@noimage``, ``@shuffle`` and ``@single`` that change
only the images a model receives, so that their paired difference from the standard task measures
how much the model uses the images. ``TASK@circular`` (:mod:`medmim_eval.circular`) is named the same
way but changes the order of the options instead.

A control's samples are ordinary samples of the task ``TASK@CONTROL`` with the key ``KEY@CONTROL``:
they get their own records, resume, cache entries (the control is part of the cache key, see
:func:`medmim_eval.cache.cache_key`) and views. :func:`control_definition` is what the manifest keeps.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Iterable

from medmim_eval.errors import UnknownNameError
from medmim_eval.schema import ImagePart, Prompt, Sample, TextPart, content_hash

SEPARATOR = "@"
CONTROLS: dict[str, str] = {
    "blind": "every image replaced by a uniform image of the same size, in the task's mean colour",
    "noimage": "the images and their markers removed from the prompt",
    "shuffle": "the images of each item permuted with a fixed seed (never the identity for 2+ images)",
    "single": "only the first image",
}
# Variants that change the question, not the images (medmim_eval.circular); named like controls.
QUESTION_CONTROLS: dict[str, str] = {
    "circular": "each closed item asked once per rotation of its options; right only if right under every rotation",
}
# Controls that take the image content away: the "uses the images" verdict is decided on them.
IMAGE_REMOVING = ("blind", "noimage")
POSITION_RULE_VERSION = 1
POSITION_RULE = (
    "question or option text (case-insensitive) names an image by place: an ordinal or relative-time word "
    "before image/scan/picture/photo/view/visit/study/exam/radiograph/x-ray/slice (first, second, third, 1st, 2nd, "
    "3rd, last, final, initial, previous, prior, earlier, later, latest, subsequent, follow-up, baseline), "
    "'image/scan/visit N', 'the former/latter', an option that is only an ordinal ('The second one'), or "
    "'left/right eye|fundus' when the item's image file names carry the laterality (order encodes it)"
)
_NOUN = r"(?:images?|scans?|pictures?|photos?|views?|visits?|stud(?:y|ies)|exams?|examinations?|radiographs?|x-rays?|slices?)"
_PLACE = (r"(?:first|second|third|1st|2nd|3rd|last|final|initial|previous|prior|earlier|later|latest|subsequent"
          r"|follow-up|baseline)")
_POSITION = re.compile(
    rf"\b{_PLACE}\s+(?:\w+\s+)?{_NOUN}\b|\b{_NOUN}\s*#?\s*[1-3]\b|\bthe\s+(?:former|latter)\b", re.IGNORECASE)
_ORDINAL_OPTION = re.compile(r"^\s*(?:the\s+)?(?:first|second|third|last)(?:\s+one)?\s*[.!]?\s*$", re.IGNORECASE)
_LATERALITY = re.compile(r"\b(?:left|right)\s+(?:eye|fundus|fundi)\b", re.IGNORECASE)
_LATERAL_NAME = re.compile(r"left|right", re.IGNORECASE)


def split_control(name: str) -> tuple[str, str | None]:
    """``TASK@CONTROL`` -> (``TASK``, ``CONTROL``); a name without ``@`` has no control.

    Raises:
        UnknownNameError: for a control that is not one of :data:`CONTROLS`.
    """
    base, sep, control = name.rpartition(SEPARATOR)
    if not sep:
        return name, None
    if control not in CONTROLS and control not in QUESTION_CONTROLS:
        raise UnknownNameError(f"unknown control '@{control}' in '{name}'; controls are "
                               + ", ".join(f"@{c}" for c in [*CONTROLS, *QUESTION_CONTROLS]))
    return base, control


def base_task(task: str) -> str:
    """The standard task of a task name (itself when it has no control)."""
    return task.rpartition(SEPARATOR)[0] if SEPARATOR in task else task


def base_key(key: str) -> str:
    """The standard sample key of a control's sample key."""
    head, sep, tail = key.rpartition(SEPARATOR)
    return head if sep and (tail in CONTROLS or tail.partition("#")[0] in QUESTION_CONTROLS) else key


def refers_to_position(sample: Sample) -> bool:
    """Whether the question names an image by its place in the order (rule: :data:`POSITION_RULE`)."""
    text = " ".join([sample.question, *sample.options.values()])
    if _POSITION.search(text) or any(_ORDINAL_OPTION.match(o) for o in sample.options.values()):
        return True
    return bool(_LATERALITY.search(text)) and any(_LATERAL_NAME.search(Path(i).name) for i in sample.images)


def permutation(sample: Sample, seed: int) -> list[int]:
    """The fixed shuffle of one item: drawn from the seed and the item's key, never the identity for 2+ images."""
    n = len(sample.images)
    order = list(range(n))
    if n < 2:
        return order
    rng = random.Random(content_hash(f"{seed}|{base_key(sample.key)}"))
    while order == sorted(order):
        rng.shuffle(order)
    return order


def mean_colour(paths: Iterable[str]) -> tuple[int, int, int]:
    """The pixel-weighted mean RGB colour over the readable images among ``paths`` (mid-grey if none)."""
    from PIL import Image, ImageStat

    totals, pixels = [0.0, 0.0, 0.0], 0
    for path in sorted(set(paths)):
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except OSError:
            continue  # a missing image is reported by the image check, like in the standard task
        count = rgb.width * rgb.height
        for channel, mean in enumerate(ImageStat.Stat(rgb).mean):
            totals[channel] += mean * count
        pixels += count
    if not pixels:
        return (128, 128, 128)
    return tuple(round(t / pixels) for t in totals)  # type: ignore[return-value]


def uniform_image(folder: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    """Path of a PNG of ``size`` filled with ``colour`` under ``folder`` (written once, then reused)."""
    from PIL import Image

    path = folder / f"uniform-{size[0]}x{size[1]}-{colour[0]}-{colour[1]}-{colour[2]}.png"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")  # ranks may write the same file at once
        Image.new("RGB", size, colour).save(partial, format="PNG")
        partial.replace(path)
    return str(path)


def _image_size(path: str) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except OSError:
        return None


def _with_images(sample: Sample, control: str, order: list[int], paths: list[str] | None = None) -> Sample:
    """``sample`` under ``control``, sending its images ``order`` (indices), with ``paths`` replacing the files."""
    paths = paths if paths is not None else sample.image_paths
    new_paths = [paths[i] for i in order]
    parts: list[TextPart | ImagePart] = []
    position = 0
    for part in sample.prompt.parts:
        if isinstance(part, TextPart):
            parts.append(part)
        elif position < len(order):
            parts.append(ImagePart(index=position, path=new_paths[position]))
            position += 1
    metadata = {**sample.metadata, "control": control, "image_order": order,
                "refers_to_position": refers_to_position(sample)}
    return sample.model_copy(update={
        "key": f"{sample.key}{SEPARATOR}{control}", "task": f"{sample.task}{SEPARATOR}{control}",
        "images": [sample.images[i] for i in order], "image_paths": new_paths,
        "prompt": Prompt(parts=_merge_text(parts)), "metadata": metadata,
    })


def _merge_text(parts: list[TextPart | ImagePart]) -> list[TextPart | ImagePart]:
    """Adjacent text parts joined (what removing the images between them leaves)."""
    merged: list[TextPart | ImagePart] = []
    for part in parts:
        if isinstance(part, TextPart) and merged and isinstance(merged[-1], TextPart):
            merged[-1] = TextPart(text=merged[-1].text + part.text)
        else:
            merged.append(part)
    return merged


def apply_control(samples: list[Sample], control: str, *, seed: int, cache_dir: Path,
                  colour_from: list[Sample] | None = None) -> tuple[list[Sample], dict[str, Any]]:
    """The samples as the control sends them, and the control's definition for the manifest.

    ``colour_from`` are the samples whose images give ``@blind`` its mean colour (default: ``samples``;
    the task loader passes every sample of the task, so the closed and open subsets share one colour).
    """
    definition: dict[str, Any] = {"control": control, "definition": CONTROLS[control],
                                  "position_rule": {"version": POSITION_RULE_VERSION, "rule": POSITION_RULE}}
    if control == "blind":
        pool = colour_from if colour_from is not None else samples
        colour = mean_colour(p for s in pool for p in s.image_paths)
        folder = cache_dir / "controls" / "blind"
        definition["mean_colour_rgb"] = list(colour)
        out = []
        for sample in samples:
            sizes = [_image_size(p) for p in sample.image_paths]
            paths = [uniform_image(folder, size, colour) if size else p for p, size in zip(sample.image_paths, sizes)]
            out.append(_with_images(sample, control, list(range(len(paths))), paths))
        return out, definition
    if control == "noimage":
        return [_with_images(s, control, []) for s in samples], definition
    if control == "single":
        return [_with_images(s, control, [0]) for s in samples], definition
    definition["seed"] = seed
    return [_with_images(s, control, permutation(s, seed)) for s in samples], definition
