"""Registers ``hf-deepseek-vl`` (DeepSeek-VL), run in-process.

Imported by every command, so it stays light: the checks look modules up without importing them and
read only ``config.json`` and file names.

``hf-deepseek-vl:PATH[,key=value...]`` runs a DeepSeek-VL checkpoint folder by one of two routes
(``mode=``):

* ``native`` -- transformers' own classes: ``DeepseekVLForConditionalGeneration`` (1.3B, SigLIP) or
  ``DeepseekVLHybridForConditionalGeneration`` (7B, SigLIP + SAM) with the checkpoint's processor.
  Default for a converted checkpoint (config.json ``model_type`` ``deepseek_vl`` or
  ``deepseek_vl_hybrid``, e.g. ``deepseek-community/deepseek-vl-7b-chat``).
* ``package`` -- the original ``deepseek_vl`` package (``VLChatProcessor``, ``MultiModalityCausalLM``).
  Default for an original checkpoint (``model_type`` ``multi_modality``, e.g.
  ``deepseek-ai/deepseek-vl-7b-chat``) when the package is importable. It is not on PyPI (the
  ``deepseek-vl`` there is an empty placeholder): ``pip install git+https://github.com/deepseek-ai/DeepSeek-VL``.

Options of ``hf-deepseek-vl`` (all optional): ``mode``; ``dtype`` (``bf16``/``fp16``/``fp32``; bf16 on a
GPU, fp32 on the CPU); ``device`` (default ``cuda:$LOCAL_RANK`` under ``accelerate launch``/torchrun,
else ``cuda`` when available, else ``cpu``); ``device_map`` (``auto``... native route only: accelerate
spreads the model over this process's GPUs); ``batch`` (prompts per ``generate`` call, left-padded,
mixed image counts; default 8); ``max_images`` (default 3; more is a ``TooManyImagesError``);
``label``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

from medmim_eval.adapter_options import AdapterOption, batching_options, known_names, options_problem, placement_options
from medmim_eval.adapters.hf.placement_options import placement_problem
from medmim_eval.adapters.hf.plugin import read_config
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry

INSTALL_HINT = "the hf backend (torch, transformers) is not installed: pip install 'medmim-eval[hf]'"
PACKAGE_HINT = ("pip install git+https://github.com/deepseek-ai/DeepSeek-VL (the 'deepseek-vl' on PyPI is an "
                "empty placeholder)")
CONVERTED_HUB = "deepseek-community/deepseek-vl-7b-chat"
NATIVE_CLASSES = {"deepseek_vl": "DeepseekVLForConditionalGeneration",
                  "deepseek_vl_hybrid": "DeepseekVLHybridForConditionalGeneration"}
ORIGINAL_TYPE = "multi_modality"
MODES = ("native", "package")
OPTIONS = (
    AdapterOption("mode", "choice", choices=MODES, default="from the checkpoint folder",
                  hint="native or package",
                  help="transformers' native DeepSeek-VL, or DeepSeek-VL's own package (its processor and model)"),
    *placement_options(), *batching_options(batch=8),
)
KNOWN_OPTIONS = frozenset(known_names(OPTIONS))
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def transformers_has_deepseek_vl() -> bool:
    """Whether the installed transformers ships the DeepSeek-VL classes (looked up on disk, not imported)."""
    spec = importlib.util.find_spec("transformers")
    roots = list(spec.submodule_search_locations or []) if spec else []
    return any((Path(root) / "models" / "deepseek_vl_hybrid").is_dir() for root in roots)


def deepseek_mode(folder: Path, options: dict[str, str]) -> tuple[str | None, str | None]:
    """(route, None) for the checkpoint in ``folder``, or (None, why it cannot run, naming the fix)."""
    config = read_config(folder)
    if not config:
        return None, f"hf-deepseek-vl: {folder} is not a checkpoint folder (no readable config.json there)"
    model_type, requested = config.get("model_type"), options.get("mode") or None
    if model_type in NATIVE_CLASSES:
        if requested == "package":
            return None, (f"hf-deepseek-vl: {folder} is a converted (transformers-format) checkpoint; the deepseek_vl "
                          f"package loads only the original format: use mode=native")
        if not transformers_has_deepseek_vl():
            return None, ("hf-deepseek-vl: this transformers has no DeepSeek-VL classes: "
                          "pip install -U 'transformers>=5'")
        if not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
            return None, f"hf-deepseek-vl: {folder} has no weight files (*.safetensors); copy the complete checkpoint"
        return "native", None
    if model_type == ORIGINAL_TYPE:
        if "gen_head_config" in config or "gen_vision_config" in config:
            return None, f"hf-deepseek-vl: {folder} is a Janus checkpoint (image generation), not DeepSeek-VL"
        if requested == "native":
            return None, (f"hf-deepseek-vl: {folder} is an original DeepSeek-VL checkpoint "
                          f"(model_type multi_modality), which transformers does not load; use a converted one "
                          f"({CONVERTED_HUB}) or mode=package")
        if importlib.util.find_spec("deepseek_vl") is None:
            return None, (f"hf-deepseek-vl: {folder} is an original DeepSeek-VL checkpoint "
                          f"(model_type multi_modality): install the deepseek_vl package ({PACKAGE_HINT}) "
                          f"or use a converted checkpoint ({CONVERTED_HUB}) that transformers loads natively")
        return "package", None
    return None, (f"hf-deepseek-vl: {folder} is not a DeepSeek-VL checkpoint "
                  f"(model_type {model_type!r} in config.json; "
                  f"expected deepseek_vl, deepseek_vl_hybrid or multi_modality)")


def option_problem(options: dict[str, str]) -> str | None:
    """Why the options are invalid (one line naming the fix), or None."""
    return options_problem("hf-deepseek-vl", OPTIONS, options) or placement_problem("hf-deepseek-vl", options)


def check_deepseek_vl(target: str | None, options: dict[str, str]) -> str | None:
    """Cheap prerequisite check (imports nothing heavy): backend, options, checkpoint and its route."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return INSTALL_HINT
    if not target:
        return "hf-deepseek-vl needs a checkpoint folder: hf-deepseek-vl:PATH"
    problem = option_problem(options)
    if problem:
        return problem
    mode, reason = deepseek_mode(Path(target).expanduser(), options)
    if mode == "package" and options.get("device_map"):
        return "hf-deepseek-vl: device_map is for the native route; the deepseek_vl package route takes device="
    return reason


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    register(
        AdapterEntry(
            name="hf-deepseek-vl",
            description="a local DeepSeek-VL checkpoint (converted: transformers classes; original: the "
                        "deepseek_vl package) run in-process",
            factory="medmim_eval.adapters.hf.deepseek_vl.adapter:make_hf_deepseek_vl",
            extras=("hf",),
            target="required",
            example="hf-deepseek-vl:/models/deepseek-vl-7b-chat,batch=8",
            check=check_deepseek_vl,
            options=OPTIONS,
            gpus="medmim_eval.adapters.hf.placement_options:placement_gpus",
        )
    )
