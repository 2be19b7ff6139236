"""Training data: Med-MIM JSON files read by the evaluation loader, plus the data-mixture ablations.

Items are read with :func:`medmim_eval.medmim_format.load_medmim_file` (the same samples, prompts
and validation evaluation uses); the assistant response is the item's own assistant turn, verbatim.

Where images live: the file's own folder when the items' images are there (builder output, the
synthetic suite), else the source dataset's folder (official instruction files: ``MS_CXR_T_*`` ->
the ms-cxr-t folder, ...; see :mod:`medmim_eval.datadir`).

Ability of an item: named by the file name (``..._Comparison.json``, ``synth_temporal.json``,
``composed_coreference.json``), else by its source tag (``EMBED_multichoice_reasoning``).
Composed items: source tag or file name contains ``composed``.

Ablations, applied in this order: ``drop_ability`` removes one ability; ``composed=false`` removes
the composed set; ``fraction`` keeps the first ``round(fraction * n)`` items of a seeded
permutation (so with one seed, the 25% subset is inside the 50% subset, and so on), in file order.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmim_eval.datadir import DataPaths
from medmim_eval.errors import DataError
from medmim_eval.medmim_format import load_medmim_file, read_json_array, source_of
from medmim_eval.schema import Sample
from medmim_eval.training_recipes.options import TrainConfig

_ABILITY_WORDS = (("temporal", "temporal"), ("reasoning", "reasoning"), ("comparison", "comparison"),
                  ("co-?_?reference", "co-reference"))
MAX_MISSING_SHOWN = 5


@dataclass(frozen=True)
class TrainExample:
    """One training item: the evaluation sample and its verbatim assistant response."""

    sample: Sample
    response: str
    ability: str
    source_tag: str
    composed: bool

    @property
    def label(self) -> str:
        """How errors name the item: file, index and id."""
        return f"{self.sample.file} item {self.sample.index} (id {self.sample.item_id})"


@dataclass
class TrainData:
    examples: list[TrainExample]
    files: list[dict[str, Any]] = field(default_factory=list)
    ablation: dict[str, Any] = field(default_factory=dict)


def ability_of(file_stem: str, tag: str) -> str:
    """The ability an item trains (see the module docstring), or "" when neither name says."""
    for text in (file_stem.lower(), tag.lower()):
        for pattern, ability in _ABILITY_WORDS:
            if re.search(pattern, text):
                return ability
    return ""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _image_roots(path: Path, items: list[Any], data: DataPaths | None) -> dict[str, Path]:
    """Source tag -> the folder its image paths are relative to."""
    roots: dict[str, Path] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("images"), list) or not item["images"]:
            continue
        tag = str(item.get("source", ""))
        if tag in roots:
            continue
        first = str(item["images"][0])
        _, folder = source_of(tag)
        if (path.parent / first).exists() or folder is None or data is None:
            roots[tag] = path.parent
        else:
            roots[tag] = data.image_root(folder)
    return roots


def read_file(path: Path, data: DataPaths | None = None) -> list[TrainExample]:
    """All items of one Med-MIM JSON file; a bad item or a missing image is one DataError naming it."""
    items = read_json_array(path)
    roots = _image_roots(path, items, data)
    samples = load_medmim_file(path, task=path.stem, ability="", image_root=lambda tag: roots.get(tag, path.parent))
    examples, missing = [], []
    for sample in samples:
        item = items[sample.index]
        tag = str(item.get("source", ""))
        response = item["conversation"][1]["content"]
        if not response.strip():
            raise DataError(f"{path}: item {sample.index} (id {sample.item_id}): empty assistant turn; fix or remove it")
        missing += [f"item {sample.index} (id {sample.item_id}): {p}" for p in sample.image_paths if not Path(p).is_file()]
        examples.append(TrainExample(sample, response, ability_of(path.stem, tag), tag,
                                     "composed" in tag.lower() or "composed" in path.stem.lower()))
    if missing:
        shown = "\n  ".join(missing[:MAX_MISSING_SHOWN])
        more = f"\n  ... and {len(missing) - MAX_MISSING_SHOWN} more" if len(missing) > MAX_MISSING_SHOWN else ""
        raise DataError(f"{path}: {len(missing)} image(s) not found:\n  {shown}{more}\n"
                        "point --data-dir (or MEDMIM_<SOURCE>_DIR) at the source images, or rebuild the file")
    return examples


def load_training_data(paths: list[Path], config: TrainConfig, data: DataPaths | None = None) -> TrainData:
    """Read every file, apply the ablations of ``config`` and describe what was kept."""
    if not paths:
        raise DataError("no training data: pass --data FILE.json[,FILE.json...]")
    examples: list[TrainExample] = []
    files = []
    for path in paths:
        loaded = read_file(path, data)
        if not loaded:
            raise DataError(f"{path}: holds no items; pass a Med-MIM JSON file with at least one item")
        examples += loaded
        files.append({"path": str(path.resolve()), "sha256": file_sha256(path), "items": len(loaded)})
    before = Counter(e.ability or "unknown" for e in examples)
    kept = examples
    if config.drop_ability:
        kept = [e for e in kept if e.ability != config.drop_ability]
    if not config.composed:
        kept = [e for e in kept if not e.composed]
    if config.fraction < 1.0:
        order = list(range(len(kept)))
        random.Random(f"medmim-train-fraction/{config.seed}").shuffle(order)
        chosen = sorted(order[: round(config.fraction * len(kept))])
        kept = [kept[i] for i in chosen]
    if not kept:
        raise DataError(f"the ablation options left no training items (drop_ability={config.drop_ability!r}, "
                        f"composed={config.composed}, fraction={config.fraction}); relax them")
    ablation = {"drop_ability": config.drop_ability or None, "composed": config.composed, "fraction": config.fraction,
                "items_before": len(examples), "items_after": len(kept),
                "abilities_before": dict(sorted(before.items())),
                "abilities_after": dict(sorted(Counter(e.ability or "unknown" for e in kept).items())),
                "composed_items_before": sum(e.composed for e in examples)}
    return TrainData(kept, files, ablation)
