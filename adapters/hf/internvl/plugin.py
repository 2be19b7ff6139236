"""Registers the ``hf-internvl`` adapter (an InternVL checkpoint run in-process by transformers).

Imported by every command, so it stays light: the check looks torch and transformers up without
importing them and reads only ``config.json``.

Spec: ``hf-internvl:PATH[,key=value...]``. PATH is either

* an original InternVL2 checkpoint with its remote code (``InternVLChatModel``, ``auto_map`` in
  config.json; e.g. OpenGVLab/InternVL2-8B): run through ``model.chat`` (``mode=remote``), or
* a transformers-native InternVL checkpoint (``model_type: internvl``, e.g. the ``-hf``
  conversions): run through ``InternVLForConditionalGeneration`` (``mode=native``).

Options (all optional):

==============  ===========================================================================
``mode``        ``remote`` or ``native`` (default: from config.json, as above).
``max_tiles``   the tile budget of one sample, shared by its images: each image may use
                ``max(1, max_tiles // n_images)`` tiles (+ a thumbnail when it uses more than
                one), so 3 images fit (default 12, InternVL2's per-image default).
``max_images``  the most images per prompt (default 3); a sample with more is an error record
                (``TooManyImagesError``), never truncated.
``prompt``      native mode: ``checkpoint`` (default: the checkpoint's own chat template) or
                ``internvl2`` (the query InternVL2-8B's ``model.chat`` builds: ``internlm2-chat``
                with its system message and ``Image-N`` labels; for a conversion of InternVL2).
``batch``       native mode: prompts per ``generate`` call, left-padded, image counts may differ
                (default 8). Remote mode answers one sample per ``model.chat`` call.
``dtype``       ``bf16``/``fp16``/``fp32`` (default bf16 on a GPU, fp32 on the CPU).
``device``      ``cpu``, ``cuda``, ``cuda:N``, ``mps`` (default ``cuda:$LOCAL_RANK`` under
                ``accelerate launch``/torchrun, else ``cuda`` when available, else ``cpu``).
``device_map``  ``auto`` (or ``balanced``, ``balanced_low_0``, ``sequential``): accelerate spreads
                the model over this process's GPUs. Not together with ``device``.
``label``       the model's name in tables.
==============  ===========================================================================
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

from medmim_eval.adapter_options import AdapterOption, batching_options, known_names, options_problem, placement_options
from medmim_eval.adapters.hf.placement_options import placement_problem
from medmim_eval.adapters.hf.plugin import read_config
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry

ADAPTER = "hf-internvl"
INSTALL_HINT = "the hf backend (torch, transformers) is not installed: pip install 'medmim-eval[hf]'"
MODES = ("remote", "native")
PROMPTS = ("checkpoint", "internvl2")
OPTIONS = (
    AdapterOption("mode", "choice", choices=MODES, default="from the checkpoint's config.json",
                  hint="remote (the checkpoint's own model.chat) or native (transformers)",
                  help="remote code (model.chat, one sample per call) or transformers' native InternVL, batched"),
    AdapterOption("prompt", "choice", choices=PROMPTS, default="checkpoint",
                  hint="checkpoint (its chat template) or internvl2 (InternVL2's model.chat query)",
                  help="mode=native: the checkpoint's chat template, or exactly InternVL2's model.chat query"),
    AdapterOption("max_tiles", "int", minimum=1, default="12", help="448-px tiles shared by a sample's images"),
    *placement_options(), *batching_options(batch=8),
)
KNOWN_OPTIONS = frozenset(known_names(OPTIONS))
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def checkpoint_mode(config: dict[str, Any]) -> str | None:
    """``remote`` for an InternVLChatModel/remote-code checkpoint, ``native`` for ``model_type: internvl``."""
    if "InternVLChatModel" in (config.get("architectures") or []) or config.get("model_type") == "internvl_chat":
        return "remote"
    if config.get("model_type") == "internvl":
        return "native"
    return "remote" if config.get("auto_map") else None


def option_problem(options: dict[str, str]) -> str | None:
    """Why the options are invalid (one line naming the fix), or None."""
    declared = options_problem(ADAPTER, OPTIONS, options)
    if declared:
        return declared
    mode, prompt = options.get("mode"), options.get("prompt")
    if prompt and mode == "remote":
        return f"{ADAPTER} prompt= applies to mode=native; mode=remote always uses the checkpoint's own model.chat"
    return placement_problem(ADAPTER, options)


def checkpoint_problem(folder: Path, options: dict[str, str]) -> str | None:
    """Why ``folder`` cannot run in the requested mode (one line naming the fix), or None."""
    if not (folder / "config.json").is_file():
        return f"{ADAPTER}: {folder} is not a checkpoint folder (no config.json there)"
    config = read_config(folder)
    found = checkpoint_mode(config)
    if found is None:
        return (f"{ADAPTER}: {folder} is not an InternVL checkpoint (model_type {config.get('model_type')!r}, "
                f"no auto_map in config.json); point it at an InternVL2 or transformers InternVL folder")
    wanted = options.get("mode") or found
    if wanted == "native" and found == "remote":
        return (f"{ADAPTER}: {folder} is a remote-code InternVL checkpoint (InternVLChatModel); use mode=remote, "
                f"or a transformers-format conversion (model_type internvl) with mode=native")
    if wanted == "remote" and found == "native" and not config.get("auto_map"):
        return (f"{ADAPTER}: {folder} is a transformers-native InternVL checkpoint without remote code "
                f"(no auto_map in config.json); use mode=native")
    if not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
        return f"{ADAPTER}: {folder} has no weight files (*.safetensors or pytorch_model*.bin); copy the complete checkpoint"
    return None


def check_hf_internvl(target: str | None, options: dict[str, str]) -> str | None:
    """Cheap prerequisite check (imports nothing heavy): backend, options, checkpoint folder."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return INSTALL_HINT
    if not target:
        return f"{ADAPTER} needs a checkpoint folder: {ADAPTER}:PATH"
    return option_problem(options) or checkpoint_problem(Path(target).expanduser(), options)


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    register(
        AdapterEntry(
            name=ADAPTER,
            description="a local InternVL checkpoint run in-process by transformers: InternVL2 through its "
                        "remote code (model.chat, dynamic tiling) or a transformers-native InternVL",
            factory="medmim_eval.adapters.hf.internvl.adapter:make_hf_internvl",
            extras=("hf",),
            target="required",
            example="hf-internvl:/models/InternVL2-8B,mode=remote,max_tiles=12",
            check=check_hf_internvl,
            options=OPTIONS,
            gpus="medmim_eval.adapters.hf.placement_options:placement_gpus",
        )
    )
