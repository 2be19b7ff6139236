"""The transformers ``Trainer`` with a resume that restores the model weights of every architecture.

transformers 5 saves LLaVA-family checkpoints in their published key layout
(``language_model.model.*``) while the live model names its weights ``model.language_model.*``;
``Trainer._load_from_checkpoint`` loads the file with ``load_state_dict(strict=False)``, so on
resume it matches no key and silently continues from the *base* weights. Here the checkpoint is
read back with ``from_pretrained`` (which maps the keys) and copied into the model strictly.
DeepSpeed, FSDP and peft checkpoints keep the Trainer's own loading.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer


class MedmimTrainer(Trainer):
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        model = model if model is not None else self.model
        folder = Path(resume_from_checkpoint)
        has_weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or hasattr(model, "peft_config") or not has_weights:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        dtype = next(model.parameters()).dtype
        saved = type(model).from_pretrained(folder, dtype=dtype)
        model.load_state_dict(saved.state_dict(), strict=True)
        del saved
