"""What the in-process transformers adapters (``hf-llava``, ``hf-idefics2``, ``hf-internvl``,
``hf-deepseek-vl``, ``med-flamingo``) share.

Placement (device, dtype, ``device_map``), loading, the checkpoint fingerprint, preparing one
rendered prompt with its images (:func:`prepared_prompt`), stop tokens, greedy/sampled decoding of
a left-padded batch, and the request loop that hands refused samples back as their exceptions.
Imports torch only inside functions that need it.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from medmim_eval.adapter import GenerationRequest, GenerationResult, GenerationSettings
from medmim_eval.errors import MedmimError, MissingBackendError, TooManyImagesError
from medmim_eval.images import load_llava_padded, load_rgb, pad_to_square  # noqa: F401  (moved to the core)
from medmim_eval.model_inputs import idefics2_inputs  # noqa: F401  (moved to the core)
from medmim_eval.prompt_formats import PromptFormat
from medmim_eval.schema import PromptRecord, Sample, content_hash

LINEAGE_FILE = "medmim_lineage.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "chat_template.jinja", "generation_config.json")
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}
_HASHES: dict[tuple[str, int, int], str] = {}
Prepared = tuple[str, list[Any], PromptRecord]


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


# --- placement and loading ---------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """Where the model goes: ``device`` (inputs too) and ``dtype``, or ``device_map`` for accelerate
    to spread the layers over the GPUs of this process (inputs then go to the first layer's device)."""

    device: str
    dtype: Any
    device_map: str | None = None

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def default_device(torch: Any) -> str:
    """``cuda:$LOCAL_RANK`` under ``accelerate launch``/torchrun, ``cuda`` on a GPU host, else ``cpu``."""
    if not torch.cuda.is_available():
        return "cpu"
    rank = os.environ.get("LOCAL_RANK", "")
    return f"cuda:{int(rank)}" if rank.isdigit() else "cuda"


def placement(torch: Any, options: dict[str, str]) -> Placement:
    """The placement the options ask for (validated beforehand by ``hf.plugin.option_problem``):
    bf16 on a GPU, fp32 on the CPU unless ``dtype=`` says otherwise."""
    device_map = options.get("device_map") or None
    device = options.get("device") or default_device(torch)
    if device_map and not options.get("device"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    name = (options.get("dtype") or ("bf16" if device.startswith("cuda") else "fp32")).lower()
    return Placement(device=device, dtype=getattr(torch, DTYPES[name]), device_map=device_map)


def load_model(model_class: Any, path: Path, where: Placement) -> Any:
    """``model_class.from_pretrained(path)`` in ``where``'s dtype, on its device or device map, in eval mode."""
    if where.device_map:
        model = model_class.from_pretrained(path, dtype=where.dtype, device_map=where.device_map)
    else:
        model = model_class.from_pretrained(path, dtype=where.dtype).to(where.device)
    return model.eval()


def input_device(model: Any, where: Placement) -> Any:
    """The device the inputs go to: the model's first parameters under a device map."""
    return model.device if where.device_map else where.device


# --- identity ----------------------------------------------------------------------------------
def read_lineage(folder: Path) -> dict[str, Any] | None:
    """The parsed ``medmim_lineage.json`` of a checkpoint folder (written by the training recipes), or None.

    Raises:
        MedmimError: the file exists but is not a JSON object.
    """
    path = folder / LINEAGE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedmimError(f"{path}: not readable JSON ({exc}); restore the file the training recipe wrote "
                          f"or delete it") from None
    if not isinstance(data, dict):
        raise MedmimError(f"{path}: expected a JSON object, got {type(data).__name__}; restore or delete the file")
    return data


def checkpoint_fingerprint(adapter: str, folder: Path, lineage: dict[str, Any] | None,
                           **settings: Any) -> dict[str, Any]:
    """Config, weight and processor file hashes, the lineage record and ``settings`` (format, dtype...)."""
    weights = {p.name: file_sha256(p) for pattern in WEIGHT_PATTERNS for p in sorted(folder.glob(pattern))}
    processor = {name: file_sha256(folder / name) for name in PROCESSOR_FILES if (folder / name).is_file()}
    out: dict[str, Any] = {"adapter": adapter, "path": str(folder), **settings,
                           "config_sha256": file_sha256(folder / "config.json"), "weights": weights,
                           "processor_files": processor}
    if lineage is not None:
        out["lineage"] = lineage
    return out


def check_image_count(sample: Sample, max_images: int, model_id: str) -> None:
    """Raises TooManyImagesError when ``sample`` has more images than the model takes."""
    count = len(sample.prompt.images)
    if count > max_images:
        raise TooManyImagesError(count, max_images, model_id)


# --- decoding ----------------------------------------------------------------------------------
def prepared_prompt(sample: Sample, text: str, markers: dict[str, int],
                    load: Callable[[str], tuple[Any, str | None]] = load_rgb) -> Prepared:
    """``(text, images in prompt order, record)`` for a sample whose prompt ``text`` is rendered: the
    shared body of the adapters' ``prepare_sample``. Raises MedmimError when a marker of ``markers``
    (image token -> expected count) is counted otherwise (the question itself holds one); loads each
    image with ``load`` (pixels, note) and records each note as ``image N: note``."""
    images = sample.prompt.images
    if any(text.count(marker) != count for marker, count in markers.items()):
        raise MedmimError(f"the prompt text itself contains {' or '.join(repr(m) for m in markers)}; nothing was sent")
    loaded, notes = [], []
    for n, part in enumerate(images, 1):
        pixels, note = load(part.path)
        loaded.append(pixels)
        if note:
            notes.append(f"image {n}: {note}")
    record = PromptRecord(n_images=len(images), image_order=[p.index for p in images],
                          rendered_prompt_sha256=content_hash(text), notes=notes)
    return text, loaded, record


def stop_token_ids(model: Any, tokenizer: Any, fmt: PromptFormat) -> list[int]:
    """The generation config's eos ids, the tokenizer's eos and the format's stop tokens, in that order."""
    ids: list[int] = []
    configured = model.generation_config.eos_token_id
    for value in [*(configured if isinstance(configured, list) else [configured]), tokenizer.eos_token_id]:
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    vocab = tokenizer.get_vocab()
    for token in fmt.stop_strings:
        if token in vocab and vocab[token] not in ids:
            ids.append(vocab[token])
    return ids


def generate_answers(torch: Any, model: Any, tokenizer: Any, inputs: Any, settings: GenerationSettings,
                     stop_ids: list[int], fmt: PromptFormat) -> list[tuple[str, dict[str, int]]]:
    """(answer, token counts) per row of a left-padded batch: greedy at temperature 0, else seeded
    sampling; each answer is cut at its first stop token."""
    sampling: dict[str, Any] = {"do_sample": False}
    if settings.temperature > 0:
        torch.manual_seed(settings.seed)
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": 1.0, "top_k": 0}
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=settings.max_new_tokens, eos_token_id=stop_ids,
                                pad_token_id=tokenizer.pad_token_id, **sampling)
    start = inputs["input_ids"].shape[1]
    answers = []
    for row in range(output.shape[0]):
        new = output[row, start:].tolist()
        ends = [i for i, t in enumerate(new) if t in stop_ids]
        new = new[: ends[0]] if ends else new
        text = tokenizer.decode(new, skip_special_tokens=True)
        for stop in fmt.stop_strings:
            text = text.split(stop)[0]
        prompt_tokens = int(inputs["attention_mask"][row].sum())
        answers.append((text.strip(), {"prompt_tokens": prompt_tokens, "completion_tokens": len(new)}))
    return answers


# --- the request loop --------------------------------------------------------------------------
REFUSALS = (MedmimError, OSError, ValueError)


async def answer_requests(requests: Sequence[GenerationRequest], prepare: Callable[[Sample], Any],
                          run: Callable[[list[Any], GenerationSettings], list[GenerationResult]]
                          ) -> list[GenerationResult | BaseException]:
    """One result per request, in order. ``prepare`` runs per sample (a refused or unreadable sample
    comes back as its exception); ``run`` answers the prepared samples of one settings group as one
    batch. Both run in a worker thread so the event loop stays free."""
    out: list[GenerationResult | BaseException | None] = [None] * len(requests)
    groups: dict[GenerationSettings, list[tuple[int, Any]]] = {}
    for i, request in enumerate(requests):
        try:
            prepared = await asyncio.to_thread(prepare, request.sample)
        except REFUSALS as exc:
            out[i] = exc
            continue
        groups.setdefault(request.settings, []).append((i, prepared))
    for settings, members in groups.items():
        batch: Awaitable[list[GenerationResult]] = asyncio.to_thread(run, [m[1] for m in members], settings)
        for (i, _), result in zip(members, await batch, strict=True):
            out[i] = result
    return [r if r is not None else RuntimeError("no answer") for r in out]


def checked_target(adapter: str, target: str | None, options: dict[str, str],
                   check: Callable[[str | None, dict[str, str]], str | None], install_hint: str) -> tuple[str, Path]:
    """The model id and resolved folder for an adapter factory, once ``check`` finds nothing missing.

    Raises:
        MissingBackendError: when ``check`` reports ``install_hint`` (the backend is not installed).
        MedmimError: any other reason ``check`` gives (bad path, options, checkpoint kind).
    """
    reason = check(target, options)
    if reason:
        raise (MissingBackendError if reason == install_hint else MedmimError)(reason)
    assert target is not None
    return options.get("label") or f"{adapter}:{target}", Path(os.path.expanduser(target)).resolve()
