"""Samples a model was not given because they have more images than it accepts.

Such a sample is never truncated: it is recorded with a ``TooManyImagesError`` and counted, per
result cell (``ResultCell.too_many_images``, part of ``errors``) and per model in every view's footer.
A sample with fewer images than the model needs (``TooFewImagesError``: ``@noimage`` on a model that
needs an image) is flagged and counted the same way.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from medmim_eval.errors import TooFewImagesError, TooManyImagesError
from medmim_eval.schema import ResultCell, SampleRecord

TOO_MANY_IMAGES = TooManyImagesError.__name__
IMAGE_COUNT_FLAGS = (TOO_MANY_IMAGES, TooFewImagesError.__name__)


def has_too_many_images(record: SampleRecord) -> bool:
    """The record is a sample not sent for its image count (too many, or too few for the model)."""
    return record.error is not None and record.error.type in IMAGE_COUNT_FLAGS


def with_flag_counts(cells: Iterable[ResultCell], records: Iterable[SampleRecord]) -> list[ResultCell]:
    """``cells`` with ``too_many_images`` counted from ``records`` (per task, or per source for source cells)."""
    flagged = [r for r in records if has_too_many_images(r)]
    per_task = Counter((r.model, r.task, r.kind) for r in flagged)
    per_source = Counter((r.model, r.task, r.kind, r.source) for r in flagged)
    return [c.model_copy(update={"too_many_images": per_task[(c.model, c.task, c.kind)] if c.source is None
                                 else per_source[(c.model, c.task, c.kind, c.source)]}) for c in cells]


@dataclass
class NotScored:
    """Per model: samples not evaluated for having too many images, and samples that errored otherwise."""

    too_many_images: int = 0
    other_errors: int = 0


def not_scored_by_model(cells: Iterable[ResultCell]) -> dict[str, NotScored]:
    """Models with any unscored sample, from per-task cells (not per-source ones, which repeat them)."""
    out: dict[str, NotScored] = {}
    for cell in cells:
        if cell.errors or cell.too_many_images:
            entry = out.setdefault(cell.model, NotScored())
            entry.too_many_images += cell.too_many_images
            entry.other_errors += cell.errors - cell.too_many_images
    return dict(sorted(out.items()))
