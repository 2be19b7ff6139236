"""The paper's models: their routes (registered as ``ModelEntry``) and their vLLM launch flags.

A :class:`Preset` holds what a checkpoint needs from vLLM beyond ``--model``: the image limit
(``--limit-mm-per-prompt``), ``--max-model-len``, ``--trust-remote-code``, ``--hf-overrides``,
``--mm-processor-kwargs`` and a chat template where the checkpoint's own one does not render the
images the way the model was trained (the Jinja files under ``adapters/vllm/chat_templates/``, package
data read through ``importlib.resources``). A ``vllm:`` or ``vllm-offline:`` model uses the preset
named by its ``preset=`` option, else the one whose hub id equals its target, else none.

Facts checked against vLLM 0.32 (the CPU build used by the tests):

* InternVL2-8B runs as ``InternVLChatModel`` with ``--trust-remote-code`` (its processor and
  tokenizer are remote code).
* Mantis-8B-siglip-llama3 is a ``LlavaForConditionalGeneration`` checkpoint. vLLM <= 0.24 had a
  ``MantisForConditionalGeneration`` that its docs selected with
  ``--hf-overrides '{"architectures": ["MantisForConditionalGeneration"]}'``; 0.25 removed it, so
  the override now pins the plain LLaVA implementation and the Mantis interleaved format
  ``(image N: <Image><image></Image>)`` comes from the bundled chat template instead.
* Mantis-8B-Idefics2 (``Idefics2ForConditionalGeneration``) has no vLLM implementation (vLLM has
  Idefics3 only), so it has no served route; it runs in-process through the ``hf-idefics2`` adapter.
* Every LLaVA-architecture model also has an in-process ``hf-llava`` route, tried when no vLLM is
  installed (the vLLM route comes first: it is faster on a GPU host).
* microsoft/llava-med-v1.5-mistral-7b is in the original LLaVA repository format
  (``LlavaMistralForCausalLM``), which neither vLLM nor transformers load. Convert it to an
  HF-format ``LlavaForConditionalGeneration`` folder (CLIP ViT-L/14-336 + Mistral-7B, as the
  llava-hf ports are made), or use a published port, and point ``$MEDMIM_WEIGHTS_LLAVA_MED_7B`` (or
  ``$MEDMIM_WEIGHTS_DIR/LLaVA-Med-7B``) at it. LLaVA-Med pads images to a square with the mean
  colour (``image_aspect_ratio: pad``); set that in the port's image processor (``do_pad``) --
  this registry cannot see inside a port.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from medmim_eval.errors import MedmimError
from medmim_eval.registry import ModelEntry

TEMPLATE_PACKAGE = "medmim_eval.adapters.vllm"
TEMPLATE_FOLDER = "chat_templates"
DEFAULT_MAX_IMAGES = 3  # the Med-MIM benchmark has 2-3 images per item


@dataclass(frozen=True)
class Preset:
    """vLLM launch settings for one checkpoint family (see the module docstring)."""

    name: str
    hub_id: str | None = None
    max_model_len: int | None = None
    max_images: int = DEFAULT_MAX_IMAGES
    trust_remote_code: bool = False
    hf_overrides: dict[str, object] | None = None
    mm_processor_kwargs: dict[str, object] | None = None
    chat_template: str | None = None  # a file in adapters/vllm/chat_templates/
    extra_args: tuple[str, ...] = ()
    notes: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("internvl2-8b", hub_id="OpenGVLab/InternVL2-8B", max_model_len=16384, trust_remote_code=True,
           chat_template="internvl2_internlm2.jinja",
           notes="3 images x up to 13 tiles x 256 tokens fit in 16k; InternLM2 format with 'Image-N: <image>' labels"),
    Preset("mantis-8b", hub_id="TIGER-Lab/Mantis-8B-siglip-llama3", max_model_len=8192,
           hf_overrides={"architectures": ["LlavaForConditionalGeneration"]}, chat_template="mantis_llama3.jinja",
           notes="SigLIP 384/14: 729 tokens per image; Llama-3 format, Mantis interleaved image tags"),
    Preset("llava-med-7b", max_model_len=4096, chat_template="llava_med_mistral.jinja",
           notes="HF-format port of microsoft/llava-med-v1.5-mistral-7b; CLIP 336/14: 576 tokens per image"),
)}
# Fine-tuned checkpoints share their base model's launch flags.
PRESETS["med-mantis"] = Preset(**{**PRESETS["mantis-8b"].__dict__, "name": "med-mantis", "hub_id": None})
PRESETS["mim-llava-med"] = Preset(**{**PRESETS["llava-med-7b"].__dict__, "name": "mim-llava-med"})

# Architectures a served route cannot load, with the fix (read from a local folder's config.json).
UNSERVABLE_ARCHITECTURES = {
    "LlavaMistralForCausalLM": "this is the original LLaVA-repository checkpoint (LlavaMistralForCausalLM); "
                               "vLLM needs an HF-format LlavaForConditionalGeneration port (see adapters/vllm/model_registry.py)",
    "Idefics2ForConditionalGeneration": "vLLM has no Idefics2 implementation (Idefics3 only); "
                                        "use the in-process hf-idefics2 adapter",
}

MODEL_ENTRIES: tuple[ModelEntry, ...] = (
    ModelEntry("internvl2-8b", "InternVL2-8B on a vLLM server (--trust-remote-code), else in-process through its "
               "remote code (paper model)",
               routes=("vllm:{weights},preset=internvl2-8b", "hf-internvl:{weights},mode=remote"),
               weights="OpenGVLab/InternVL2-8B"),
    ModelEntry("mantis-8b", "Mantis-8B, SigLIP + Llama-3 variant, on a vLLM server, else in-process (paper model)",
               routes=("vllm:{weights},preset=mantis-8b", "hf-llava:{weights},format=mantis_llama3"),
               weights="TIGER-Lab/Mantis-8B-siglip-llama3"),
    ModelEntry("mantis-8b-idefics2", "Mantis-8B, Idefics2 variant, in-process by transformers (paper model); "
               "vLLM cannot serve Idefics2", routes=("hf-idefics2:{weights}",), weights="TIGER-Lab/Mantis-8B-Idefics2"),
    ModelEntry("llava-med-7b", "LLaVA-Med v1.5 (Mistral-7B) from a local HF-format port, on a vLLM server, else "
               "in-process (paper model); the original microsoft/llava-med-v1.5-mistral-7b needs conversion",
               routes=("vllm:{weights},preset=llava-med-7b", "hf-llava:{weights},format=llava_med_mistral")),
    ModelEntry("mim-llava-med", "LLaVA-Med fine-tuned on Med-MIM, local HF-format checkpoint, on a vLLM server, else "
               "in-process (paper model)",
               routes=("vllm:{weights},preset=mim-llava-med", "hf-llava:{weights},format=llava_med_mistral")),
    ModelEntry("med-mantis", "Mantis-8B-siglip-llama3 fine-tuned on Med-MIM, local checkpoint, on a vLLM server, else "
               "in-process (paper model)",
               routes=("vllm:{weights},preset=med-mantis", "hf-llava:{weights},format=mantis_llama3")),
    ModelEntry("deepseek-vl-7b", "DeepSeek-VL-7B-chat in-process (paper model): a converted checkpoint "
               "(deepseek-community/deepseek-vl-7b-chat) by transformers, the original one by the deepseek_vl package",
               routes=("hf-deepseek-vl:{weights}",), weights="deepseek-ai/deepseek-vl-7b-chat"),
    ModelEntry("med-flamingo-9b", "Med-Flamingo-9B in-process by open_flamingo (paper model): a folder with "
               "llama-7b/ (LLaMA-7B v1, HF format) and model.pt (med-flamingo/med-flamingo)",
               routes=("med-flamingo:{weights}",)),
)


def preset_for(target: str | None, options: dict[str, str]) -> Preset | None:
    """The preset named by ``preset=``, else the one whose hub id is ``target``, else None.

    Raises:
        MedmimError: for an unknown ``preset=`` name.
    """
    name = options.get("preset")
    if name:
        if name not in PRESETS:
            raise MedmimError(f"unknown preset '{name}'; known: {', '.join(sorted(PRESETS))}")
        return PRESETS[name]
    for preset in PRESETS.values():
        if target and preset.hub_id == target:
            return preset
    return None


def bundled_template(name: str) -> Path:
    """The path of a chat template shipped in ``adapters/vllm/chat_templates/`` (``.jinja`` optional)."""
    file_name = name if name.endswith(".jinja") else f"{name}.jinja"
    folder = resources.files(TEMPLATE_PACKAGE).joinpath(TEMPLATE_FOLDER)
    resource = folder.joinpath(file_name)
    if not resource.is_file():
        known = sorted(p.name for p in folder.iterdir() if p.name.endswith(".jinja")) if folder.is_dir() else []
        bundled = ", ".join(known) or "none (this installation lacks adapters/vllm/chat_templates/; reinstall medmim-eval)"
        raise MedmimError(f"no bundled chat template '{name}'; bundled: {bundled}")
    return Path(str(resource))


def chat_template_path(preset: Preset | None, options: dict[str, str]) -> Path | None:
    """``chat_template=`` (a file, or the name of a bundled template), else the preset's, else None."""
    chosen = options.get("chat_template")
    if chosen:
        path = Path(chosen).expanduser()
        return path if path.is_file() else bundled_template(chosen)
    return bundled_template(preset.chat_template) if preset and preset.chat_template else None


@dataclass(frozen=True)
class EngineSettings:
    """What the engine is started with, for both the server and the offline engine."""

    max_images: int
    max_model_len: int | None
    trust_remote_code: bool
    hf_overrides: dict[str, object] | None
    mm_processor_kwargs: dict[str, object] | None
    chat_template: Path | None
    tensor_parallel: int
    data_parallel: int
    dtype: str | None
    enforce_eager: bool
    extra: tuple[str, ...] = field(default_factory=tuple)


def _flag(options: dict[str, str], key: str) -> bool:
    return options.get(key, "").lower() in ("1", "true", "yes", "on")


def _int(options: dict[str, str], key: str, default: int | None) -> int | None:
    raw = options.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise MedmimError(f"option {key}={raw!r} must be an integer") from None


def engine_settings(target: str | None, options: dict[str, str]) -> EngineSettings:
    """The preset's settings overridden by the model options (``max_images``, ``max_model_len``,
    ``trust_remote_code``, ``chat_template``, ``tp``, ``dp``, ``dtype``, ``enforce_eager``)."""
    preset = preset_for(target, options)
    trust = _flag(options, "trust_remote_code") or bool(preset and preset.trust_remote_code)
    return EngineSettings(
        max_images=_int(options, "max_images", preset.max_images if preset else DEFAULT_MAX_IMAGES) or DEFAULT_MAX_IMAGES,
        max_model_len=_int(options, "max_model_len", preset.max_model_len if preset else None),
        trust_remote_code=trust,
        hf_overrides=preset.hf_overrides if preset else None,
        mm_processor_kwargs=preset.mm_processor_kwargs if preset else None,
        chat_template=chat_template_path(preset, options),
        tensor_parallel=_int(options, "tp", 1) or 1,
        data_parallel=_int(options, "dp", 1) or 1,
        dtype=options.get("dtype"),
        enforce_eager=_flag(options, "enforce_eager"),
        extra=preset.extra_args if preset else (),
    )


def server_args(settings: EngineSettings) -> list[str]:
    """The ``vllm.entrypoints.openai.api_server`` arguments for ``settings`` (after --model/--port)."""
    args = ["--limit-mm-per-prompt", json.dumps({"image": settings.max_images})]
    if settings.max_model_len:
        args += ["--max-model-len", str(settings.max_model_len)]
    if settings.trust_remote_code:
        args.append("--trust-remote-code")
    if settings.hf_overrides:
        args += ["--hf-overrides", json.dumps(settings.hf_overrides)]
    if settings.mm_processor_kwargs:
        args += ["--mm-processor-kwargs", json.dumps(settings.mm_processor_kwargs)]
    if settings.chat_template:
        args += ["--chat-template", str(settings.chat_template)]
    if settings.tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(settings.tensor_parallel)]
    if settings.data_parallel > 1:
        args += ["--data-parallel-size", str(settings.data_parallel)]
    if settings.dtype:
        args += ["--dtype", settings.dtype]
    if settings.enforce_eager:
        args.append("--enforce-eager")
    return args + list(settings.extra)


def unservable_reason(target: str | None) -> str | None:
    """Why a local checkpoint folder cannot be served by vLLM, read from its config.json, or None."""
    if not target:
        return None
    config = Path(target).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    for arch in architectures:
        if arch in UNSERVABLE_ARCHITECTURES:
            return f"{target}: {UNSERVABLE_ARCHITECTURES[arch]}"
    return None


def engine_gpus(target: str | None, options: dict[str, str]) -> int:
    """GPUs a vLLM engine launched here takes: ``tp`` x ``dp``; none when attached to a server by ``base_url``."""
    if options.get("base_url"):
        return 0
    return (_int(options, "tp", 1) or 1) * (_int(options, "dp", 1) or 1)
