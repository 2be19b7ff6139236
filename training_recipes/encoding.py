"""Turning a training example into model inputs with labels on the response tokens only (Eq. 1).

The prompt is rendered by :func:`medmim_eval.prompt_formats.render_training` and encoded by the
checkpoint's own processor exactly as the in-process adapters encode an evaluation prompt (same
text, same images, same preprocessing, same special-token rule), so the model trains on the very
token sequence it is evaluated on. The response (the format's response prefix, the assistant turn
and the end marker) is tokenized as the continuation of the prompt's last plain-text stretch (the
text after its last special token) and appended; its tokens are the only labels, every prompt and
image token is ``-100``. Tokenizing it as a continuation gives the ids of the whole text as the
authors' training code tokenizes it (a sentencepiece tokenizer would otherwise put a word-start
``▁`` before a response tokenized alone); where a BPE merge would straddle the prompt and the
response, the response is tokenized alone instead, so the prompt ids always stay exactly the
evaluation ids.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from medmim_eval.errors import DataError
from medmim_eval.images import load_llava_padded, load_rgb
from medmim_eval.model_inputs import idefics2_inputs
from medmim_eval.prompt_formats import PromptFormat, render_training
from medmim_eval.training_recipes.data import TrainExample

IGNORE = -100
FAMILIES = ("llava", "idefics2")


def load_image(path: str, fmt: PromptFormat, image_processor: Any) -> Any:
    """One image as the in-process adapters load it: 8-bit RGB, padded to a square with the
    processor's mean colour for ``llava_med_mistral``."""
    if fmt.name == "llava_med_mistral":
        return load_llava_padded(path, getattr(image_processor, "image_mean", None))[0]
    return load_rgb(path)[0]


class ExampleEncoder:
    """``encoder(example)`` -> ``input_ids``, ``attention_mask``, ``labels`` (1-D) and pixel tensors."""

    def __init__(self, processor: Any, fmt: PromptFormat, family: str, max_length: int = 0) -> None:
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}")
        self.processor, self.fmt, self.family = processor, fmt, family
        self.tokenizer = processor.tokenizer
        self.max_length = max_length

    def __reduce__(self) -> tuple[Any, ...]:
        # To a worker process (EncodedDataset.encode_all): the prompt format travels by its name, as its
        # image placeholder is a function.
        return (_encoder_from, (self.processor, self.fmt.name, self.family, self.max_length))

    def encode_prompt(self, text: str, images: list[Any]) -> Any:
        """The processor output for one prompt (what evaluation feeds the model before generating)."""
        special = not self.fmt.bos_in_text
        if self.family == "llava":
            return self.processor(text=[text], images=images or None, return_tensors="pt", add_special_tokens=special)
        return idefics2_inputs(self.processor, [text], [images] if images else None, add_special_tokens=special,
                               padding=False)

    def continuation_ids(self, prompt: str, response: str) -> list[int]:
        """The ids ``response`` gets when tokenized right after ``prompt`` (see the module docstring)."""
        def ids(text: str) -> list[int]:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        cut = max((prompt.rfind(t) + len(t) for t in self.tokenizer.all_special_tokens if t and t in prompt), default=0)
        tail = prompt[cut:]
        if not tail:
            return ids(response)
        head, both = ids(tail), ids(tail + response)
        return both[len(head):] if both[:len(head)] == head else ids(response)

    def __call__(self, example: TrainExample) -> dict[str, Any]:
        import torch

        sample = example.sample
        rendered = render_training(self.fmt, sample.prompt, example.response)
        images = [load_image(p.path, self.fmt, self.processor.image_processor) for p in sample.prompt.images]
        try:
            prompt = self.encode_prompt(rendered.prompt, images)
        except ValueError as exc:
            raise DataError(f"{example.label}: the processor refused the prompt ({exc})") from None
        response_ids = self.continuation_ids(rendered.prompt, rendered.response)
        prompt_ids = prompt["input_ids"][0]
        input_ids = torch.cat([prompt_ids, torch.tensor(response_ids, dtype=prompt_ids.dtype)])
        if self.max_length and len(input_ids) > self.max_length:
            raise DataError(f"{example.label}: {len(input_ids)} tokens, more than max_length={self.max_length}; "
                            "raise max_length or remove the item (nothing is truncated)")
        labels = torch.full_like(input_ids, IGNORE)
        labels[len(prompt_ids):] = input_ids[len(prompt_ids):]
        out = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
        for key in ("pixel_values", "pixel_attention_mask", "image_sizes"):
            if key in prompt:
                out[key] = prompt[key] if self.family == "llava" else prompt[key][0]
        return out


def _encoder_from(processor: Any, format_name: str, family: str, max_length: int) -> ExampleEncoder:
    from medmim_eval.prompt_formats import get_format

    return ExampleEncoder(processor, get_format(format_name), family, max_length)


class Collator:
    """Left-pads a batch, with position ids that start at 0 on each row's first real token (so a
    row's positions are what they would be alone); LLaVA images are concatenated, Idefics2 images
    padded with empty ones.

    Left padding ends every row at the same column, so the response tokens of a batch sit in its
    last columns and the trainer computes logits for those columns only
    (:meth:`medmim_eval.training_recipes.trainer.MedmimTrainer.compute_loss`).
    """

    def __init__(self, pad_token_id: int, family: str) -> None:
        self.pad_token_id, self.family = pad_token_id, family

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        def left_pad(key: str, value: int) -> Any:
            flipped = [r[key].flip(0) for r in rows]
            return pad_sequence(flipped, batch_first=True, padding_value=value).flip(1)

        mask = left_pad("attention_mask", 0)
        batch = {
            "input_ids": left_pad("input_ids", self.pad_token_id),
            "attention_mask": mask,
            "labels": left_pad("labels", IGNORE),
            "position_ids": (mask.long().cumsum(1) - 1).clamp(min=0),
        }
        with_images = [r for r in rows if "pixel_values" in r]
        if not with_images:
            return batch
        if self.family == "llava":
            batch["pixel_values"] = torch.cat([r["pixel_values"] for r in with_images])
            if all("image_sizes" in r for r in with_images):
                batch["image_sizes"] = torch.cat([r["image_sizes"] for r in with_images])
            return batch
        # Idefics2 pads images bottom-right to the batch's largest size (pixel_attention_mask marks the
        # real pixels) and skips all-zero images, so zero padding adds nothing the model sees.
        most = max(r["pixel_values"].shape[0] for r in with_images)
        height = max(r["pixel_values"].shape[-2] for r in with_images)
        width = max(r["pixel_values"].shape[-1] for r in with_images)
        pixels, masks = [], []
        for r in rows:
            values = r["pixel_values"]
            padded = values.new_zeros((most, values.shape[1], height, width))
            padded[: values.shape[0], :, : values.shape[-2], : values.shape[-1]] = values
            pixels.append(padded)
            mask = r.get("pixel_attention_mask")
            if mask is None:
                mask = values.new_ones((values.shape[0], values.shape[-2], values.shape[-1]), dtype=torch.bool)
            full = mask.new_zeros((most, height, width))
            full[: mask.shape[0], : mask.shape[-2], : mask.shape[-1]] = mask
            masks.append(full)
        batch["pixel_values"] = torch.stack(pixels)
        batch["pixel_attention_mask"] = torch.stack(masks)
        return batch


class EncodedDataset:
    """A map-style dataset encoding each example when it is read (images are never all in memory),
    or, with ``cache=True``, once: the encoded example is kept for the next epochs."""

    def __init__(self, examples: list[TrainExample], encoder: ExampleEncoder, cache: bool = False,
                 rows: dict[int, dict[str, Any]] | None = None) -> None:
        self.examples, self.encoder = examples, encoder
        self._cache: dict[int, dict[str, Any]] | None = (rows if rows is not None else {}) if cache else None

    def cached_rows(self) -> dict[int, dict[str, Any]]:
        """The rows encoded so far (empty without ``cache=True``)."""
        return self._cache if self._cache is not None else {}

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._cache is None:
            return self.encoder(self.examples[index])
        if index not in self._cache:
            self._cache[index] = self.encoder(self.examples[index])
        return self._cache[index]

    def encode_all(self, workers: int, chunk: int = 96) -> None:
        """Encode every example not yet cached, now, in ``workers`` processes (``cache=True`` only).

        Encoding is Python and image work the model's threads do not share; done lazily it stalls
        every step of the first epoch. Here the examples go to ``workers`` spawned processes in
        chunks (each holds a copy of the encoder), and the rows come back as NumPy arrays (plain
        pickles: no shared-memory handle per tensor) that become tensors again without a copy. The
        rows are the ones the lazy path gives. A bad example raises its ``DataError`` here, before
        the first step."""
        if self._cache is None:
            raise ValueError("encode_all needs cache=True")
        todo = [i for i in range(len(self.examples)) if i not in self._cache]
        if not todo:
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import torch

        chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
        # spawn: the trainer's process holds torch threads a forked child would inherit half-locked.
        with ProcessPoolExecutor(max(1, min(workers, len(chunks))), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(self.encoder,)) as pool:
            for indexes, rows in zip(chunks, pool.map(_encode_chunk, [[self.examples[i] for i in c] for c in chunks])):
                for index, row in zip(indexes, rows):
                    self._cache[index] = {key: torch.from_numpy(value) for key, value in row.items()}


_WORKER_ENCODER: ExampleEncoder | None = None


def _start_worker(encoder: ExampleEncoder) -> None:
    global _WORKER_ENCODER
    import torch

    torch.set_num_threads(1)
    _WORKER_ENCODER = encoder


def _encode_chunk(examples: list[TrainExample]) -> list[dict[str, Any]]:
    assert _WORKER_ENCODER is not None
    return [{key: value.numpy() for key, value in _WORKER_ENCODER(example).items()} for example in examples]


def encoding_key(base: Path, family: str, format_name: str, max_length: int, files: list[Any],
                 ablation: dict[str, Any]) -> str:
    """What the encoded rows depend on: every file of the starting checkpoint except its weights and
    the ``medmim_*`` records (so: tokenizer, processor and configuration files), the format, family
    and length limit, and the data files with their hashes and the ablation that chose the examples.
    Two checkpoints built with different seeds but the same tokenizer and processor give the same key."""
    from medmim_eval.weights import WEIGHT_SUFFIXES

    digest = hashlib.sha256()
    inputs = (p for p in Path(base).iterdir()
              if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith("medmim_"))
    for path in sorted(inputs):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps([family, format_name, max_length, files, ablation], sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass
class EncodedRows:
    """The rows an :class:`EncodedDataset` encoded, and the :func:`encoding_key` they were encoded under."""
    key: str
    rows: dict[int, dict[str, Any]]


_OFFERED: contextvars.ContextVar[EncodedRows | None] = contextvars.ContextVar("medmim_encoded_rows", default=None)


@contextlib.contextmanager
def offering(encoded: EncodedRows | None) -> Iterator[None]:
    """Within the block, a dataset whose key matches takes these rows instead of encoding again (a
    recipe starting a stopped run over on the same data and processor)."""
    token = _OFFERED.set(encoded)
    try:
        yield
    finally:
        _OFFERED.reset(token)


def offered_rows(key: str) -> dict[int, dict[str, Any]] | None:
    """The rows :func:`offering` holds for ``key``, or None."""
    encoded = _OFFERED.get()
    return encoded.rows if encoded is not None and encoded.key == key else None
