"""Recipe ``tiny``: a LLaVA-architecture model built from scratch and trained on the synthetic suite.

No download and no GPU: :func:`medmim_eval.training_recipes.tiny_model.build_tiny_base` writes a
randomly initialised checkpoint whose tokenizer is trained on the training texts, then the
``sft-llava`` machinery trains it (everything, vision tower included) with the settings in
``TINY_TRAINING``, in the ``mantis_llama3`` format. Data: ``--data`` files, else the synthetic
suite's train split (``ensure_suite(split="train")``, its own seed, so never the test items).
The base is cached under the user cache folder, keyed by its builder version, seed and texts.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from medmim_eval.datadir import cache_dir
from medmim_eval.training_recipes.sft import TrainRequest, run_sft

RECIPE_VERSION = "1"
PROMPT_FORMAT = "mantis_llama3"
# TINY_TRAINING keys named differently from TrainConfig fields; other keys that are TrainConfig
# fields are used as they are, the rest describe the data (suite_seed, n_closed, n_open) or the model.
_ALIASES = {"steps": "max_steps", "warmup_steps": "warmup"}


def tiny_settings() -> dict[str, Any]:
    from medmim_eval.training_recipes.tiny_model import TINY_TRAINING

    return dict(TINY_TRAINING)


def tiny_defaults() -> dict[str, Any]:
    """TrainConfig defaults of the tiny recipe: TINY_TRAINING mapped onto the trainer's options."""
    from dataclasses import fields

    from medmim_eval.training_recipes.options import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    # Two threads: with the logits computed for the response columns only, a step on 2 idle cores
    # took 30 ms with 2 threads and 50 ms with 1 (on cores busy with other jobs, 1 thread can win:
    # threads=1). The encoded examples stay in memory (cache_encoded): re-reading and re-processing
    # the images each epoch cost as much as the model's step.
    defaults: dict[str, Any] = {"grad_accum": 1, "train_vision": True, "precision": "fp32", "warmup": 0,
                                "logging_steps": 10, "save_steps": 250, "save_limit": 1, "threads": 2,
                                "cache_encoded": True}
    for key, value in tiny_settings().items():
        name = _ALIASES.get(key, key)
        if name in known:
            defaults[name] = value
    if defaults.get("max_steps"):
        defaults.setdefault("epochs", 1.0)
    return defaults


def tiny_data(cache: Path | None = None) -> list[Path]:
    """The synthetic suite's train split (generated once into the cache), one file per ability."""
    from medmim_eval.tasks.synth import ABILITIES, ensure_suite

    settings = tiny_settings()
    sizes = {k: settings[k] for k in ("n_closed", "n_open") if k in settings}
    folder = ensure_suite(cache or cache_dir(), seed=int(settings.get("suite_seed", 1)), split="train",
                          workers=os.cpu_count() or 1, **sizes)
    return [folder / spec.file for spec in ABILITIES]


def _texts(paths: list[Path]) -> list[str]:
    from medmim_eval.prompt_formats import render_training
    from medmim_eval.training_recipes.data import read_file

    return [render_training(PROMPT_FORMAT, e.sample.prompt, e.response).full for p in paths for e in read_file(p)]


def tiny_base(paths: list[Path], seed: int, cache: Path | None = None) -> Path:
    """The from-scratch base for these data files (built once, then reused from the cache)."""
    from medmim_eval.training_recipes import tiny_model

    texts = _texts(paths)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    root = (cache or cache_dir()) / "training" / "tiny-base"
    final = root / f"v{tiny_model.BUILDER_VERSION}-s{seed}-{digest}"
    if (final / "medmim_tiny.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        tiny_model.build_tiny_base(tmp, texts, seed=seed)
        if not (final / "medmim_tiny.json").is_file():
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_recipe(request: TrainRequest) -> dict[str, Any]:
    """Recipe ``tiny``: build the base (cached) and train it with the tiny settings."""
    from medmim_eval.training_recipes.options import build_config
    from medmim_eval.training_recipes.sft import process_state

    data = request.data or tiny_data()
    config = build_config(request.overrides, tiny_defaults())
    state = process_state()
    base = request.base
    if base is None:
        if state.is_main_process:
            base = tiny_base(data, config.seed)
        state.wait_for_everyone()
        base = tiny_base(data, config.seed)  # built by the main process: a cache hit here
    full = TrainRequest(**{**request.__dict__, "data": data, "base": base})
    return run_sft(full, "llava", tiny_defaults(), PROMPT_FORMAT)
