"""Recipe ``tiny``: a LLaVA-architecture model built from scratch and trained on the synthetic suite.

No download and no GPU: :func:`medmim_eval.training_recipes.tiny_model.build_tiny_base` writes a
randomly initialised checkpoint whose tokenizer is trained on the training texts, then the
``sft-llava`` machinery trains it (everything, vision tower included) with the settings in
``TINY_TRAINING``, in the ``mantis_llama3`` format. Data: ``--data`` files, else the synthetic
suite's train split (the ``synth`` tasks loaded with ``split="train"`` through the plugin host, its
own seed, so never the test items).
The base is cached under the user cache folder, keyed by its builder version, seed and texts.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmim_eval.datadir import cache_dir
from medmim_eval.recipes_api import TrainRequest
from medmim_eval.training_recipes.sft import run_sft

if TYPE_CHECKING:
    from medmim_eval.plugins import PluginHost

RECIPE_VERSION = "1"
PROMPT_FORMAT = "mantis_llama3"
SUITE_GROUP = "synth"  # the task group whose train split the recipe trains on
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
                                "cache_encoded": True, "encode_workers": 2}
    for key, value in tiny_settings().items():
        name = _ALIASES.get(key, key)
        if name in known:
            defaults[name] = value
    if defaults.get("max_steps"):
        defaults.setdefault("epochs", 1.0)
    return defaults


def tiny_data(cache: Path | None = None, host: "PluginHost | None" = None) -> list[Path]:
    """The synthetic suite's train split (generated once into the cache), one file per ability,
    reached through the tasks of the ``synth`` group (``split="train"``) of the plugin host."""
    from medmim_eval.datadir import DataPaths
    from medmim_eval.tasks_api import TaskContext

    if host is None:
        from medmim_eval.plugins import create_plugin_host

        host = create_plugin_host()
    settings = tiny_settings()
    options: dict[str, Any] = {k: settings[k] for k in ("n_closed", "n_open") if k in settings}
    options.update(suite_seed=int(settings.get("suite_seed", 1)), workers=os.cpu_count() or 1)
    context = TaskContext(data=DataPaths.resolve(None), cache_dir=cache or cache_dir(), split="train",
                          options=options)
    files: list[Path] = []
    for name in host.groups.get(SUITE_GROUP).members:
        files.extend(host.tasks.get(name).load_loader()(context).files)
    return files


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


class TinyRecipe:
    """Recipe ``tiny``: build the base (cached) and train it with the tiny settings
    (a :class:`~medmim_eval.recipes_api.SelfContainedRecipe`: ``medmim-eval demo`` runs it)."""

    def __call__(self, request: TrainRequest) -> dict[str, Any]:
        """Train; a run the plateau check stops (it has not started to learn by ``plateau_step``)
        starts over from the next seed, up to ``plateau_retries`` times; the last try trains to the
        end. A killed run resumes the try it was on."""
        from medmim_eval.training_recipes import run_dir
        from medmim_eval.training_recipes.encoding import offering
        from medmim_eval.training_recipes.options import build_config
        from medmim_eval.training_recipes.plateau import TrainingPlateau
        from medmim_eval.training_recipes.sft import process_state, say

        data = request.data or self.default_data(request)
        config = build_config(request.overrides, tiny_defaults())
        seeds = [config.seed + k for k in range(config.plateau_retries + 1)]
        first = _try_in_folder(request.output, seeds)
        stopped: list[dict[str, Any]] = []
        encoded = None  # a stopped try's encoded examples: the next try trains on the same ones
        for index in range(first, len(seeds)):
            overrides = dict(request.overrides)
            if index:
                overrides["seed"] = str(seeds[index])
            if index == len(seeds) - 1 and config.plateau_retries:
                overrides["plateau_step"] = "0"  # the last try trains to the end whatever its loss
            restart = request.restart if index == first else True  # the folder holds the stopped try
            try:
                with offering(encoded):
                    lineage = self._train(TrainRequest(**{**request.__dict__, "data": data, "overrides": overrides,
                                                          "restart": restart}), seeds[index])
            except TrainingPlateau as exc:
                stopped.append(exc.record)
                encoded, exc.encoded = exc.encoded, None
                say(f"{request.recipe}: {exc.summary}; starting over with seed {seeds[index + 1]} "
                    f"(try {index + 2} of {len(seeds)})")
                continue
            if index and "plateau_restarts" not in lineage:  # (a finished folder's lineage has it already)
                lineage["plateau_restarts"] = {"seeds": seeds[:index], "stopped": stopped}
                if process_state().is_main_process:
                    run_dir.add_to_lineage(request.output.expanduser().resolve(),
                                           {"plateau_restarts": lineage["plateau_restarts"]})
            return lineage
        raise AssertionError("the last try has no plateau check")  # pragma: no cover

    def _train(self, request: TrainRequest, seed: int) -> dict[str, Any]:
        from medmim_eval.training_recipes.sft import process_state

        state = process_state()
        base = request.base
        if base is None:
            if state.is_main_process:
                base = tiny_base(request.data, seed)
            state.wait_for_everyone()
            if base is None:
                base = tiny_base(request.data, seed)  # built by the main process: a cache hit here
        full = TrainRequest(**{**request.__dict__, "base": base})
        return run_sft(full, "llava", tiny_defaults(), PROMPT_FORMAT)

    def default_data(self, request: TrainRequest) -> list[Path]:
        return tiny_data(host=request.host)

    def model_key(self, request: TrainRequest) -> str:
        """What the trained model depends on: recipe and builder versions, settings, data hashes."""
        from medmim_eval.training_recipes import tiny_model
        from medmim_eval.training_recipes.data import file_sha256

        version = request.recipe_version
        blob = json.dumps({"recipe": version, "builder": tiny_model.BUILDER_VERSION, "arch": tiny_model.TINY_ARCH,
                           "training": tiny_model.TINY_TRAINING, "overrides": request.overrides,
                           "data": [file_sha256(p) for p in request.data]}, sort_keys=True, default=str)
        return f"r{version}-b{tiny_model.BUILDER_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _try_in_folder(output: Path, seeds: list[int]) -> int:
    """Which try an earlier, killed invocation left ``output`` at (by the seed in its plan): 0 when
    the folder is new or holds another run (``run_sft`` then explains what it holds)."""
    from medmim_eval.training_recipes import run_dir

    try:
        plan = json.loads((output.expanduser() / run_dir.PLAN).read_text(encoding="utf-8"))
        seed = int(plan["plan"]["hyperparameters"]["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return seeds.index(seed) if seed in seeds else 0


tiny_recipe = TinyRecipe()
