"""Saving the trained model as a checkpoint the evaluation adapters load directly.

Full fine-tuning: ``Trainer.save_model`` (it gathers ZeRO-3 / FSDP shards). LoRA: the adapters are
merged into the base weights (``lora_merge=true``, the default) so ``hf-llava:DIR`` and
``vllm:DIR`` need no peft; ``lora_merge=false`` saves the adapter alone (load it with peft). QLoRA
merges into a bf16 copy of the base, since 4-bit weights cannot take the merge. Then the
processor is saved, config.json declares ``medmim_prompt_format`` and, for LLaVA, the weights
are re-keyed to the layout vLLM loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medmim_eval.training_recipes import run_dir
from medmim_eval.training_recipes.options import TrainConfig


def _merged(trainer: Any, family: str, config: TrainConfig, base: Path) -> Any:
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not config.qlora:
        return model.merge_and_unload()
    import tempfile

    import torch
    from peft import PeftModel
    from transformers import Idefics2ForConditionalGeneration, LlavaForConditionalGeneration

    cls = LlavaForConditionalGeneration if family == "llava" else Idefics2ForConditionalGeneration
    with tempfile.TemporaryDirectory() as adapter_dir:
        model.save_pretrained(adapter_dir)
        full = cls.from_pretrained(base, dtype=torch.bfloat16)
        return PeftModel.from_pretrained(full, adapter_dir).merge_and_unload()


def save_model(trainer: Any, processor: Any, output: Path, family: str, prompt_format: str,
               config: TrainConfig, base: Path) -> None:
    """Write the final model, processor and format declaration into ``output`` (main process writes)."""
    if config.lora and config.lora_merge:
        if trainer.is_world_process_zero():
            _merged(trainer, family, config, base).save_pretrained(output)
    else:
        trainer.save_model(str(output))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    processor.save_pretrained(output)
    if (output / "config.json").is_file():
        run_dir.declare_format(output, prompt_format)
    if family == "llava":
        run_dir.rekey_for_vllm(output)
