"""Registers the ``hf-llava`` adapter (a local LLaVA-architecture checkpoint run by transformers).

Imported by every command, so it stays light: the check only looks torch and transformers up.

Spec: ``hf-llava:PATH[,key=value...]``; PATH is a folder with ``config.json``, the weights and a
processor (``LlavaProcessor``). Options (all optional):

================  ===========================================================================
``format``        ``mantis_llama3`` or ``llava_med_mistral`` (see :mod:`medmim_eval.prompt_formats`);
                  default: ``medmim_prompt_format`` in config.json, else ``llava_med_mistral``
                  for a Mistral text model, else ``mantis_llama3``.
``dtype``         ``bf16``/``fp16``/``fp32`` (default bf16 on GPU, fp32 on CPU).
``device``        a torch device (default ``cuda`` when available, else ``cpu``).
``batch``         prompts per ``generate`` call, left-padded; image counts may differ (default 8).
``max_images``    the most images per prompt (default 3); a sample with more is an error
                  record, never silently truncated.
================  ===========================================================================
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Callable

from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry

INSTALL_HINT = "the hf backend (torch, transformers) is not installed: pip install 'medmim-eval[hf]'"
KNOWN_OPTIONS = frozenset({"format", "dtype", "device", "batch", "max_images", "label"})
LLAVA_FORMATS = ("mantis_llama3", "llava_med_mistral")
DTYPES = ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32")


def default_format(folder: Path) -> str:
    """The prompt format a checkpoint declares or implies (see the module docstring)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "mantis_llama3"
    declared = config.get("medmim_prompt_format")
    if isinstance(declared, str) and declared:
        return declared
    text = config.get("text_config") or {}
    return "llava_med_mistral" if text.get("model_type") == "mistral" else "mantis_llama3"


def option_problem(options: dict[str, str]) -> str | None:
    """Why the options are invalid (one line), or None."""
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        return f"unknown option(s) {', '.join(unknown)}; hf-llava knows {', '.join(sorted(KNOWN_OPTIONS))}"
    fmt = options.get("format")
    if fmt and fmt not in LLAVA_FORMATS:
        return f"hf-llava format={fmt!r}: use {' or '.join(LLAVA_FORMATS)}"
    dtype = options.get("dtype")
    if dtype and dtype.lower() not in DTYPES:
        return f"hf-llava dtype={dtype!r}: use bf16, fp16 or fp32"
    for name in ("batch", "max_images"):
        raw = options.get(name)
        if raw and (not raw.isdigit() or int(raw) < 1):
            return f"hf-llava option {name}={raw!r} must be a positive integer"
    return None


def check_hf_llava(target: str | None, options: dict[str, str]) -> str | None:
    """Cheap prerequisite check (imports nothing heavy): backend, checkpoint folder, options."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return INSTALL_HINT
    if not target:
        return "hf-llava needs a checkpoint folder: hf-llava:PATH"
    folder = Path(target).expanduser()
    if not (folder / "config.json").is_file():
        return f"hf-llava: {folder} is not a checkpoint folder (no config.json there)"
    return option_problem(options)


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    register(
        AdapterEntry(
            name="hf-llava",
            description="a local LLaVA-architecture checkpoint (Mantis-siglip-llama3, LLaVA-Med port) "
                        "run in-process by transformers",
            factory="medmim_eval.adapters.hf_llava:make_hf_llava",
            extras=("hf",),
            target="required",
            example="hf-llava:/models/mantis-8b-siglip-llama3,format=mantis_llama3,batch=8",
            check=check_hf_llava,
        )
    )
