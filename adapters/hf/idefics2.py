"""The ``hf-idefics2:`` adapter: a local Idefics2 checkpoint (Mantis-8B-Idefics2) run in-process.

``Idefics2ForConditionalGeneration`` + the checkpoint's ``Idefics2Processor``. Prompts are rendered
in the ``idefics2`` format of :mod:`medmim_eval.prompt_formats` (``User:<image><image>Q<end_of_utterance>\\nAssistant:``,
the BOS added by the tokenizer), one ``<image>`` per image at its position; the processor expands
each into ``<fake_token_around_image>`` + ``image_seq_len`` image tokens (as Mantis's own Idefics2
processor does: :func:`medmim_eval.adapters.hf.common.idefics2_inputs`), and the model's perceiver
turns each image into that many embeddings, so images reach the model in prompt order. Images keep
their aspect ratio (the processor resizes them between its shortest and longest edge); image
splitting is off unless ``image_splitting=1`` (Mantis-8B-Idefics2 was trained without it).
Batches are left-padded and may mix image counts (the processor pads the image list with blank
images, which the model skips). Greedy unless ``settings.temperature`` > 0; answers stop at the
eos or ``<end_of_utterance>``. More than ``max_images`` images -> ``TooManyImagesError`` for that
sample. Options: see :mod:`medmim_eval.adapters.hf.plugin`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medmim_eval.adapter import AdapterContext, GenerationResult, GenerationSettings
from medmim_eval.adapters.hf.common import (Prepared, check_image_count, checked_target, checkpoint_fingerprint,
                                            generate_answers, idefics2_inputs, input_device, load_model,
                                            prepared_prompt, stop_token_ids)
from medmim_eval.adapters.hf.plugin import INSTALL_HINT, check_hf_idefics2
from medmim_eval.adapters.hf.skeleton import InProcessAdapter
from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.prompt_formats import get_format, render_prompt
from medmim_eval.schema import Sample

DEFAULT_BATCH = 8
DEFAULT_MAX_IMAGES = 3
CROPS_WHEN_SPLITTING = 5  # 4 quarters + the whole image, in that order


class HFIdefics2Adapter(InProcessAdapter):
    """The loaded model and processor (``ModelAdapter``); generation runs in a worker thread."""

    def __init__(self, model_id: str, path: Path, options: dict[str, str]) -> None:
        try:
            import torch
            from transformers import AutoProcessor, Idefics2ForConditionalGeneration
        except ImportError:
            raise MissingBackendError(INSTALL_HINT) from None
        self._setup(torch, model_id, path, options, batch=DEFAULT_BATCH, max_images=DEFAULT_MAX_IMAGES)
        self.format = get_format("idefics2")
        self.processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        image_processor = getattr(self.processor, "image_processor", None)
        if self.tokenizer is None or image_processor is None or not hasattr(self.processor, "image_seq_len"):
            raise MedmimError(f"hf-idefics2: {path} has no Idefics2Processor (AutoProcessor gave "
                              f"{type(self.processor).__name__}); save the checkpoint's processor into the folder")
        # The processor reads this flag both to expand the text and to crop the images.
        image_processor.do_image_splitting = options.get("image_splitting") == "1"
        self.crops = CROPS_WHEN_SPLITTING if image_processor.do_image_splitting else 1
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_model(Idefics2ForConditionalGeneration, path, self.placement)
        self.device = input_device(self.model, self.placement)
        self.image_token_id = self.model.config.image_token_id
        self._check_processor_matches_model()
        self.eos_ids = stop_token_ids(self.model, self.tokenizer, self.format)

    def _check_processor_matches_model(self) -> None:
        image_id = self.tokenizer.convert_tokens_to_ids(self.format.image_token)
        if image_id != self.image_token_id:
            raise MedmimError(f"hf-idefics2: the tokenizer's {self.format.image_token} is id {image_id}, the model "
                              f"expects {self.image_token_id}; the processor does not belong to this model")
        latents = self.model.config.perceiver_config.resampler_n_latents
        if self.processor.image_seq_len != latents:
            raise MedmimError(f"hf-idefics2: the processor expands an image into {self.processor.image_seq_len} tokens, "
                              f"the model's perceiver makes {latents}; set image_seq_len={latents} in "
                              f"{self.path / 'processor_config.json'}")

    def fingerprint(self) -> dict[str, Any]:
        return checkpoint_fingerprint("hf-idefics2", self.path, self.lineage, format=self.format.tag,
                                      dtype=self.placement.dtype_name, max_images=self.max_images,
                                      image_splitting=self.crops > 1, expansion="mantis_idefics2_delta")

    # --- preparing one prompt --------------------------------------------------------------------
    def prepare_sample(self, sample: Sample) -> Prepared:
        """The rendered text, the images in prompt order and the record; raises MedmimError if refused."""
        check_image_count(sample, self.max_images, self.model_id)
        text = render_prompt(self.format, sample.prompt)
        prepared = prepared_prompt(sample, text, {self.format.image_token: len(sample.prompt.images)})
        if self.crops > 1 and sample.prompt.images:
            prepared[2].notes.append("each image split into 4 crops + the whole image (image_splitting=1)")
        return prepared

    def encode(self, texts: list[str], images: list[list[Any]]) -> Any:
        """Processor output for a left-padded batch (tensors on the model's device). Either every
        prompt has images or none has."""
        inputs = idefics2_inputs(self.processor, texts, images if any(images) else None,
                                 add_special_tokens=not self.format.bos_in_text)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.placement.dtype)
        return inputs.to(self.device)

    def _sizes(self, inputs: Any, row: int, n_images: int) -> list[tuple[int, int]]:
        """(width, height) of each image as the model saw it (the whole image when split)."""
        if not n_images:
            return []
        masks = inputs["pixel_attention_mask"][row]
        sizes = []
        for j in range(n_images):
            mask = masks[(j + 1) * self.crops - 1].bool()
            sizes.append((int(mask.any(dim=0).sum()), int(mask.any(dim=1).sum())))
        return sizes

    # --- running the model (blocking; called in a worker thread) ---------------------------------
    def next_token_logits(self, *samples: Sample) -> Any:
        """The logits of the first answer token, one row per sample, from one left-padded batch
        (float32 tensor on the CPU). For checks: image order, batching."""
        prepared = [self.prepare_sample(s) for s in samples]
        with self.torch.inference_mode():
            out = self.model(**self.encode([p[0] for p in prepared], [p[1] for p in prepared]))
        return out.logits[:, -1].float().cpu()

    def run(self, prepared: list[Prepared], settings: GenerationSettings) -> list[GenerationResult]:
        with_images = [p for p in prepared if p[1]]
        if with_images and len(with_images) < len(prepared):  # the processor takes all-or-none image lists
            text_only = [p for p in prepared if not p[1]]
            answered = dict(zip(map(id, with_images), self.run(with_images, settings)))
            answered.update(zip(map(id, text_only), self.run(text_only, settings)))
            return [answered[id(p)] for p in prepared]
        inputs = self.encode([p[0] for p in prepared], [p[1] for p in prepared])
        per_image = self.processor.image_seq_len * self.crops
        image_tokens = (inputs["input_ids"] == self.image_token_id).sum(dim=1).tolist()
        for row, (_, images, _) in enumerate(prepared):
            if image_tokens[row] != len(images) * per_image:
                raise MedmimError(f"{image_tokens[row]} image tokens for {len(images)} images x {per_image}")
        answers = generate_answers(self.torch, self.model, self.tokenizer, inputs, settings, self.eos_ids, self.format)
        results = []
        for row, ((_, images, record), (answer, tokens)) in enumerate(zip(prepared, answers, strict=True)):
            sent = record.model_copy(update={"image_sizes": self._sizes(inputs, row, len(images))})
            results.append(GenerationResult(text=answer, sent=sent, tokens=tokens))
        return results


def make_hf_idefics2(target: str | None, options: dict[str, str], context: AdapterContext) -> HFIdefics2Adapter:
    """The factory registered as ``hf-idefics2``. Raises MissingBackendError or MedmimError with the fix."""
    model_id, path = checked_target("hf-idefics2", target, options, check_hf_idefics2, INSTALL_HINT)
    return HFIdefics2Adapter(model_id, path, options)
