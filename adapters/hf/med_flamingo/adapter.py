"""The ``med-flamingo`` adapter: Med-Flamingo-9B run in-process by ``open_flamingo``.

Loading follows Med-Flamingo's ``scripts/demo.py``: ``open_flamingo.create_model_and_transforms``
with the CLIP ``ViT-L-14`` vision encoder, the local LLaMA-7B as language model and tokenizer and
``cross_attn_every_n_layers=4``, then the Med-Flamingo state dict loaded on top (non-strict, as the
checkpoint holds only the Flamingo weights; a checkpoint that fills neither the perceiver nor the
gated cross-attention layers is refused). Prompts come from :mod:`medmim_eval.adapters.hf.med_flamingo.prompt`; images go
through open_clip's transform and are stacked as ``vision_x`` of shape (B, T_img, 1, C, H, W).

Batches are left-padded; a row with fewer images than the longest row is padded with zero images
after its own, which no text token attends to (OpenFlamingo lets a token attend only to the image
of its chunk). Decoding is greedy unless ``settings.temperature`` > 0, ending an answer at
``<|endofchunk|>`` or the eos. Parts, options and installation: :mod:`medmim_eval.adapters.hf.med_flamingo.parts`.

The model does not run here (CLIP ViT-L-14 and LLaMA-7B weights); tests/parity checks the prompt,
its token ids, ``vision_x`` (open_clip's own transform, with torchvision fetched for the test) and
the generation call (open_flamingo 0.0.2's own ``generate`` over a tiny LLaMA) against Med-Flamingo's
``demo.py``.
"""
from __future__ import annotations

import importlib.metadata
import inspect
import os
import pickle
from pathlib import Path
from typing import Any, Callable

from medmim_eval.adapter import AdapterContext, GenerationResult, GenerationSettings
from medmim_eval.adapters.hf.common import (Prepared, check_image_count, file_sha256, prepared_prompt)
from medmim_eval.adapters.hf.med_flamingo.parts import (CLIP_ARCH, CROSS_ATTN_EVERY_N_LAYERS, INSTALL_HINT,
                                                        MedFlamingoParts, check_med_flamingo, missing_backend,
                                                        resolve_parts)
from medmim_eval.adapters.hf.med_flamingo.prompt import END_OF_CHUNK, MEDIA_TOKEN, SYSTEM_PROMPT, render_med_flamingo
from medmim_eval.adapters.hf.skeleton import InProcessAdapter
from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.schema import Sample, content_hash

DEFAULT_BATCH = 1
DEFAULT_MAX_IMAGES = 3


def encode_prompts(tokenizer: Any, texts: list[str]) -> Any:
    """The texts tokenized as Med-Flamingo's ``FlamingoProcessor.encode_text`` tokenizes its prompt
    (the tokenizer's BOS added, special tokens kept whole), a batch left-padded."""
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True)


def stack_vision_x(torch: Any, groups: list[list[Any]], preprocess: Callable[[Any], Any]) -> Any:
    """``vision_x`` for a batch: (B, T_img, 1, C, H, W), row ``b`` holding its images in order and
    zeros after them (T_img = the most images in a row). ``preprocess`` maps a PIL image to a (C, H, W)
    tensor (open_clip's transform)."""
    rows = [[preprocess(image) for image in group] for group in groups]
    shapes = {tuple(t.shape) for row in rows for t in row}
    if not shapes:
        raise MedmimError("med-flamingo: no image in the batch; Med-Flamingo prompts need at least one image")
    if len(shapes) > 1 or len(next(iter(shapes))) != 3:
        raise MedmimError(f"med-flamingo: the image transform gave tensors of shapes {sorted(shapes)}; "
                          f"expected one (C, H, W) shape for every image")
    channels, height, width = next(iter(shapes))
    vision_x = torch.zeros(len(rows), max(len(row) for row in rows), 1, channels, height, width)
    for b, row in enumerate(rows):
        for t, tensor in enumerate(row):
            vision_x[b, t, 0] = tensor
    return vision_x


def load_flamingo_weights(torch: Any, model: Any, checkpoint: Path) -> dict[str, int]:
    """Load the Med-Flamingo state dict into ``model`` (non-strict); counts of what was loaded and left.

    Raises:
        MedmimError: the checkpoint fills neither the perceiver nor the gated cross-attention layers.
    """
    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
        raise MedmimError(f"med-flamingo: {checkpoint} is not a state dict torch.load(weights_only=True) reads "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                          f"use Med-Flamingo's model.pt") from None
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):
        state = state["model_state_dict"]
    report = model.load_state_dict(state, strict=False)
    loaded = [k for k in state if k not in set(report.unexpected_keys)]
    if not any(k.startswith("perceiver.") for k in loaded) or not any("gated_cross_attn" in k for k in loaded):
        example = ", ".join(list(report.unexpected_keys)[:3]) or "none"
        raise MedmimError(f"med-flamingo: {checkpoint} has no perceiver and gated cross-attention weights that fit "
                          f"OpenFlamingo {CLIP_ARCH} + LLaMA-7B with cross_attn_every_n_layers="
                          f"{CROSS_ATTN_EVERY_N_LAYERS} (unexpected keys, e.g.: {example}); "
                          f"use Med-Flamingo's model.pt")
    return {"loaded": len(loaded), "unexpected": len(report.unexpected_keys),
            "left_from_base_models": len(report.missing_keys)}


def decoding_kwargs(signature: inspect.Signature, settings: GenerationSettings, stop_ids: list[int],
                    pad_id: int | None) -> dict[str, Any]:
    """The decoding arguments a ``Flamingo.generate`` of this ``signature`` accepts: open_flamingo 2.x
    passes any generate keyword through; 0.0.2 takes a fixed list and ends answers at <|endofchunk|>."""
    wanted: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "num_beams": 1, "do_sample": False,
                              "eos_token_id": stop_ids, "pad_token_id": pad_id}
    if settings.temperature > 0:
        wanted.update(do_sample=True, temperature=settings.temperature, top_k=0, top_p=1.0)
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return wanted
    return {k: v for k, v in wanted.items() if k in parameters}


class MedFlamingoAdapter(InProcessAdapter):
    """The loaded Med-Flamingo (``ModelAdapter``); generation runs in a worker thread."""

    def __init__(self, model_id: str, target: Path, parts: MedFlamingoParts, options: dict[str, str]) -> None:
        try:
            import torch
            from open_flamingo import create_model_and_transforms
        except ImportError as exc:
            raise MissingBackendError(f"med-flamingo: {exc}; {INSTALL_HINT}") from None
        self._setup(torch, model_id, target, options, batch=DEFAULT_BATCH, max_images=DEFAULT_MAX_IMAGES,
                    needs_gpu=True, lineage=target.is_dir())
        self.parts = parts
        try:
            model, self.image_processor, self.tokenizer = create_model_and_transforms(
                clip_vision_encoder_path=CLIP_ARCH, clip_vision_encoder_pretrained=parts.clip,
                lang_encoder_path=str(parts.llama), tokenizer_path=str(parts.llama),
                cross_attn_every_n_layers=CROSS_ATTN_EVERY_N_LAYERS)
        except (OSError, RuntimeError, ValueError) as exc:
            raise MedmimError(f"med-flamingo: building OpenFlamingo from {parts.llama} and CLIP {CLIP_ARCH} "
                              f"({parts.clip}) failed: {exc}; offline, pass clip=PATH to the OpenAI {CLIP_ARCH} "
                              f"weights file") from None
        self.load_report = load_flamingo_weights(torch, model, parts.checkpoint)
        self.model = model.to(self.placement.device, dtype=self.placement.dtype).eval()
        self.tokenizer.padding_side = "left"
        self.stop_ids = [i for i in (self.tokenizer.convert_tokens_to_ids(END_OF_CHUNK), self.tokenizer.eos_token_id)
                         if isinstance(i, int)]

    def fingerprint(self) -> dict[str, Any]:
        llama = self.parts.llama
        weights = {p.name: file_sha256(p) for pattern in ("*.safetensors", "pytorch_model*.bin")
                   for p in sorted(llama.glob(pattern))}
        clip = self.parts.clip
        out: dict[str, Any] = {
            "adapter": "med-flamingo", "llama": str(llama), "llama_config_sha256": file_sha256(llama / "config.json"),
            "llama_weights": weights, "checkpoint": str(self.parts.checkpoint),
            "checkpoint_sha256": file_sha256(self.parts.checkpoint), "clip": clip,
            "clip_sha256": file_sha256(Path(clip)) if Path(clip).is_file() else None,
            "cross_attn_every_n_layers": CROSS_ATTN_EVERY_N_LAYERS, "load": self.load_report,
            "open_flamingo": importlib.metadata.version("open-flamingo"),
            "system_prompt_sha256": content_hash(SYSTEM_PROMPT), "dtype": self.placement.dtype_name,
            "max_images": self.max_images}
        if self.lineage is not None:
            out["lineage"] = self.lineage
        return out

    def prepare_sample(self, sample: Sample) -> Prepared:
        """The rendered text, the images in prompt order and the record; raises MedmimError if refused."""
        check_image_count(sample, self.max_images, self.model_id)
        n_images = len(sample.prompt.images)
        text = render_med_flamingo(sample.prompt)
        return prepared_prompt(sample, text, {MEDIA_TOKEN: n_images, END_OF_CHUNK: max(n_images - 1, 0)})

    def run(self, prepared: list[Prepared], settings: GenerationSettings) -> list[GenerationResult]:
        torch = self.torch
        vision_x = stack_vision_x(torch, [p[1] for p in prepared], self.image_processor)
        vision_x = vision_x.to(self.placement.device, dtype=self.placement.dtype)
        tokens = encode_prompts(self.tokenizer, [p[0] for p in prepared])
        lang_x, mask = tokens["input_ids"].to(self.placement.device), tokens["attention_mask"].to(self.placement.device)
        decoding = decoding_kwargs(inspect.signature(self.model.generate), settings, self.stop_ids,
                                   self.tokenizer.pad_token_id)
        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            output = self.model.generate(vision_x=vision_x, lang_x=lang_x, attention_mask=mask, **decoding)
        size = (int(vision_x.shape[-1]), int(vision_x.shape[-2]))
        results = []
        for row, (text, images, record) in enumerate(prepared):
            new = output[row, lang_x.shape[1]:].tolist()
            ends = [i for i, t in enumerate(new) if t in self.stop_ids]
            new = new[: ends[0]] if ends else new
            answer = self.tokenizer.decode(new, skip_special_tokens=True).split(END_OF_CHUNK)[0].strip()
            sent = record.model_copy(update={"image_sizes": [size] * len(images)})
            results.append(GenerationResult(text=answer, sent=sent, tokens={
                "prompt_tokens": int(mask[row].sum()), "completion_tokens": len(new)}))
        return results


def make_med_flamingo(target: str | None, options: dict[str, str], context: AdapterContext) -> MedFlamingoAdapter:
    """The factory registered as ``med-flamingo``. Raises MissingBackendError or MedmimError with the fix."""
    reason = check_med_flamingo(target, options)
    if reason:
        raise (MissingBackendError if missing_backend() else MedmimError)(reason)
    assert target is not None
    folder = Path(os.path.expanduser(target)).resolve()
    return MedFlamingoAdapter(options.get("label") or f"med-flamingo:{target}", folder,
                              resolve_parts(str(folder), options), options)
