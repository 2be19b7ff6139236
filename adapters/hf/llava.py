"""The ``hf-llava:`` adapter: a local LLaVA-architecture checkpoint run in-process by transformers.

``LlavaForConditionalGeneration`` + the checkpoint's ``LlavaProcessor``. Each prompt is rendered by
:mod:`medmim_eval.prompt_formats` (the same strings training recipes use); the rendered text holds
exactly one image token per image at the image's position, and the processor expands each into
the image's patch tokens, so images reach the model in prompt order. Batches are left-padded and
may mix image counts. Decoding is greedy unless ``settings.temperature`` > 0, stopping at the
tokenizer's eos and the format's stop tokens (``<|eot_id|>`` for Llama-3). ``llava_med_mistral``
pads each image to a square with the processor's mean colour as LLaVA's ``process_images`` does
(``image_aspect_ratio: pad``; see :func:`medmim_eval.adapters.hf.common.load_llava_padded`).
A prompt with more than ``max_images`` images is answered with ``TooManyImagesError``, one whose
text carries stray image tokens with ``MedmimError``: nothing is dropped or truncated. Options:
see :mod:`medmim_eval.adapters.hf.plugin`; shared machinery: :mod:`medmim_eval.adapters.hf.common`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medmim_eval.adapter import AdapterContext, GenerationResult, GenerationSettings
from medmim_eval.adapters.hf.common import (Prepared, check_image_count, checked_target, checkpoint_fingerprint,
                                            file_sha256, generate_answers, input_device, load_llava_padded, load_model,
                                            load_rgb, pad_to_square, prepared_prompt, stop_token_ids)
from medmim_eval.adapters.hf.plugin import INSTALL_HINT, check_hf_llava, default_format
from medmim_eval.adapters.hf.skeleton import InProcessAdapter
from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.prompt_formats import PromptFormat, get_format, render_prompt
from medmim_eval.schema import Sample

__all__ = ["HFLlavaAdapter", "make_hf_llava", "file_sha256", "pad_to_square"]
DEFAULT_BATCH = 8
DEFAULT_MAX_IMAGES = 3


class HFLlavaAdapter(InProcessAdapter):
    """The loaded model and processor (``ModelAdapter``); generation runs in a worker thread."""

    def __init__(self, model_id: str, path: Path, options: dict[str, str]) -> None:
        try:
            import torch
            from transformers import AutoProcessor, LlavaForConditionalGeneration
        except ImportError:
            raise MissingBackendError(INSTALL_HINT) from None
        self._setup(torch, model_id, path, options, batch=DEFAULT_BATCH, max_images=DEFAULT_MAX_IMAGES)
        self.format: PromptFormat = get_format(options.get("format") or default_format(path))
        self.dtype = self.placement.dtype
        self.processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        self.image_processor = getattr(self.processor, "image_processor", None)
        if self.tokenizer is None or self.image_processor is None:
            raise MedmimError(f"hf-llava: {path} has no image processor and tokenizer (AutoProcessor gave "
                              f"{type(self.processor).__name__}); save the LlavaProcessor into the folder")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_model(LlavaForConditionalGeneration, path, self.placement)
        self.device = input_device(self.model, self.placement)
        image_id = self.tokenizer.convert_tokens_to_ids(self.format.image_token)
        if image_id != self.model.config.image_token_id:
            raise MedmimError(f"hf-llava: the tokenizer's {self.format.image_token} is id {image_id}, the model "
                              f"expects {self.model.config.image_token_id}")
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        return stop_token_ids(self.model, self.tokenizer, self.format)

    def fingerprint(self) -> dict[str, Any]:
        return checkpoint_fingerprint("hf-llava", self.path, self.lineage, format=self.format.tag,
                                      dtype=self.placement.dtype_name, max_images=self.max_images)

    # --- preparing one prompt --------------------------------------------------------------------
    def _load_image(self, path: str) -> tuple[Any, str | None]:
        if self.format.name == "llava_med_mistral":
            return load_llava_padded(path, getattr(self.image_processor, "image_mean", None))
        return load_rgb(path)

    def prepare_sample(self, sample: Sample) -> Prepared:
        """The rendered text, the images in prompt order and the record; raises MedmimError if refused."""
        check_image_count(sample, self.max_images, self.model_id)
        text = render_prompt(self.format, sample.prompt)
        return prepared_prompt(sample, text, {self.format.image_token: len(sample.prompt.images)}, self._load_image)

    def encode(self, texts: list[str], images: list[list[Any]]) -> Any:
        """Processor output for a left-padded batch (tensors on the model's device)."""
        flat = [image for group in images for image in group]
        inputs = self.processor(text=texts, images=flat or None, return_tensors="pt", padding=True,
                                add_special_tokens=not self.format.bos_in_text)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs.to(self.device)

    # --- running the model (blocking; called in a worker thread) ---------------------------------
    def next_token_logits(self, *samples: Sample) -> Any:
        """The logits of the first answer token, one row per sample, from one left-padded batch
        (float32 tensor on the CPU). For checks: image order, batching."""
        prepared = [self.prepare_sample(s) for s in samples]
        with self.torch.inference_mode():
            out = self.model(**self.encode([p[0] for p in prepared], [p[1] for p in prepared]))
        return out.logits[:, -1].float().cpu()

    def run(self, prepared: list[Prepared], settings: GenerationSettings) -> list[GenerationResult]:
        inputs = self.encode([p[0] for p in prepared], [p[1] for p in prepared])
        image_tokens = (inputs["input_ids"] == self.model.config.image_token_id).sum(dim=1).tolist()
        sizes = [(int(inputs["pixel_values"].shape[-1]), int(inputs["pixel_values"].shape[-2]))] \
            if "pixel_values" in inputs else []
        for row, (_, images, _) in enumerate(prepared):
            if images and image_tokens[row] % len(images):
                raise MedmimError(f"{image_tokens[row]} image tokens for {len(images)} images")
        answers = generate_answers(self.torch, self.model, self.tokenizer, inputs, settings, self.eos_ids, self.format)
        results = []
        for (_, images, record), (answer, tokens) in zip(prepared, answers, strict=True):
            sent = record.model_copy(update={"image_sizes": sizes * len(images)})
            results.append(GenerationResult(text=answer, sent=sent, tokens=tokens))
        return results


def make_hf_llava(target: str | None, options: dict[str, str], context: AdapterContext) -> HFLlavaAdapter:
    """The factory registered as ``hf-llava``. Raises MissingBackendError or MedmimError with the fix."""
    model_id, path = checked_target("hf-llava", target, options, check_hf_llava, INSTALL_HINT)
    return HFLlavaAdapter(model_id, path, options)
