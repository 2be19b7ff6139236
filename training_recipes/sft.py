"""Supervised fine-tuning of LLaVA-architecture and Idefics2 checkpoints on Med-MIM JSON (the paper's
recipe: interleaved multi-image prompts, loss on the response tokens only).

The loop is the transformers ``Trainer`` on accelerate: one process on CPU or GPU, data parallel
under ``accelerate launch``, DeepSpeed ZeRO or FSDP through an accelerate config file (see
``training_recipes/configs``). Checkpoints every ``save_steps`` hold the optimizer, scheduler, RNG
states and data position; see :mod:`.run_dir` for resuming and the lineage file.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from medmim_eval import __version__
from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.prompt_formats import default_format, get_format
from medmim_eval.recipes_api import TrainRequest  # noqa: F401  (moved to the core; kept importable here)
from medmim_eval.training_recipes import run_dir
from medmim_eval.training_recipes.data import TrainData, file_sha256, load_training_data
from medmim_eval.training_recipes.options import TrainConfig, build_config, steps_per_epoch

INSTALL_HINT = "training needs torch, transformers, accelerate and peft: pip install 'medmim-eval[train]'"
PROJECTORS = {"llava": "multi_modal_projector", "idefics2": "connector"}
PACKAGES = ("torch", "transformers", "accelerate", "peft", "deepspeed", "tokenizers")


def process_state() -> Any:
    """accelerate's view of this process (rank, world size); on a machine without CUDA it joins
    the gloo process group that ``accelerate launch --multi_gpu`` / ``torchrun`` set up."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def say(text: str) -> None:
    if process_state().is_main_process:
        print(text, file=sys.stderr, flush=True)


def base_fingerprint(base: Path) -> dict[str, Any]:
    """Path, config hash and weight-file hashes of the starting checkpoint."""
    weights = {p.name: file_sha256(p) for p in sorted(base.glob("*.safetensors"))}
    config = base / "config.json"
    return {"path": str(base.resolve()), "config_sha256": file_sha256(config) if config.is_file() else None,
            "weights": weights}


def package_versions() -> dict[str, str]:
    out = {"medmim-eval": __version__, "python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def check_backend(config: TrainConfig) -> None:
    missing = [m for m in ("torch", "transformers", "accelerate") if importlib.util.find_spec(m) is None]
    if config.lora and importlib.util.find_spec("peft") is None:
        missing.append("peft")
    if missing:
        raise MissingBackendError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
    if config.qlora:
        import torch

        if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
            raise MedmimError("qlora=true needs a CUDA GPU and bitsandbytes (pip install bitsandbytes); "
                              "use lora=true on this machine")


def load_model(base: Path, family: str, config: TrainConfig) -> tuple[Any, Any]:
    """(model, processor) from ``base``; frozen vision tower unless ``train_vision``; LoRA if asked."""
    import torch
    from transformers import AutoProcessor, Idefics2ForConditionalGeneration, LlavaForConditionalGeneration

    if not (base / "config.json").is_file():
        raise MedmimError(f"--base {base}: not a checkpoint folder (no config.json); pass a local model folder")
    processor = AutoProcessor.from_pretrained(base)
    if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
        raise MedmimError(f"--base {base}: no processor with an image processor and a tokenizer there")
    cls = LlavaForConditionalGeneration if family == "llava" else Idefics2ForConditionalGeneration
    extra: dict[str, Any] = {"dtype": dtype_of(config)}
    if config.qlora:
        from transformers import BitsAndBytesConfig

        extra["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                          bnb_4bit_compute_dtype=torch.bfloat16)
    try:
        model = cls.from_pretrained(base, **extra)
    except (OSError, ValueError) as exc:
        raise MedmimError(f"--base {base}: cannot load it as {cls.__name__} ({exc})") from None
    if not config.train_vision:
        for name, param in model.named_parameters():
            if "vision_tower" in name or "vision_model" in name:
                param.requires_grad_(False)
    if config.lora:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if config.qlora:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
        targets = "|".join(t for t in config.lora_targets.split("+") if t)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=rf".*language_model.*\.({targets})", modules_to_save=[PROJECTORS[family]])
        model = get_peft_model(model, lora)
        if config.gradient_checkpointing:
            model.enable_input_require_grads()
    return model, processor


def dtype_of(config: TrainConfig) -> Any:
    import torch

    precision = config.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def training_arguments(output: Path, config: TrainConfig) -> Any:
    import torch
    from transformers import TrainingArguments

    dtype = dtype_of(config)
    # transformers 5 renamed gradient_checkpointing (kept as a deprecated alias).
    counted = TrainingArguments.__dataclass_fields__["include_num_input_tokens_seen"].type
    tokens_counted = "non_padding" if "str" in str(counted) else True  # older transformers: a bool
    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                     else "gradient_checkpointing")
    return TrainingArguments(
        output_dir=str(output), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr, num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps > 0 else -1, lr_scheduler_type=config.schedule,
        warmup_steps=config.warmup, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        seed=config.seed, data_seed=config.seed, bf16=dtype == torch.bfloat16 and not config.qlora,
        fp16=dtype == torch.float16, **{checkpointing: config.gradient_checkpointing},
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_limit,
        logging_steps=config.logging_steps, report_to="none", disable_tqdm=True, remove_unused_columns=False,
        # A trained vision tower has weights LLaVA never uses (SigLIP's pooling head, the last norm when
        # features come from hidden states), which DDP must be told about.
        ddp_find_unused_parameters=config.train_vision, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), include_num_input_tokens_seen=tokens_counted,
    )


def plan_of(request: TrainRequest, family: str, prompt_format: str, config: TrainConfig, data: TrainData,
            base: Path) -> dict[str, Any]:
    """What must match for a folder's checkpoints to be resumed (compared by content: see run_dir)."""
    from medmim_eval.weights import weights_digest

    cfg = config.to_dict()
    for volatile in ("save_steps", "save_limit", "keep_checkpoints", "logging_steps", "threads", "cache_encoded",
                     "encode_workers"):
        cfg.pop(volatile)
    if not config.plateau_step:  # no check: the plan of a run started before these options existed still matches
        for unused in ("plateau_step", "plateau_window", "plateau_loss", "plateau_retries"):
            cfg.pop(unused)
    return {"recipe": request.recipe, "recipe_version": request.recipe_version, "family": family,
            "prompt_format": prompt_format, "hyperparameters": cfg, "base": str(base.resolve()),
            "base_digest": weights_digest(base), "data": {f["path"]: f["sha256"] for f in data.files}}


def run_sft(request: TrainRequest, family: str, defaults: dict[str, Any] | None = None,
            prompt_format: str | None = None) -> dict[str, Any]:
    """Train ``request.base`` on ``request.data``; return the lineage written to the output folder."""
    config = build_config(request.overrides, defaults)
    check_backend(config)
    if request.base is None:
        raise MedmimError(f"recipe {request.recipe} needs --base PATH (the checkpoint to fine-tune)")
    base = request.base.expanduser()
    if not (base / "config.json").is_file():
        raise MedmimError(f"--base {base}: not a checkpoint folder (no config.json); pass a local model folder")
    data = load_training_data(request.data, config, request.data_paths)
    if prompt_format is None:
        prompt_format = "idefics2" if family == "idefics2" else default_format(base)
    fmt = get_format(prompt_format)

    state = process_state()
    output = request.output.expanduser().resolve()
    plan = plan_of(request, family, fmt.tag, config, data, base)
    resume, finished = None, False
    if state.is_main_process:
        resume, finished = run_dir.prepare_folder(output, plan, request.restart, True)
    state.wait_for_everyone()
    if not state.is_main_process:
        finished = (output / run_dir.LINEAGE).is_file()
        complete = [p for _, p, ok in run_dir.checkpoints(output) if ok]
        resume = complete[-1] if complete else None
    if finished:
        say(f"{output} already holds this model ({run_dir.LINEAGE}); nothing to train (--restart trains again)")
        return json.loads((output / run_dir.LINEAGE).read_text(encoding="utf-8"))
    return _train(request, family, fmt, config, data, base, output, resume, state.num_processes)


def _train(request: TrainRequest, family: str, fmt: Any, config: TrainConfig, data: TrainData, base: Path,
           output: Path, resume: Path | None, processes: int) -> dict[str, Any]:
    from transformers import PrinterCallback, set_seed
    from transformers.utils import logging as hf_logging

    from medmim_eval.training_recipes.encoding import (Collator, EncodedDataset, EncodedRows, ExampleEncoder,
                                                       encoding_key, offered_rows)
    from medmim_eval.training_recipes.export import save_model
    from medmim_eval.training_recipes.plateau import TrainingPlateau, check_stopped, plateau_callback
    from medmim_eval.training_recipes.progress import TrainingProgress
    from medmim_eval.training_recipes.trainer import MedmimTrainer

    started = run_dir.now()
    if config.threads > 0:
        import torch

        torch.set_num_threads(config.threads)
    hf_logging.disable_progress_bar()  # weight loading/saving bars would interleave with the training display
    set_seed(config.seed)
    model, processor = load_model(base, family, config)
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    limit = config.max_length or int(getattr(model.config.get_text_config(), "max_position_embeddings", 0) or 0)
    key = encoding_key(base, family, fmt.name, limit, data.files, data.ablation) if config.cache_encoded else ""
    reused = offered_rows(key) if key else None
    dataset = EncodedDataset(data.examples, ExampleEncoder(processor, fmt, family, limit), cache=config.cache_encoded,
                             rows=reused)
    per_epoch = steps_per_epoch(len(dataset), config.batch_size, processes, config.grad_accum)
    total = config.max_steps if config.max_steps > 0 else math.ceil(config.epochs * per_epoch)
    say(f"{request.recipe}: {len(dataset)} items from {len(data.files)} file(s), {processes} process(es), "
        f"{per_epoch} optimiser steps per epoch, {total} in all"
        + (f"; resuming from {resume}" if resume else ""))
    if reused is not None:
        say(f"{request.recipe}: {len(reused)} of {len(dataset)} items already encoded by the stopped try")
    missing = len(dataset) - len(dataset.cached_rows())
    if config.cache_encoded and config.encode_workers > 1 and processes == 1 and missing:
        if encodes_ahead(len(dataset), total, config):
            encode_ahead(request.recipe, dataset, config.encode_workers)
        else:
            say(f"{request.recipe}: {total} steps reach {total * config.batch_size * config.grad_accum} of "
                f"{len(dataset)} items: each is encoded when reached")
    callbacks: list[Any] = [TrainingProgress(request.recipe, request.progress, request.rich)]
    check = None
    if 0 < config.plateau_step < total:
        check = plateau_callback(config.plateau_step, config.plateau_window, config.plateau_loss)
        callbacks.append(check)
    trainer = MedmimTrainer(model=model, args=training_arguments(output, config), train_dataset=dataset,
                            data_collator=Collator(pad_id, family), callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # TrainingProgress reports the loss
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    try:
        check_stopped(check, config.seed)  # a run that has not learned is not saved as a model
    except TrainingPlateau as exc:
        exc.encoded = EncodedRows(key, dataset.cached_rows()) if key else None
        raise
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    lineage = {
        "recipe": request.recipe, "recipe_version": request.recipe_version, "family": family,
        "prompt_format": fmt.name, "hyperparameters": config.to_dict(),
        "data": {"files": data.files, "ablation": data.ablation},
        "base": base_fingerprint(base), "packages": package_versions(), "processes": processes,
        "steps": trainer.state.global_step, "steps_per_epoch": per_epoch, "epochs": round(trainer.state.epoch or 0, 4),
        "final_loss": losses[-1] if losses else result.training_loss, "mean_loss": result.training_loss,
        "first_loss": losses[0] if losses else result.training_loss, "train_runtime_s": result.metrics.get("train_runtime"),
        "input_tokens_seen": int(trainer.state.num_input_tokens_seen or 0),
        "resumed": run_dir.resumes(output), "started_at": started, "finished_at": None,
    }
    save_model(trainer, processor, output, family, fmt.name, config, base)
    if trainer.is_world_process_zero():
        lineage["finished_at"] = run_dir.now()
        run_dir.finish_folder(output, lineage, config.keep_checkpoints)
        say(f"{request.recipe}: {lineage['steps']} steps, final loss {lineage['final_loss']} -> {output}\n"
            f"evaluate it: medmim-eval run --models hf-{'llava' if family == 'llava' else 'idefics2'}:{output} "
            "--tasks ...")
    trainer.accelerator.wait_for_everyone()
    return lineage


def encodes_ahead(n_items: int, total_steps: int, config: Any) -> bool:
    """Whether encoding all ``n_items`` in ``config.encode_workers`` processes before the first step
    pays: not when the run reaches fewer than 1/workers of them (a smoke test, a benchmark), where
    encoding only those, as they are reached, takes less time."""
    reached = min(n_items, total_steps * config.batch_size * config.grad_accum)
    return reached * config.encode_workers >= n_items


def encode_ahead(recipe: str, dataset: Any, workers: int) -> None:
    """Encode the whole (cached) data set in ``workers`` processes before the first step; where the
    processes cannot run, say so and leave the encoding to the first epoch. A bad item stops here."""
    from concurrent.futures.process import BrokenProcessPool

    clock = time.monotonic()
    say(f"{recipe}: encoding {len(dataset) - len(dataset.cached_rows())} items in {workers} processes")
    try:
        dataset.encode_all(workers)
    except (BrokenProcessPool, OSError) as exc:
        say(f"{recipe}: encoding in worker processes failed ({type(exc).__name__}: {exc}); "
            "the first epoch encodes the rest as it reaches them")
        return
    say(f"{recipe}: encoded in {time.monotonic() - clock:.1f} s")


def sft_llava(request: TrainRequest) -> dict[str, Any]:
    """Recipe ``sft-llava``: Mantis-8B-siglip-llama3 / LLaVA-Med HF ports (LlavaForConditionalGeneration)."""
    return run_sft(request, "llava")


def sft_idefics2(request: TrainRequest) -> dict[str, Any]:
    """Recipe ``sft-idefics2``: Mantis-8B-Idefics2 (Idefics2ForConditionalGeneration)."""
    return run_sft(request, "idefics2")
