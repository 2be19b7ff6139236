"""The ``package`` route of ``hf-deepseek-vl``: an original DeepSeek-VL checkpoint through the
``deepseek_vl`` package (github.com/deepseek-ai/DeepSeek-VL), as its ``inference.py`` runs it.

``VLChatProcessor.process_one(prompt=...)`` tokenizes the rendered text (with BOS) and expands each
``<image_placeholder>`` into the image's embedding slots; ``batchify`` left-pads the batch and
masks the images of each row (rows may hold different image counts);
``MultiModalityCausalLM.prepare_inputs_embeds`` places the image embeddings and
``language_model.generate(inputs_embeds=...)`` decodes, the end-of-sentence token ending an answer.

The package is not on PyPI and was written for transformers 4: under transformers 5 its
``modeling_vlm`` does not import (a config class with a mutable default), which is reported as a
missing backend with the fix. Its ``VLChatProcessor`` is checked against this route in
``tests/parity/test_deepseek_vl.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medmim_eval.adapter import GenerationSettings
from medmim_eval.adapters.hf.common import Placement
from medmim_eval.adapters.hf.deepseek_vl.plugin import PACKAGE_HINT
from medmim_eval.adapters.hf.deepseek_vl.prompt import IMAGE_TAG, deepseek_vl_format
from medmim_eval.errors import MedmimError, MissingBackendError


class PackageDeepseekVL:
    """The original ``VLChatProcessor`` and ``MultiModalityCausalLM`` on one device."""

    route = "package"

    def __init__(self, torch: Any, path: Path, where: Placement) -> None:
        try:
            from deepseek_vl.models import MultiModalityCausalLM, VLChatProcessor
        except ImportError as exc:
            raise MissingBackendError(f"hf-deepseek-vl mode=package: the deepseek_vl package does not import "
                                      f"({exc}); {PACKAGE_HINT}") from None
        except (TypeError, ValueError) as exc:  # its config classes do not define under transformers 5
            import transformers

            raise MissingBackendError(
                f"hf-deepseek-vl mode=package: the deepseek_vl package does not import with transformers "
                f"{transformers.__version__} ({type(exc).__name__}: {exc}); it was written for transformers 4 "
                f"(pip install 'transformers<5' in its own environment), or convert the checkpoint and use "
                f"mode=native") from None
        self.torch, self.where = torch, where
        self.processor = VLChatProcessor.from_pretrained(str(path))
        self.tokenizer = self.processor.tokenizer
        model = MultiModalityCausalLM.from_pretrained(str(path), torch_dtype=where.dtype)
        self.model = model.to(where.device).eval()
        self.image_token = getattr(self.processor, "image_tag", IMAGE_TAG)
        self.format = deepseek_vl_format(self.image_token)
        self.stop_ids = [self.tokenizer.eos_token_id]
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def encode(self, texts: list[str], images: list[list[Any]]) -> Any:
        """The batched processor output (left-padded; pixel values in the model's dtype, on its device)."""
        if any(not group for group in images):
            raise MedmimError("hf-deepseek-vl mode=package: a prompt without images cannot be batched by "
                              "VLChatProcessor; use mode=native")
        rows = [self.processor.process_one(prompt=text, images=group)
                for text, group in zip(texts, images, strict=True)]
        return self.processor.batchify(rows).to(self.where.device, dtype=self.where.dtype)

    def _embeds(self, batch: Any) -> Any:
        return self.model.prepare_inputs_embeds(input_ids=batch.input_ids, pixel_values=batch.pixel_values,
                                                images_seq_mask=batch.images_seq_mask,
                                                images_emb_mask=batch.images_emb_mask)

    def answer(self, texts: list[str], images: list[list[Any]], settings: GenerationSettings
               ) -> tuple[list[tuple[str, dict[str, int]]], list[tuple[int, int]], list[str]]:
        """(answer, token counts) per row, the size of each image as the encoder saw it, and notes."""
        torch = self.torch
        batch = self.encode(texts, images)
        sampling: dict[str, Any] = {"do_sample": False}
        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
            sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": 1.0, "top_k": 0}
        with torch.inference_mode():
            output = self.model.language_model.generate(
                inputs_embeds=self._embeds(batch), attention_mask=batch.attention_mask, pad_token_id=self.pad_id,
                bos_token_id=self.tokenizer.bos_token_id, eos_token_id=self.stop_ids,
                max_new_tokens=settings.max_new_tokens, use_cache=True, **sampling)
        answers = []
        for row in range(output.shape[0]):
            new = output[row].tolist()  # generate() from embeddings returns only the new tokens
            ends = [i for i, t in enumerate(new) if t in self.stop_ids]
            new = new[: ends[0]] if ends else new
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            for stop in self.format.stop_strings:
                text = text.split(stop)[0]
            prompt_tokens = int(batch.attention_mask[row].sum())
            answers.append((text.strip(), {"prompt_tokens": prompt_tokens, "completion_tokens": len(new)}))
        pixels = batch.pixel_values
        return answers, [(int(pixels.shape[-1]), int(pixels.shape[-2]))], []

    def logits(self, texts: list[str], images: list[list[Any]]) -> Any:
        batch = self.encode(texts, images)
        with self.torch.inference_mode():
            out = self.model.language_model(inputs_embeds=self._embeds(batch), attention_mask=batch.attention_mask)
        return out.logits[:, -1].float().cpu()
