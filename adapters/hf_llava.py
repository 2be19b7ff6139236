"""The ``hf-llava:`` adapter: a local LLaVA-architecture checkpoint run in-process by transformers.

``LlavaForConditionalGeneration`` + the checkpoint's ``LlavaProcessor``. Each prompt is rendered by
:mod:`medmim_eval.prompt_formats` (the same strings training recipes use); the rendered text holds
exactly one image token per image at the image's position, and the processor expands each into
the image's patch tokens, so images reach the model in prompt order. Batches are left-padded and
may mix image counts. Decoding is greedy unless ``settings.temperature`` > 0, stopping at the
tokenizer's eos and the format's stop tokens (``<|eot_id|>`` for Llama-3). ``llava_med_mistral``
pads each image to a square with the processor's mean colour (LLaVA ``image_aspect_ratio: pad``).
A prompt with more than ``max_images`` images, or whose text carries stray image tokens, is
answered with an error: nothing is dropped or truncated. Options: see :mod:`.hf_plugin`.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

from medmim_eval.adapter import AdapterContext, Capabilities, GenerationRequest, GenerationResult, GenerationSettings
from medmim_eval.adapters.hf_plugin import INSTALL_HINT, check_hf_llava, default_format
from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.prompt_formats import PromptFormat, get_format, render_prompt
from medmim_eval.schema import PromptRecord, Sample, content_hash

DEFAULT_BATCH = 8
DEFAULT_MAX_IMAGES = 3
_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) for the life of the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def pad_to_square(image: Any, colour: tuple[int, ...]) -> Any:
    """``image`` centred on a square canvas of ``colour`` (LLaVA's ``expand2square``)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class HFLlavaAdapter:
    """The loaded model and processor (``ModelAdapter``); generation runs in a worker thread."""

    def __init__(self, model_id: str, path: Path, options: dict[str, str]) -> None:
        try:
            import torch
            from transformers import AutoProcessor, LlavaForConditionalGeneration
        except ImportError:
            raise MissingBackendError(INSTALL_HINT) from None
        self.torch = torch
        self.model_id, self.path = model_id, path
        self.format: PromptFormat = get_format(options.get("format") or default_format(path))
        self.device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = (options.get("dtype") or ("bf16" if self.device.startswith("cuda") else "fp32")).lower()
        self.dtype = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                      "float16": torch.float16}.get(dtype, torch.float32)
        self.max_images = int(options.get("max_images") or DEFAULT_MAX_IMAGES)
        batch = int(options.get("batch") or DEFAULT_BATCH)
        self.capabilities = Capabilities(max_images=self.max_images, interleaved=True, batch_size=batch,
                                         max_concurrency=1, needs_gpu=False)
        self.processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        self.image_processor = getattr(self.processor, "image_processor", None)
        if self.tokenizer is None or self.image_processor is None:
            raise MedmimError(f"hf-llava: {path} has no image processor and tokenizer (AutoProcessor gave "
                              f"{type(self.processor).__name__})")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = LlavaForConditionalGeneration.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        image_id = self.tokenizer.convert_tokens_to_ids(self.format.image_token)
        if image_id != self.model.config.image_token_id:
            raise MedmimError(f"hf-llava: the tokenizer's {self.format.image_token} is id {image_id}, the model "
                              f"expects {self.model.config.image_token_id}")
        self.eos_ids = self._eos_ids()
        mean = getattr(self.image_processor, "image_mean", None) or [0.5, 0.5, 0.5]
        self.pad_colour = tuple(int(round(float(m) * 255)) for m in mean)

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        configured = self.model.generation_config.eos_token_id
        for value in [*(configured if isinstance(configured, list) else [configured]), self.tokenizer.eos_token_id]:
            if isinstance(value, int) and value not in ids:
                ids.append(value)
        vocab = self.tokenizer.get_vocab()
        for token in self.format.stop_strings:
            if token in vocab and vocab[token] not in ids:
                ids.append(vocab[token])
        return ids

    def fingerprint(self) -> dict[str, Any]:
        weights = {p.name: file_sha256(p) for p in sorted(self.path.glob("*.safetensors"))}
        return {"adapter": "hf-llava", "path": str(self.path), "format": self.format.name,
                "dtype": str(self.dtype).removeprefix("torch."), "max_images": self.max_images,
                "config_sha256": file_sha256(self.path / "config.json"), "weights": weights}

    # --- preparing one prompt --------------------------------------------------------------------
    def _load_image(self, path: str) -> tuple[Any, str | None]:
        from PIL import Image

        from medmim_eval.adapters.image_payload import to_8bit

        with Image.open(path) as image:
            image.load()
            pixels, note = to_8bit(image)
            pixels = pixels.convert("RGB")
        if self.format.name == "llava_med_mistral" and pixels.width != pixels.height:
            pixels = pad_to_square(pixels, self.pad_colour)
            note = ", ".join(filter(None, [note, f"padded to {pixels.width}x{pixels.height} with the mean colour"]))
        return pixels, note

    def prepare_sample(self, sample: Sample) -> tuple[str, list[Any], PromptRecord]:
        """The rendered text, the images in prompt order and the record; raises MedmimError if refused."""
        images = sample.prompt.images
        if len(images) > self.max_images:
            raise MedmimError(f"{len(images)} images, more than max_images={self.max_images}; nothing was sent "
                              f"(images are never dropped)")
        text = render_prompt(self.format, sample.prompt)
        if text.count(self.format.image_token) != len(images):
            raise MedmimError(f"the prompt text itself contains {self.format.image_token!r}; nothing was sent")
        loaded, notes = [], []
        for n, part in enumerate(images, 1):
            pixels, note = self._load_image(part.path)
            loaded.append(pixels)
            if note:
                notes.append(f"image {n}: {note}")
        record = PromptRecord(n_images=len(images), image_order=[p.index for p in images],
                              rendered_prompt_sha256=content_hash(text), notes=notes)
        return text, loaded, record

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

    def run(self, prepared: list[tuple[str, list[Any], PromptRecord]],
            settings: GenerationSettings) -> list[GenerationResult]:
        torch = self.torch
        inputs = self.encode([p[0] for p in prepared], [p[1] for p in prepared])
        image_tokens = (inputs["input_ids"] == self.model.config.image_token_id).sum(dim=1).tolist()
        sampling: dict[str, Any] = {"do_sample": False}
        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
            sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": 1.0, "top_k": 0}
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=settings.max_new_tokens, eos_token_id=self.eos_ids,
                                         pad_token_id=self.tokenizer.pad_token_id, **sampling)
        start = inputs["input_ids"].shape[1]
        sizes = [(int(inputs["pixel_values"].shape[-1]), int(inputs["pixel_values"].shape[-2]))] \
            if "pixel_values" in inputs else []
        results = []
        for row, (text, images, record) in enumerate(prepared):
            new = output[row, start:].tolist()
            ends = [i for i, t in enumerate(new) if t in self.eos_ids]
            new = new[: ends[0]] if ends else new
            answer = self.tokenizer.decode(new, skip_special_tokens=True)
            for stop in self.format.stop_strings:
                answer = answer.split(stop)[0]
            sent = record.model_copy(update={"image_sizes": sizes * len(images)})
            if images and image_tokens[row] % len(images):
                raise MedmimError(f"{image_tokens[row]} image tokens for {len(images)} images")
            prompt_tokens = int(inputs["attention_mask"][row].sum())
            results.append(GenerationResult(text=answer.strip(), sent=sent,
                                            tokens={"prompt_tokens": prompt_tokens, "completion_tokens": len(new)}))
        return results

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        """One result per request, in order; a refused or unreadable sample comes back as its exception."""
        out: list[GenerationResult | BaseException | None] = [None] * len(requests)
        groups: dict[GenerationSettings, list[tuple[int, tuple[str, list[Any], PromptRecord]]]] = {}
        for i, request in enumerate(requests):
            try:
                prepared = await asyncio.to_thread(self.prepare_sample, request.sample)
            except (MedmimError, OSError, ValueError) as exc:
                out[i] = exc
                continue
            groups.setdefault(request.settings, []).append((i, prepared))
        for settings, members in groups.items():
            results = await asyncio.to_thread(self.run, [m[1] for m in members], settings)
            for (i, _), result in zip(members, results, strict=True):
                out[i] = result
        return [r if r is not None else RuntimeError("no answer") for r in out]

    async def aclose(self) -> None:
        self.model = None  # type: ignore[assignment]


def make_hf_llava(target: str | None, options: dict[str, str], context: AdapterContext) -> HFLlavaAdapter:
    """The factory registered as ``hf-llava``. Raises MissingBackendError or MedmimError with the fix."""
    reason = check_hf_llava(target, options)
    if reason:
        raise (MissingBackendError if reason == INSTALL_HINT else MedmimError)(reason)
    assert target is not None
    path = Path(os.path.expanduser(target)).resolve()
    return HFLlavaAdapter(options.get("label") or f"hf-llava:{target}", path, options)
