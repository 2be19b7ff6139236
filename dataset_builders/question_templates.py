"""Deterministic question templates, the draft QA item, and the one path from drafts to the output.

A builder turns raw rows into :class:`Draft` items (question, options, gold answer, the facts the
answer rests on) plus an :class:`ImageJob` per output image, and calls :func:`finish_build`, which

1. keeps, per output file and kind, the first ``--limit`` drafts in a seed-dependent order;
2. rewords them through an LLM when ``--option llm=...`` is given (:mod:`.llm_questions`),
   dropping items whose answers stay invalid;
3. applies reviewers' decisions from ``--option review=FILE`` (:mod:`.review_queue`);
4. renders only the images the kept items use (raw-file errors name the file and the row);
5. adds the items to the writer and, when asked or when an LLM wrote text, a review queue.

Wording is picked from paraphrase lists with a generator seeded by ``(seed, item)``, so an item's
text never depends on which other items were built. Importing this module needs only the
standard library; the writer side imports lazily.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from medmim_eval.builders_api import BuildOptions, DatasetWriter

ORDINALS = ("first", "second", "third")


@dataclass(frozen=True)
class Draft:
    """One Med-MIM item before it is written.

    Attributes:
        file_stem: output file (``<file_stem>.json``); ``ability`` is its ability label.
        item_id: unique within ``file_stem`` and kind; with them it forms :attr:`key`.
        images: output-relative image paths, in prompt order (1-3, no repeats).
        question: the question text, without ``<image>`` tokens or option lines.
        answer: the reference answer (open) or the gold option's text (closed).
        options: option texts in prompt order for a closed item, else ``None``.
        answer_index: index of the gold option in ``options``.
        context: facts a question writer may see (never the gold label of a closed item).
        gold: the facts the answer states (used only to write open answers).
        required: phrase groups an open answer must state: from every group at least one phrase,
            case-insensitively (empty: no check). Used to check LLM-written answers.
        origin: ``template``, ``llm:<model>`` or ``review-edit``.
    """

    file_stem: str
    ability: str
    item_id: str
    images: tuple[str, ...]
    question: str
    answer: str
    source_tag: str
    options: tuple[str, ...] | None = None
    answer_index: int | None = None
    context: dict[str, str] = field(default_factory=dict)
    gold: dict[str, str] = field(default_factory=dict)
    required: tuple[tuple[str, ...], ...] = ()
    origin: str = "template"

    @property
    def kind(self) -> str:
        return "closed" if self.options is not None else "open"

    @property
    def key(self) -> str:
        """Stable review/cache key: ``<file_stem>/<item_id>/<kind>`` (derivable from the output)."""
        return f"{self.file_stem}/{self.item_id}/{self.kind}"

    def fingerprint(self) -> str:
        """Hash of the text a reviewer sees; a decision made on other text is stale."""
        text = "\x1f".join([self.question, *(self.options or ()), self.answer])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def with_text(self, *, question: str | None = None, answer: str | None = None,
                  answer_index: int | None = None, origin: str | None = None) -> "Draft":
        """A copy with new wording; for closed items ``answer_index`` also resets ``answer``."""
        new = replace(self, question=self.question if question is None else question,
                      answer=self.answer if answer is None else answer,
                      origin=self.origin if origin is None else origin)
        if answer_index is not None and new.options is not None:
            new = replace(new, answer_index=answer_index, answer=new.options[answer_index])
        return new


def item_rng(seed: int, *parts: object) -> random.Random:
    """A generator for one item, seeded by the build seed and the item's identity."""
    text = "\x1f".join(str(p) for p in (seed, *parts))
    return random.Random(int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big"))


def order_key(seed: int, key: str) -> str:
    """A seed-dependent, order-independent sort key (which items ``--limit`` keeps)."""
    return hashlib.sha256(f"{seed}\x1f{key}".encode("utf-8")).hexdigest()


def pick(rng: random.Random, templates: Sequence[str], **fields: str) -> str:
    """One of ``templates``, formatted with ``fields``."""
    return rng.choice(list(templates)).format(**fields)


def image_options(n: int) -> list[str]:
    """Closed-option texts naming images by position: "the first image", ..."""
    return [f"the {ORDINALS[i]} image" for i in range(n)]


def closed_draft(rng: random.Random, *, file_stem: str, ability: str, item_id: str, images: Sequence[str],
                 question: str, options: Sequence[str], gold_index: int, source_tag: str,
                 shuffle: bool = True, context: dict[str, str] | None = None) -> Draft:
    """A closed item; options are shuffled with ``rng`` (unless ``shuffle`` is False) and the gold follows."""
    order = list(range(len(options)))
    if shuffle:
        rng.shuffle(order)
    shown = tuple(options[i] for i in order)
    index = order.index(gold_index)
    return Draft(file_stem=file_stem, ability=ability, item_id=item_id, images=tuple(images), question=question,
                 answer=shown[index], source_tag=source_tag, options=shown, answer_index=index,
                 context=dict(context or {}))


def open_draft(*, file_stem: str, ability: str, item_id: str, images: Sequence[str], question: str,
               answer: str, source_tag: str, context: dict[str, str] | None = None,
               gold: dict[str, str] | None = None, required: Sequence[Sequence[str]] = ()) -> Draft:
    """An open item with its reference answer and the facts behind it."""
    return Draft(file_stem=file_stem, ability=ability, item_id=item_id, images=tuple(images), question=question,
                 answer=answer, source_tag=source_tag, context=dict(context or {}), gold=dict(gold or {}),
                 required=tuple(tuple(group) for group in required))


# =========================================================================== from drafts to the output
COMMON_OPTIONS: dict[str, str] = {
    "llm": "openai:MODEL[,base_url=URL]: reword questions through an OpenAI-compatible LLM",
    "llm_base_url": "URL of an OpenAI-compatible endpoint (with llm_model)",
    "llm_model": "model name at llm_base_url",
    "llm_api_key_env": "environment variable holding the API key (default OPENAI_API_KEY)",
    "llm_attempts": "answers per item before it is rejected (default 3)",
    "llm_workers": "concurrent LLM requests (default 4)",
    "llm_timeout": "seconds per LLM request (default 60)",
    "llm_json_mode": "1 (default) asks for response_format=json_object; 0 does not",
    "llm_client": "auto (default), openai or http",
    "llm_cache": "folder of the LLM answer cache (default: llm-cache/ inside the output)",
    "allow_credentialed_upload": "1 allows sending credentialed-dataset text to a non-local LLM endpoint",
    "review": "decisions file (CSV/JSONL) from the review queue: rejected items dropped, edits used",
    "review_unreviewed": "keep (default) or drop items without a decision",
    "review_export": "csv or jsonl: write review_queue.<ext> into the output (default csv when an LLM wrote text)",
    "max_side": "downscale images whose longer side exceeds N pixels (default 0: keep)",
}
LLM_CACHE = "llm-cache"


@dataclass(frozen=True)
class ImageJob:
    """How to make one output image from a raw file.

    ``render(source)`` returns a PIL image (saved as PNG); ``None`` copies the file as it is.
    ``origin`` names where the raw data referenced it ("FILE row N"), for error messages.
    """

    source: Path
    origin: str
    render: Callable[[Path], Any] | None = None



def check_options(options: "BuildOptions", specific: dict[str, str]) -> dict[str, str]:
    """The builder's options with comma-joined ``llm_*`` pairs split; unknown keys are refused."""
    from medmim_eval.dataset_builders.llm_questions import expand_options
    from medmim_eval.errors import MedmimError

    extra = expand_options(dict(options.extra))
    known = {**specific, **COMMON_OPTIONS}
    unknown = sorted(set(extra) - set(known))
    if unknown:
        listing = "; ".join(f"{k}: {v}" for k, v in known.items())
        raise MedmimError(f"{options.name}: unknown --option {', '.join(unknown)}. Known options: {listing}")
    return extra


def read_table(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file as (line number, {header: stripped value}); headers are stripped too.

    Raises:
        DataError: naming the file when it is missing, unreadable, or lacks a required column.
    """
    import csv

    from medmim_eval.errors import DataError
    from medmim_eval.medmim_format import read_text_file

    text = read_text_file(path, encoding="utf-8-sig")
    reader = csv.reader(text.splitlines(keepends=True))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(header) or 'none'}")
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        rows.append((reader.line_num, {h: (values[i].strip() if i < len(values) else "") for i, h in enumerate(header)}))
    return rows


def finish_build(drafts: list[Draft], jobs: dict[str, ImageJob], options: "BuildOptions", writer: "DatasetWriter",
                 *, extra: dict[str, str], credentialed: str | None = None) -> None:
    """Limit, optionally reword (LLM) and review the drafts, render their images, write them.

    Args:
        drafts: every item the raw data allows, in the builder's order (kept for the output).
        jobs: output-relative image path -> how to make it; every draft image must be here.
        extra: the options from :func:`check_options`.
        credentialed: the dataset's name when its data-use agreement restricts sharing.
    """
    from medmim_eval.dataset_builders import llm_questions, review_queue
    from medmim_eval.errors import DataError, MedmimError

    keys = [d.key for d in drafts]
    if len(set(keys)) != len(keys):
        raise MedmimError(f"builder bug: duplicate item keys, e.g. {next(k for k in keys if keys.count(k) > 1)}")
    kept = limit_drafts(drafts, options.seed, options.limit)
    settings = llm_questions.settings_from_options(extra, credentialed=credentialed)
    if settings is not None:
        cache = llm_questions.ResponseCache(settings.cache_dir or writer.stage / LLM_CACHE,
                                            () if settings.cache_dir else (options.out / LLM_CACHE,))
        kept, report = llm_questions.generate(kept, settings, cache)
        writer.notes.append(f"LLM {settings.model} at {settings.base_url} (prompts {llm_questions.prompt_digest()}): "
                            f"{report.requests} requests, {report.cache_hits} cached answers, {report.retried} retries, "
                            f"{len(report.rejected)} items rejected after {settings.attempts} invalid answers"
                            + (f" ({', '.join(report.rejected[:5])}{' ...' if len(report.rejected) > 5 else ''})" if report.rejected else ""))
    if extra.get("review"):
        try:
            decisions = review_queue.read_decisions(Path(extra["review"]))
            outcome = review_queue.apply_decisions(kept, decisions, drop_unreviewed=extra.get("review_unreviewed") == "drop")
        except review_queue.ReviewFileError as exc:
            raise DataError(str(exc)) from None
        kept = outcome.kept
        writer.notes.append(outcome.summary())
    try:
        max_side = int(extra.get("max_side", "0") or 0)
    except ValueError:
        raise MedmimError(f"--option max_side={extra['max_side']!r}: expected a number of pixels") from None
    rendered: set[str] = set()
    for draft in kept:
        for rel in draft.images:
            if rel not in rendered:
                _render(jobs[rel], rel, writer, max_side)
                rendered.add(rel)
        writer.add_item(draft.file_stem, draft.ability, item_id=draft.item_id, images=list(draft.images),
                        question=draft.question, answer=draft.answer, source_tag=draft.source_tag,
                        options=list(draft.options) if draft.options is not None else None,
                        answer_index=draft.answer_index)
    export = extra.get("review_export") or ("csv" if settings is not None else "")
    if export:
        if export not in ("csv", "jsonl"):
            raise MedmimError(f"--option review_export={export!r}: expected csv or jsonl")
        review_queue.export_queue(kept, writer.stage / f"review_queue.{export}")


def limit_drafts(drafts: list[Draft], seed: int, limit: int | None) -> list[Draft]:
    """At most ``limit`` drafts per (file, kind), chosen by a seed-dependent order; builder order kept."""
    if not limit:
        return list(drafts)
    chosen: set[str] = set()
    groups: dict[tuple[str, str], list[Draft]] = {}
    for d in drafts:
        groups.setdefault((d.file_stem, d.kind), []).append(d)
    for members in groups.values():
        chosen.update(d.key for d in sorted(members, key=lambda d: order_key(seed, d.key))[:limit])
    return [d for d in drafts if d.key in chosen]


def _render(job: ImageJob, rel: str, writer: "DatasetWriter", max_side: int) -> None:
    """Write one image; raw-file problems become one ``DataError`` naming the file and its row."""
    from medmim_eval.errors import DataError, MedmimError, MissingBackendError

    if not job.source.is_file():
        raise DataError(f"{job.source}: file not found (referenced by {job.origin})")
    if job.render is None and max_side <= 0:
        writer.add_image_file(job.source, rel)
        return
    try:
        image = (job.render or open_raster)(job.source)
    except MissingBackendError:
        raise
    except MedmimError as exc:
        raise DataError(f"{exc} (referenced by {job.origin})") from None
    except Exception as exc:  # a decoder's text may quote file contents: name the type only
        raise DataError(f"{job.source}: cannot be converted to an image ({type(exc).__name__}); "
                        f"referenced by {job.origin}") from None
    if max_side > 0 and max(image.size) > max_side:
        from PIL import Image

        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    writer.add_image(image, rel)


def open_raster(path: Path) -> Any:
    """A JPEG/PNG as an 8-bit PIL image (``L`` or ``RGB``; 16-bit and float images min-max scaled)."""
    from PIL import Image

    with Image.open(path) as raw:
        raw.load()
        if raw.mode in ("L", "RGB"):
            return raw.copy()
        if raw.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            import numpy as np

            values = np.asarray(raw, dtype=np.float64)
            low, high = float(values.min()), float(values.max())
            scaled = (values - low) / (high - low) * 255.0 if high > low else values * 0
            return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), mode="L")
        return raw.convert("RGB")
