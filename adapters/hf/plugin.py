"""Registers the in-process transformers adapters: ``hf-llava`` and ``hf-idefics2``.

Imported by every command, so it stays light: the checks look torch and transformers up without
importing them and read only ``config.json``.

Specs: ``hf-llava:PATH[,key=value...]`` (a ``LlavaForConditionalGeneration`` folder with its
``LlavaProcessor``: Mantis-8B-siglip-llama3, an HF-format LLaVA-Med port, fine-tuned checkpoints)
and ``hf-idefics2:PATH[,key=value...]`` (an ``Idefics2ForConditionalGeneration`` folder with its
``Idefics2Processor``: Mantis-8B-Idefics2). Options (all optional):

==================  =========================================================================
``format``          hf-llava: ``mantis_llama3`` or ``llava_med_mistral`` (see
                    :mod:`medmim_eval.prompt_formats`); default ``medmim_prompt_format`` in
                    config.json, else ``llava_med_mistral`` for a Mistral text model, else
                    ``mantis_llama3``. hf-idefics2: ``idefics2`` only.
``dtype``           ``bf16``/``fp16``/``fp32`` (default bf16 on a GPU, fp32 on the CPU).
``device``          a torch device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` (default ``cuda:$LOCAL_RANK``
                    under ``accelerate launch``/torchrun, else ``cuda`` when available, else ``cpu``).
``device_map``      ``auto`` (or ``balanced``, ``balanced_low_0``, ``sequential``): accelerate spreads
                    the model over the GPUs of this process (a model too large for one GPU); on a
                    CPU-only host it loads on the CPU. Not together with ``device``.
``batch``           prompts per ``generate`` call, left-padded; image counts may differ (default 8).
``max_images``      the most images per prompt (default 3); a sample with more is an error
                    record (``TooManyImagesError``), never silently truncated.
``image_splitting`` hf-idefics2 only: ``1`` splits each image into 4 crops + the whole image
                    (Idefics2's default); default ``0``, as Mantis-8B-Idefics2 was trained.
``label``           the model's name in tables.
==================  =========================================================================
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

from medmim_eval.adapter_options import AdapterOption, batching_options, known_names, options_problem, placement_options
from medmim_eval.adapters.hf.placement_options import placement_problem
from medmim_eval.hookspecs import hookimpl
from medmim_eval.prompt_formats import default_format  # noqa: F401  (moved to the core; kept importable here)
from medmim_eval.registry import AdapterEntry

INSTALL_HINT = "the hf backend (torch, transformers) is not installed: pip install 'medmim-eval[hf]'"
FORMATS = {"hf-llava": ("mantis_llama3", "llava_med_mistral"), "hf-idefics2": ("idefics2",)}
OPTIONS: dict[str, tuple[AdapterOption, ...]] = {
    "hf-llava": (AdapterOption("format", "choice", choices=FORMATS["hf-llava"], default="from the checkpoint folder",
                               help="the prompt format: Mantis's Llama-3 or LLaVA-Med v1.5's Mistral"),
                 *placement_options(), *batching_options(batch=8)),
    "hf-idefics2": (AdapterOption("format", "choice", choices=FORMATS["hf-idefics2"], default="idefics2",
                                  help="the prompt format"),
                    AdapterOption("image_splitting", "bool", default="0", help="split each image into 4 crops + "
                                  "the whole (Idefics2's processor option)"),
                    *placement_options(), *batching_options(batch=8)),
}
KNOWN_OPTIONS = {adapter: frozenset(known_names(options)) for adapter, options in OPTIONS.items()}
LLAVA_FORMATS = FORMATS["hf-llava"]
# config.json "model_type" each adapter loads, and the adapter to use for the other one.
MODEL_TYPES = {"hf-llava": "llava", "hf-idefics2": "idefics2"}
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
ORIGINAL_LLAVA = ("is the original LLaVA-repository checkpoint (LlavaMistralForCausalLM); hf-llava needs an "
                  "HF-format LlavaForConditionalGeneration port (see adapters/vllm/model_registry.py)")


def read_config(folder: Path) -> dict[str, Any]:
    """The parsed config.json of ``folder`` ({} when missing or unreadable); the HF families' plugins share it."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def option_problem(options: dict[str, str], adapter: str = "hf-llava") -> str | None:
    """Why the options are invalid for ``adapter`` (one line naming the fix), or None: the declared
    options checked by the core, then the placement rules."""
    return options_problem(adapter, OPTIONS[adapter], options) or placement_problem(adapter, options)


def checkpoint_problem(adapter: str, folder: Path) -> str | None:
    """Why ``folder`` is not a checkpoint ``adapter`` loads (from config.json and the file names), or None."""
    if not (folder / "config.json").is_file():
        return f"{adapter}: {folder} is not a checkpoint folder (no config.json there)"
    config = read_config(folder)
    if "LlavaMistralForCausalLM" in (config.get("architectures") or []):
        return f"{adapter}: {folder} {ORIGINAL_LLAVA}"
    model_type = config.get("model_type")
    for other, other_type in MODEL_TYPES.items():
        if other != adapter and model_type == other_type:
            return f"{adapter}: {folder} is a {model_type} checkpoint; use {other}:{folder}"
    if adapter == "hf-idefics2" and model_type != "idefics2":
        return f"hf-idefics2: {folder} is not an Idefics2 checkpoint (model_type {model_type!r} in config.json)"
    if not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
        return f"{adapter}: {folder} has no weight files (*.safetensors or pytorch_model*.bin); copy the complete checkpoint"
    return None


def _check(adapter: str) -> Callable[[str | None, dict[str, str]], str | None]:
    def check(target: str | None, options: dict[str, str]) -> str | None:
        """Cheap prerequisite check (imports nothing heavy): backend, checkpoint folder, options."""
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
            return INSTALL_HINT
        if not target:
            return f"{adapter} needs a checkpoint folder: {adapter}:PATH"
        return checkpoint_problem(adapter, Path(target).expanduser()) or option_problem(options, adapter)

    return check


check_hf_llava = _check("hf-llava")
check_hf_idefics2 = _check("hf-idefics2")


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    register(
        AdapterEntry(
            name="hf-llava",
            description="a local LLaVA-architecture checkpoint (Mantis-siglip-llama3, LLaVA-Med port) "
                        "run in-process by transformers",
            factory="medmim_eval.adapters.hf.llava:make_hf_llava",
            extras=("hf",),
            target="required",
            example="hf-llava:/models/mantis-8b-siglip-llama3,format=mantis_llama3,batch=8",
            check=check_hf_llava,
            options=OPTIONS["hf-llava"],
            gpus="medmim_eval.adapters.hf.placement_options:placement_gpus",
        )
    )
    register(
        AdapterEntry(
            name="hf-idefics2",
            description="a local Idefics2 checkpoint (Mantis-8B-Idefics2) run in-process by transformers",
            factory="medmim_eval.adapters.hf.idefics2:make_hf_idefics2",
            extras=("hf",),
            target="required",
            example="hf-idefics2:/models/Mantis-8B-Idefics2,batch=8",
            check=check_hf_idefics2,
            options=OPTIONS["hf-idefics2"],
            gpus="medmim_eval.adapters.hf.placement_options:placement_gpus",
        )
    )
