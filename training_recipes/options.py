"""Hyper-parameters of the fine-tuning recipes and the ``key=value`` overrides that set them.

Pure Python (no torch): the ``train`` command validates overrides before anything heavy loads.

Steps per epoch (what the trainer runs and the lineage records)::

    batches_per_process = ceil(ceil(n_items / batch_size) / processes)
    steps_per_epoch     = ceil(batches_per_process / grad_accum)

so ``batch_size`` is per process and the effective batch is ``batch_size * processes * grad_accum``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from medmim_eval.errors import MedmimError
from medmim_eval.recipes_api import parse_overrides  # noqa: F401  (moved to the core; kept importable here)

ABILITIES = ("temporal", "reasoning", "comparison", "co-reference")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")

HELP: dict[str, str] = {
    "lr": "peak learning rate (AdamW)",
    "epochs": "passes over the data (ignored when max_steps > 0)",
    "max_steps": "optimiser steps to run; 0 = epochs decide",
    "batch_size": "samples per process per forward pass",
    "grad_accum": "forward passes per optimiser step",
    "warmup": "warm-up: steps (integer >= 1) or a fraction of all steps (< 1)",
    "schedule": "learning-rate schedule (transformers names): cosine, linear, constant_with_warmup, ...",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "gradient clipping norm",
    "seed": "seed of initialisation, shuffling and the data fraction",
    "gradient_checkpointing": "recompute activations in the backward pass (saves memory)",
    "precision": "auto (bf16 on a GPU that has it, else fp32), bf16, fp16 or fp32",
    "train_vision": "also train the vision tower (default: frozen, as in LLaVA/Mantis fine-tuning)",
    "lora": "train LoRA adapters on the language model instead of all its weights (peft)",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA scaling alpha",
    "lora_dropout": "LoRA dropout",
    "lora_targets": "module names LoRA wraps, '+'-separated",
    "lora_merge": "merge the adapters into the saved weights (needed for hf-llava:/vllm:)",
    "qlora": "4-bit base weights (bitsandbytes, CUDA GPU only) with LoRA",
    "save_steps": "save a resumable checkpoint every N optimiser steps",
    "save_limit": "resumable checkpoints kept",
    "keep_checkpoints": "keep the checkpoint-N folders after a successful run",
    "logging_steps": "log the loss every N optimiser steps",
    "threads": "torch CPU threads per process; 0 = torch's default (all cores)",
    "cache_encoded": "keep each encoded example (token ids, pixel tensors) in memory after its first epoch; "
                     "for small data sets, where re-reading the images each epoch costs more than the model",
    "encode_workers": "with cache_encoded and one training process: encode every example before the first step "
                      "in this many processes (0 or 1: each example when the first epoch reaches it; also when the "
                      "run reaches fewer than 1/N of the examples, where encoding all of them would cost more)",
    "max_length": "refuse (with the item named) any sample longer than this many tokens; 0 = the model's limit",
    "plateau_step": "at this step, stop a run whose mean loss over the last plateau_window steps is still above "
                    "plateau_loss (it has not learned; the tiny recipe then starts over from the next seed); 0 = never",
    "plateau_window": "steps whose logged losses the plateau check averages",
    "plateau_loss": "the mean loss above which the plateau check stops the run",
    "plateau_retries": "tiny recipe: how many times a run stopped by the plateau check starts over from the next "
                       "seed (then the last try trains to the end; with 0 the check's stop is an error)",
    "drop_ability": "ablation: leave out one ability (temporal, reasoning, comparison, co-reference)",
    "fraction": "ablation: keep this share of the data (0.25, 0.5, 0.75, 1.0), drawn with the seed",
    "composed": "ablation: false leaves out the composed set (items whose source tag contains 'composed')",
}


@dataclass
class TrainConfig:
    """All hyper-parameters of one training run; recorded whole in the lineage file."""

    lr: float = 1e-5
    epochs: float = 3.0
    max_steps: int = 0
    batch_size: int = 1
    grad_accum: int = 8
    warmup: float = 0.03
    schedule: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    gradient_checkpointing: bool = False
    precision: str = "auto"
    train_vision: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "q_proj+k_proj+v_proj+o_proj+gate_proj+up_proj+down_proj"
    lora_merge: bool = True
    qlora: bool = False
    save_steps: int = 500
    save_limit: int = 2
    keep_checkpoints: bool = False
    logging_steps: int = 10
    threads: int = 0
    cache_encoded: bool = False
    encode_workers: int = 0
    max_length: int = 0
    plateau_step: int = 0
    plateau_window: int = 250
    plateau_loss: float = 0.0
    plateau_retries: int = 0
    drop_ability: str = ""
    fraction: float = 1.0
    composed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warmup_steps(self, total_steps: int) -> int:
        return int(self.warmup) if self.warmup >= 1 else int(math.ceil(self.warmup * total_steps))


def _convert(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    return kind(raw)


def build_config(overrides: dict[str, str], defaults: dict[str, Any] | None = None) -> TrainConfig:
    """The recipe's defaults with ``overrides`` applied and checked; errors name the key and the fix."""
    config = TrainConfig(**(defaults or {}))
    types = {f.name: type(getattr(config, f.name)) for f in fields(config)}
    for key, raw in overrides.items():
        if key not in types:
            import difflib

            close = difflib.get_close_matches(key, list(types), n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise MedmimError(f"unknown training option {key!r}.{hint} Known: {', '.join(sorted(types))}")
        try:
            setattr(config, key, _convert(key, raw, types[key]))
        except ValueError as exc:
            raise MedmimError(f"training option {key}={raw!r}: {exc}") from None
    _check(config)
    return config


def _check(c: TrainConfig) -> None:
    problems = []
    if c.lr <= 0:
        problems.append("lr must be > 0")
    if c.epochs <= 0 and c.max_steps <= 0:
        problems.append("give epochs > 0 or max_steps > 0")
    for name in ("batch_size", "grad_accum", "save_steps", "save_limit", "logging_steps", "lora_r"):
        if getattr(c, name) < 1:
            problems.append(f"{name} must be a positive integer")
    if c.encode_workers < 0:
        problems.append("encode_workers must be 0 or more")
    if c.plateau_step < 0 or c.plateau_retries < 0 or c.plateau_window < 1:
        problems.append("plateau_step and plateau_retries must be 0 or more, plateau_window positive")
    if c.warmup < 0 or (c.warmup >= 1 and c.warmup != int(c.warmup)):
        problems.append("warmup is a whole number of steps (>= 1) or a fraction (< 1)")
    if c.schedule not in SCHEDULES:
        problems.append(f"schedule must be one of {', '.join(SCHEDULES)}")
    if c.precision not in ("auto", "bf16", "fp16", "fp32"):
        problems.append("precision must be auto, bf16, fp16 or fp32")
    if c.drop_ability and c.drop_ability not in ABILITIES:
        problems.append(f"drop_ability must be one of {', '.join(ABILITIES)}")
    if c.fraction not in FRACTIONS:
        problems.append(f"fraction must be one of {', '.join(str(f) for f in FRACTIONS)}")
    if c.qlora and not c.lora:
        c.lora = True  # QLoRA is LoRA on 4-bit weights
    if problems:
        raise MedmimError("training options: " + "; ".join(problems))


def steps_per_epoch(n_items: int, batch_size: int, processes: int, grad_accum: int) -> int:
    """Optimiser steps in one epoch (see the module docstring)."""
    batches = math.ceil(math.ceil(n_items / batch_size) / processes)
    return max(1, math.ceil(batches / grad_accum))


def option_help() -> list[tuple[str, str, Any]]:
    """``(key, help line, default)`` of every override of the fine-tuning recipes (``train --options``)."""
    defaults = TrainConfig().to_dict()
    return [(key, line, defaults[key]) for key, line in HELP.items()]
