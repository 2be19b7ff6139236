"""Where Med-Flamingo's parts are and what is missing to run it (light: no heavy import).

Med-Flamingo-9B = OpenFlamingo (``open_flamingo``) with the CLIP ViT-L/14 vision encoder of
``open_clip``, a local LLaMA-7B (v1) in Hugging Face format, cross-attention every 4 LLaMA layers,
and the Med-Flamingo checkpoint ``model.pt`` (hub repo ``med-flamingo/med-flamingo``) loaded on top.

Two ways to name the parts:

* ``med-flamingo:FOLDER`` with this layout (``$MEDMIM_WEIGHTS_MED_FLAMINGO_9B`` may point at it)::

      FOLDER/llama-7b/     LLaMA-7B v1, HF format (config.json, tokenizer, weights)
      FOLDER/model.pt      the Med-Flamingo checkpoint
      FOLDER/ViT-L-14.pt   optional: OpenAI CLIP ViT-L/14 weights (an OpenAI ``.pt`` or an
                           open_clip ``open_clip_pytorch_model.bin``), so open_clip loads offline

* ``med-flamingo:LLAMA_DIR,checkpoint=PATH/model.pt`` (LLAMA_DIR holds config.json).

``clip=PATH`` names the CLIP weights file; without one (and no ``FOLDER/ViT-L-14.pt``) open_clip
looks its ``openai`` weights up in its own cache, which fails offline unless they are there.

Installing the backend: ``open-flamingo`` 2.0.x pins ``torch==2.0.1`` and 0.0.2 pulls torchvision,
datasets, wandb, webdataset and more, so install it without its dependencies and add the few
modules it really imports::

    pip install --no-deps open-flamingo==0.0.2   # the version Med-Flamingo was built with
    pip install einops einops-exts open_clip_torch sentencepiece

``open_clip_torch`` needs ``torchvision``: on a GPU host install the torchvision build that
matches your torch first (never on a CPU-only torch install, where pip swaps torch for a CUDA one).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from medmim_eval.adapter_options import AdapterOption, batching_options, known_names, options_problem, placement_options
from medmim_eval.adapters.hf.placement_options import placement_problem

LLAMA_SUBDIR = "llama-7b"
CHECKPOINT_FILE = "model.pt"
CLIP_FILE = "ViT-L-14.pt"
CLIP_ARCH = "ViT-L-14"
CROSS_ATTN_EVERY_N_LAYERS = 4
CHECKPOINT_HUB = "med-flamingo/med-flamingo"
INSTALL_HINT = ("pip install --no-deps open-flamingo==0.0.2 && pip install einops einops-exts open_clip_torch "
                "sentencepiece (open_clip_torch needs the torchvision build that matches your torch)")
# Importable module -> what provides it.
BACKEND_MODULES = (("torch", "torch"), ("transformers", "transformers"), ("open_flamingo", "open-flamingo"),
                   ("open_clip", "open_clip_torch"), ("einops", "einops"), ("einops_exts", "einops-exts"),
                   ("torchvision", "torchvision, matching your torch"))
OPTIONS = (
    AdapterOption("checkpoint", default="model.pt in the target folder", help="the Med-Flamingo checkpoint file"),
    AdapterOption("clip", default="found beside the weights", help="the CLIP ViT-L/14 weights open_clip loads"),
    *placement_options(device_map=False), *batching_options(batch=1),
    AdapterOption("device_map", help="not supported (open_flamingo's Flamingo cannot be dispatched by accelerate); "
                  "use device=cuda:N"),
)
KNOWN_OPTIONS = frozenset(known_names(OPTIONS))


@dataclass(frozen=True)
class MedFlamingoParts:
    """The resolved locations: LLaMA folder, Med-Flamingo checkpoint, CLIP weights (a file or the
    open_clip pretrained tag ``openai``)."""

    llama: Path
    checkpoint: Path
    clip: str


def resolve_parts(target: str, options: dict[str, str]) -> MedFlamingoParts:
    """The parts named by ``target`` and the options (see the module docstring); nothing is checked."""
    folder = Path(target).expanduser()
    bundle = not (folder / "config.json").is_file()
    llama = folder / LLAMA_SUBDIR if bundle else folder
    checkpoint = Path(options["checkpoint"]).expanduser() if options.get("checkpoint") else folder / CHECKPOINT_FILE
    clip = options.get("clip") or ""
    if not clip:
        local = folder / CLIP_FILE
        clip = str(local) if bundle and local.is_file() else "openai"
    return MedFlamingoParts(llama=llama, checkpoint=checkpoint, clip=clip)


def missing_backend() -> list[str]:
    """The backend modules that are not importable here, each with what provides it."""
    return [f"{module} ({package})" if module != package else module
            for module, package in BACKEND_MODULES if importlib.util.find_spec(module) is None]


def option_problem(options: dict[str, str]) -> str | None:
    """Why the options are invalid (one line naming the fix), or None."""
    if "device_map" in options:
        return ("med-flamingo: device_map is not supported (open_flamingo's Flamingo is a plain torch module "
                "accelerate cannot dispatch); the 9B model fits one GPU in bf16: use device=cuda:N")
    return options_problem("med-flamingo", OPTIONS, options) or placement_problem("med-flamingo", options)


def missing_parts(target: str | None, options: dict[str, str]) -> list[str]:
    """Every missing piece, each naming the fix: backend modules, LLaMA folder, checkpoint, CLIP file."""
    problems = []
    backend = missing_backend()
    if backend:
        problems.append(f"missing {', '.join(backend)}: {INSTALL_HINT}")
    if not target:
        problems.append("no weights given: med-flamingo:FOLDER (llama-7b/ and model.pt inside) or "
                        "med-flamingo:LLAMA_DIR,checkpoint=PATH/model.pt")
        return problems
    parts = resolve_parts(target, options)
    if not (parts.llama / "config.json").is_file():
        problems.append(f"no LLaMA-7B folder at {parts.llama} (LLaMA-7B v1 in Hugging Face format, with config.json)")
    elif not (parts.llama / "tokenizer.json").is_file() and importlib.util.find_spec("sentencepiece") is None:
        problems.append(f"{parts.llama} has no tokenizer.json and sentencepiece is missing: pip install sentencepiece")
    if not parts.checkpoint.is_file():
        problems.append(f"no Med-Flamingo checkpoint at {parts.checkpoint} (model.pt from the hub repo "
                        f"{CHECKPOINT_HUB}; or pass checkpoint=PATH)")
    if parts.clip != "openai" and not Path(parts.clip).expanduser().is_file():
        problems.append(f"no CLIP weights file at {parts.clip} (OpenAI CLIP {CLIP_ARCH} weights for open_clip)")
    return problems


def check_med_flamingo(target: str | None, options: dict[str, str]) -> str | None:
    """Cheap prerequisite check for the ``med-flamingo`` adapter: everything missing, in one line."""
    problem = option_problem(options)
    if problem:
        return problem
    missing = missing_parts(target, options)
    return "med-flamingo cannot load: " + "; ".join(missing) if missing else None
