"""The transformers ``Trainer`` with a resume that restores the model weights of every architecture.

transformers 5 saves LLaVA-family checkpoints in their published key layout
(``language_model.model.*``) while the live model names its weights ``model.language_model.*``;
``Trainer._load_from_checkpoint`` loads the file with ``load_state_dict(strict=False)``, so on
resume it matches no key and silently continues from the *base* weights. Here the checkpoint is
read back with ``from_pretrained`` (which maps the keys) and copied into the model strictly.
DeepSpeed, FSDP and peft checkpoints keep the Trainer's own loading.

The loss is computed from the logits of the response columns only: the labels cover the response
tokens alone, so projecting every prompt and image position onto the vocabulary (most of a small
model's compute, and a large share of a big one's memory) changes nothing but the cost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer

IGNORE = -100


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

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """The causal-LM loss (sum over the label tokens / their count in the accumulated batch),
        with logits computed only from the first column that holds a label onwards."""
        import torch.nn.functional as F

        labels = inputs.get("labels")
        parallel = getattr(self.accelerator, "parallelism_config", None)
        if labels is None or self.label_smoother is not None or self.compute_loss_func is not None or (
                parallel is not None and getattr(parallel, "sp_enabled", False)):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        labelled = (labels != IGNORE).any(0).nonzero()
        first = int(labelled[0]) if len(labelled) else labels.shape[1] - 1
        first = max(first, 1)
        # Logits at positions first-1 .. T-2 predict the tokens first .. T-1.
        outputs = model(**inputs, logits_to_keep=labels.shape[1] - first + 1)
        logits = outputs.logits[:, :-1].float()
        targets = labels[:, first:].to(logits.device)
        total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                                reduction="sum")
        # The Trainer passes num_items_in_batch exactly when the model takes loss kwargs, and then
        # treats the loss as already scaled for gradient accumulation (loss_is_scaled_for_ga unset).
        if num_items_in_batch is not None:
            count = num_items_in_batch.to(total.device) if hasattr(num_items_in_batch, "to") else num_items_in_batch
            loss = total / count
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # num_items_in_batch counts every process's tokens
        else:
            loss = total / (targets != IGNORE).sum().clamp(min=1)
        return (loss, outputs) if return_outputs else loss
