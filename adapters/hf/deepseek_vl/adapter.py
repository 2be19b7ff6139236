"""The ``hf-deepseek-vl`` adapter: a DeepSeek-VL checkpoint run in-process.

Both routes (see :mod:`medmim_eval.adapters.hf.deepseek_vl.plugin`) receive the same text, rendered by
:mod:`medmim_eval.adapters.hf.deepseek_vl.prompt` (the original ``deepseek`` template, one ``<image_placeholder>`` per
image at its position), and the same 8-bit RGB images in prompt order. The ``native`` route runs
transformers' ``DeepseekVL(Hybrid)ForConditionalGeneration`` with the checkpoint's processor (its
``*Pil`` image processor needs no torchvision), each image first resized as DeepSeek-VL's own
``VLMImageProcessor`` sizes it (:func:`deepseek_resize`); the ``package`` route is in
:mod:`medmim_eval.adapters.hf.deepseek_vl.package`. Batches are left-padded and may mix image counts. Decoding is greedy
unless ``settings.temperature`` > 0. A prompt with more than ``max_images`` images is answered with
``TooManyImagesError``, one whose text carries stray image tags with ``MedmimError``: nothing is
dropped or truncated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medmim_eval.adapter import AdapterContext, GenerationResult, GenerationSettings
from medmim_eval.adapters.hf.common import (Placement, Prepared, check_image_count, checked_target,
                                            checkpoint_fingerprint, generate_answers, input_device, load_model,
                                            prepared_prompt, stop_token_ids)
from medmim_eval.adapters.hf.deepseek_vl.plugin import INSTALL_HINT, NATIVE_CLASSES, check_deepseek_vl, deepseek_mode
from medmim_eval.adapters.hf.deepseek_vl.prompt import SYSTEM_PROMPT, deepseek_vl_format, render_deepseek_vl
from medmim_eval.adapters.hf.plugin import read_config
from medmim_eval.adapters.hf.skeleton import InProcessAdapter
from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.schema import Sample, content_hash

DEFAULT_BATCH = 8
DEFAULT_MAX_IMAGES = 3


def deepseek_resize(image: Any, target: int, min_size: int, resample: int) -> Any:
    """``image`` (PIL) with its long side at ``target`` as DeepSeek-VL's ``VLMImageProcessor.resize``
    sizes it: the short side truncated (``int``), not rounded as transformers' converted processor
    does (one row or column fewer for most non-square images), at least ``min_size``."""
    width, height = image.size
    longest = max(width, height)
    size = (max(int(width / longest * target), min_size), max(int(height / longest * target), min_size))
    return image if size == image.size else image.resize(size, resample)


class NativeDeepseekVL:
    """transformers' DeepSeek-VL classes and the checkpoint's processor (the ``native`` route)."""

    route = "native"

    def __init__(self, torch: Any, path: Path, where: Placement) -> None:
        import transformers
        from transformers import AutoProcessor

        self.torch, self.where = torch, where
        model_type = read_config(path).get("model_type", "")
        self.processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None or getattr(self.processor, "image_processor", None) is None:
            raise MedmimError(f"hf-deepseek-vl: {path} has no image processor and tokenizer (AutoProcessor gave "
                              f"{type(self.processor).__name__}); save the DeepseekVLProcessor into the folder")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_model(getattr(transformers, NATIVE_CLASSES[model_type]), path, where)
        self.device = input_device(self.model, where)
        self.image_token = self.processor.image_token
        image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        if image_id != self.model.config.image_token_id:
            raise MedmimError(f"hf-deepseek-vl: the tokenizer's {self.image_token} is id {image_id}, the model "
                              f"expects {self.model.config.image_token_id}; the processor does not belong to {path}")
        self.format = deepseek_vl_format(self.image_token)
        self.stop_ids = stop_token_ids(self.model, self.tokenizer, self.format)
        self.high_res = model_type == "deepseek_vl_hybrid"
        image_processor = self.processor.image_processor
        size = getattr(image_processor, "high_res_size", None) if self.high_res else image_processor.size
        self.resize_to = int(size["height"] if isinstance(size, dict) else size.height)
        self.resize_args = (int(getattr(image_processor, "min_size", 14)),
                            int(getattr(image_processor, "high_res_resample" if self.high_res else "resample", 3)))

    def encode(self, texts: list[str], images: list[list[Any]]) -> Any:
        """Processor output for a left-padded batch (tensors on the model's input device)."""
        # The processor's own resize then keeps the size (PIL returns a same-size resize unchanged).
        flat = [deepseek_resize(image, self.resize_to, *self.resize_args) for group in images for image in group]
        inputs = self.processor(text=texts, images=flat or None, return_tensors="pt", padding=True)
        for key in ("pixel_values", "high_res_pixel_values"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.where.dtype)
        return inputs.to(self.device)

    def answer(self, texts: list[str], images: list[list[Any]], settings: GenerationSettings
               ) -> tuple[list[tuple[str, dict[str, int]]], list[tuple[int, int]], list[str]]:
        """(answer, token counts) per row, the size of each image as the encoder saw it, and notes."""
        inputs = self.encode(texts, images)
        answers = generate_answers(self.torch, self.model, self.tokenizer, inputs, settings, self.stop_ids, self.format)
        size = [(int(inputs["pixel_values"].shape[-1]), int(inputs["pixel_values"].shape[-2]))] \
            if "pixel_values" in inputs else []
        notes = []
        if self.high_res and "high_res_pixel_values" in inputs:
            high = inputs["high_res_pixel_values"]
            notes.append(f"high-resolution (SAM) copy of each image: {int(high.shape[-1])}x{int(high.shape[-2])}")
        return answers, size, notes

    def logits(self, texts: list[str], images: list[list[Any]]) -> Any:
        with self.torch.inference_mode():
            out = self.model(**self.encode(texts, images))
        return out.logits[:, -1].float().cpu()


class DeepseekVLAdapter(InProcessAdapter):
    """A loaded DeepSeek-VL (``ModelAdapter``); ``backend`` is the route that runs the model."""

    released = "backend"

    def __init__(self, model_id: str, path: Path, options: dict[str, str], mode: str) -> None:
        try:
            import torch
        except ImportError:
            raise MissingBackendError(INSTALL_HINT) from None
        self._setup(torch, model_id, path, options, batch=DEFAULT_BATCH, max_images=DEFAULT_MAX_IMAGES)
        self.mode = mode
        if mode == "native":
            self.backend: Any = NativeDeepseekVL(torch, path, self.placement)
        else:
            from medmim_eval.adapters.hf.deepseek_vl.package import PackageDeepseekVL

            self.backend = PackageDeepseekVL(torch, path, self.placement)
        self.image_token = self.backend.image_token

    def fingerprint(self) -> dict[str, Any]:
        return checkpoint_fingerprint("hf-deepseek-vl", self.path, self.lineage, route=self.mode,
                                      format="deepseek_vl", resize="deepseek_vl_truncate",
                                      system_prompt_sha256=content_hash(SYSTEM_PROMPT),
                                      dtype=self.placement.dtype_name, max_images=self.max_images)

    def prepare_sample(self, sample: Sample) -> Prepared:
        """The rendered text, the images in prompt order and the record; raises MedmimError if refused."""
        check_image_count(sample, self.max_images, self.model_id)
        text = render_deepseek_vl(sample.prompt, self.image_token)
        return prepared_prompt(sample, text, {self.image_token: len(sample.prompt.images)})

    def next_token_logits(self, *samples: Sample) -> Any:
        """The logits of the first answer token, one row per sample, from one left-padded batch
        (float32 on the CPU). For checks: image order, batching."""
        prepared = [self.prepare_sample(s) for s in samples]
        return self.backend.logits([p[0] for p in prepared], [p[1] for p in prepared])

    def run(self, prepared: list[Prepared], settings: GenerationSettings) -> list[GenerationResult]:
        answers, size, notes = self.backend.answer([p[0] for p in prepared], [p[1] for p in prepared], settings)
        results = []
        for (text, images, record), (answer, tokens) in zip(prepared, answers, strict=True):
            sent = record.model_copy(update={"image_sizes": size * len(images),
                                             "notes": [*record.notes, *(notes if images else [])]})
            results.append(GenerationResult(text=answer, sent=sent, tokens=tokens))
        return results


def make_hf_deepseek_vl(target: str | None, options: dict[str, str], context: AdapterContext) -> DeepseekVLAdapter:
    """The factory registered as ``hf-deepseek-vl``. Raises MissingBackendError or MedmimError with the fix."""
    model_id, path = checked_target("hf-deepseek-vl", target, options, check_deepseek_vl, INSTALL_HINT)
    mode, _ = deepseek_mode(path, options)
    assert mode is not None
    return DeepseekVLAdapter(model_id, path, options, mode)
