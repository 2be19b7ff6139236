"""The dataset-builder framework: what a builder gets, and the writer that makes its output safe.

A builder is registered with ``register(BuilderEntry(name, description, builder="module:function"))``
and called as ``builder(options: BuildOptions, writer: DatasetWriter) -> None``. It reads raw files
under ``options.source``, adds images and Med-MIM items to the writer, and raises ``DataError``
naming the raw file and row for bad input. The writer stages everything in a temporary folder
beside the output; only :meth:`DatasetWriter.commit` — after the harness's own task loader has
validated every file and image — moves it into place, so a failed or killed build never leaves a
partial output that looks complete.

A builder whose output imitates a benchmark task calls :meth:`DatasetWriter.stands_for`; the card
then names that task for the file, and ``medmim-eval run --tasks OUT/<file>.json`` evaluates it
under that task's name, so views show it in the task's column.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medmim_eval import __version__
from medmim_eval.errors import DataError, MedmimError
from medmim_eval.images import check_images
from medmim_eval.medmim_format import IMAGE_TOKEN, load_medmim_file, source_of

MAX_IMAGES = 3
CARD_JSON = "dataset_card.json"
CARD_MD = "DATASET_CARD.md"


@dataclass(frozen=True)
class BuildOptions:
    """What the user asked for: ``data build NAME --source RAW --out OUT [--seed S] [--limit N]``."""

    name: str
    source: Path
    out: Path
    seed: int = 0
    limit: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  # builder-specific --option KEY=VALUE
    skip_missing: bool = False  # --skip-missing: leave out (and count) what lacks its raw images


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DatasetWriter:
    """Stages a builder's images and items, validates them, then publishes them atomically."""

    def __init__(self, options: BuildOptions, builder_version: str) -> None:
        self.options = options
        self.builder_version = builder_version
        options.out.parent.mkdir(parents=True, exist_ok=True)
        self.stage = Path(tempfile.mkdtemp(prefix=f".{options.out.name}.partial-", dir=options.out.parent))
        self.files: dict[str, list[dict[str, Any]]] = {}
        self.abilities: dict[str, str] = {}
        self.inputs: dict[str, str] = {}
        self.notes: list[str] = []
        self.task_of: dict[str, str] = {}
        self._images: set[str] = set()

    # -- inputs ---------------------------------------------------------------------------------
    def record_input(self, path: Path) -> None:
        """Checksum a raw file the builder read; listed in the dataset card."""
        rel = str(path.relative_to(self.options.source)) if path.is_relative_to(self.options.source) else str(path)
        if rel not in self.inputs:
            self.inputs[rel] = sha256_file(path)

    # -- images ---------------------------------------------------------------------------------
    def add_image_file(self, source: Path, rel: str) -> str:
        """Copy an image file under the output; returns its path relative to the output folder."""
        target = self._target(rel)
        if rel not in self._images:
            shutil.copyfile(source, target)
            self._images.add(rel)
        return rel

    def add_image(self, image: Any, rel: str) -> str:
        """Save a PIL image (PNG unless ``rel`` says otherwise) under the output."""
        target = self._target(rel)
        if rel not in self._images:
            image.save(target)
            self._images.add(rel)
        return rel

    def _target(self, rel: str) -> Path:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise MedmimError(f"builder bug: image path {rel!r} must be relative, inside the output")
        target = self.stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    # -- items ----------------------------------------------------------------------------------
    def add_item(self, file_stem: str, ability: str, *, item_id: str, images: list[str], question: str,
                 answer: str, source_tag: str, options: list[str] | None = None, answer_index: int | None = None) -> None:
        """Add one Med-MIM item to ``<file_stem>.json``.

        Closed items pass ``options`` and ``answer_index``; the prompt gets ``\\nA: text`` lines and the
        gold answer becomes ``"<Letter>: <text>"``. Open items pass the reference ``answer``.
        """
        if not 1 <= len(images) <= MAX_IMAGES:
            raise MedmimError(f"builder bug: item {item_id} has {len(images)} images; 1-{MAX_IMAGES} allowed")
        if len(set(images)) != len(images):
            raise MedmimError(f"builder bug: item {item_id} uses an image twice")
        user = IMAGE_TOKEN * len(images) + question.strip()
        if options is not None:
            if answer_index is None or not 0 <= answer_index < len(options):
                raise MedmimError(f"builder bug: item {item_id} has no valid answer_index")
            letters = [chr(ord("A") + i) for i in range(len(options))]
            user += "\n" + "".join(f"{letter}: {text}\n" for letter, text in zip(letters, options))
            answer = f"{letters[answer_index]}: {options[answer_index]}"
        item = {"id": item_id, "images": images,
                "conversation": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                "source": source_tag}
        self.files.setdefault(file_stem, []).append(item)
        self.abilities[file_stem] = ability

    def stands_for(self, file_stem: str, task: str) -> None:
        """Declare that ``<file_stem>.json`` is built to stand for the benchmark task ``task``."""
        self.task_of[file_stem] = task

    # -- publishing -----------------------------------------------------------------------------
    def commit(self) -> dict[str, Any]:
        """Write the JSON files and the card, validate with the task loader, move into place."""
        if not self.files:
            raise DataError(f"{self.options.source}: the builder produced no items; check --source and --limit")
        counts: Counter[tuple[str, str, str]] = Counter()
        for stem, items in sorted(self.files.items()):
            path = self.stage / f"{stem}.json"
            path.write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            samples = load_medmim_file(path, task=stem, ability=self.abilities[stem], image_root=lambda _t: self.stage)
            check = check_images(samples)
            if check.bad_paths:
                raise MedmimError(f"builder bug: {stem}.json references missing or unreadable images: "
                                  f"{sorted(check.bad_paths)[:3]}")
            for sample in samples:
                counts[(sample.ability, sample.kind, source_of(str(sample.metadata.get('source_tag', '')))[0])] += 1
        card = self._card(counts)
        (self.stage / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        (self.stage / CARD_MD).write_text(_card_markdown(card), encoding="utf-8")
        self._publish()
        return card

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def _card(self, counts: Counter[tuple[str, str, str]]) -> dict[str, Any]:
        return {
            "builder": self.options.name, "builder_version": self.builder_version, "harness_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": self.options.seed,
            "limit": self.options.limit, "options": self.options.extra,
            "files": {stem: len(items) for stem, items in sorted(self.files.items())},
            "counts": [{"ability": a, "kind": k, "source": s, "n": n} for (a, k, s), n in sorted(counts.items())],
            "images": len(self._images), "inputs_sha256": dict(sorted(self.inputs.items())), "notes": self.notes,
            "stands_for": dict(sorted(self.task_of.items())),
        }

    def _publish(self) -> None:
        out = self.options.out
        aside = None
        if out.exists():
            aside = out.with_name(f".{out.name}.previous-{os.getpid()}")
            os.replace(out, aside)
        os.replace(self.stage, out)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def _card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Dataset card: {card['builder']}", "",
             f"Built by medmim-eval {card['harness_version']} (builder version {card['builder_version']}) on "
             f"{card['created_at']}, seed {card['seed']}" + (f", limit {card['limit']}" if card["limit"] else "") + ".", "",
             "| ability | kind | source | items |", "|---|---|---|---:|"]
    lines += [f"| {c['ability']} | {c['kind']} | {c['source']} | {c['n']} |" for c in card["counts"]]
    lines += ["", f"Images: {card['images']}. Files: " + ", ".join(f"`{k}.json` ({v})" for k, v in card["files"].items()) + "."]
    lines += ["", *(f"`{stem}.json` stands for the benchmark task `{task}`: run with `--tasks`, it fills that "
                    "task's column in the leaderboard." for stem, task in card.get("stands_for", {}).items())]
    lines += ["", "Inputs read (sha256):", ""]
    lines += [f"- `{name}`: `{digest}`" for name, digest in card["inputs_sha256"].items()]
    lines += [""] + [f"Note: {n}" for n in card["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def run_builder(builder: Any, options: BuildOptions, builder_version: str) -> dict[str, Any]:
    """Run one builder with a staging writer; on any failure nothing is published."""
    if not options.source.exists():
        raise DataError(f"{options.source}: raw data folder not found; pass --source RAW_DIR")
    writer = DatasetWriter(options, builder_version)
    try:
        builder(options, writer)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
