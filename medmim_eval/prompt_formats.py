"""The model prompt formats, rendered in one place for evaluation and training alike.

Pure Python (no torch, no tokenizer). Each format turns a :class:`~medmim_eval.schema.Prompt`
(text and image parts in their original order) into the exact string handed to the tokenizer or
processor; every image becomes that format's image placeholder *at its position*.

Formats (``{q}`` is the prompt with placeholders, ``{r}`` an optional assistant response):

``mantis_llama3``      image ``i`` (from 1) -> ``(image {i}: <Image><image></Image>)`` (``<Image>`` and
                       ``</Image>`` are plain text; ``<image>`` is the processor's image token).
                       ``<|begin_of_text|>`` + the system turn of Mantis's ``llama_3`` template
                       (``<|start_header_id|>system<|end_header_id|>\\n\\n{MANTIS_LLAMA3_SYSTEM}<|eot_id|>``)
                       + ``<|start_header_id|>user<|end_header_id|>\\n\\n{q}<|eot_id|>``
                       ``<|start_header_id|>assistant<|end_header_id|>\\n\\n`` + ``{r}<|eot_id|>``.
                       Mantis's code trains (``train_mllava.py``) and evaluates (``chat_mllava``) every
                       Llama-3 checkpoint with that system turn, so the model expects it (revision 2;
                       revision 1 had no system turn). The BOS is in the text: tokenize with
                       ``add_special_tokens=False``.
``llava_med_mistral``  LLaVA ``mistral_instruct``: each image -> ``<image>\\n`` at its position;
                       ``[INST] {q} [/INST]`` + `` {r}</s>``. The tokenizer adds ``<s>``
                       (``add_special_tokens=True``), as LLaVA's ``tokenizer_image_token`` does.
                       The user text is stripped at both ends (the first text part on the left, the
                       last on the right), as LLaVA-Med's ``model_vqa.py`` strips the question
                       (revision 2; revision 1 kept a closed item's trailing newline).
``idefics2``           each image -> ``<image>``; ``User:{q}<end_of_utterance>\\nAssistant:`` +
                       ``{r}<end_of_utterance>\\n``. The processor adds the BOS. The response follows the
                       cue without a space, as Mantis's ``conv_idefics_2`` trains Mantis-8B-Idefics2
                       (revision 2; revision 1 trained `` {r}``; the evaluation prompt is unchanged).

Contract: for every format and prompt, ``render_training(fmt, prompt, r).prompt`` equals
``render_prompt(fmt, prompt)`` and is a prefix of ``.full`` (checked at run time), so a training
recipe masks labels up to ``len(prompt)`` and evaluation sees exactly the trained prompt.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medmim_eval.errors import MedmimError
from medmim_eval.schema import ImagePart, Prompt, TextPart

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class PromptFormat:
    """One chat format.

    Attributes:
        name: the ``format=`` value.
        image: ``image(i)`` is the placeholder of the i-th image (1-based) in the prompt.
        head: text before the user content.
        tail: text after the user content, ending with the assistant cue (the generation prompt).
        response_prefix: text between the cue and the assistant response (training only).
        response_suffix: text closing the assistant response (training only).
        bos_in_text: the rendered text carries the BOS; tokenize it with ``add_special_tokens=False``.
        stop_strings: special tokens that end an answer besides the tokenizer's eos.
        image_token: the token the processor expands into the image's patch tokens.
        strip_text: strip whitespace at the two ends of the user text (first text part on the
            left, last text part on the right).
        revision: bumped whenever the rendered text changes, so cached answers of the old text are
            not reused (it enters the adapters' fingerprints through :attr:`tag`).
    """

    name: str
    image: Callable[[int], str]
    head: str
    tail: str
    response_prefix: str
    response_suffix: str
    bos_in_text: bool
    stop_strings: tuple[str, ...] = ()
    image_token: str = IMAGE_TOKEN
    strip_text: bool = False
    revision: int = 1

    @property
    def tag(self) -> str:
        """The name, with ``@revision`` from revision 2 on (what fingerprints record)."""
        return self.name if self.revision == 1 else f"{self.name}@{self.revision}"


# The system message of Mantis's ``conv_llama_3`` (mantis-vl 0.0.5, mantis/models/conversation.py).
MANTIS_LLAMA3_SYSTEM = "You are a pirate chatbot who always responds in pirate speak!"


@dataclass(frozen=True)
class TrainingText:
    """``full`` = ``prompt`` + response; labels of the first ``len(prompt)`` characters are masked."""

    full: str
    prompt: str

    @property
    def response(self) -> str:
        return self.full[len(self.prompt):]


FORMATS: dict[str, PromptFormat] = {
    "mantis_llama3": PromptFormat(
        name="mantis_llama3",
        image=lambda i: f"(image {i}: <Image>{IMAGE_TOKEN}</Image>)",
        head=("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + MANTIS_LLAMA3_SYSTEM
              + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"),
        tail="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        response_prefix="",
        response_suffix="<|eot_id|>",
        bos_in_text=True,
        stop_strings=("<|eot_id|>",),
        revision=2,
    ),
    "llava_med_mistral": PromptFormat(
        name="llava_med_mistral",
        image=lambda i: f"{IMAGE_TOKEN}\n",
        head="[INST] ",
        tail=" [/INST]",
        response_prefix=" ",
        response_suffix="</s>",
        bos_in_text=False,
        strip_text=True,
        revision=2,
    ),
    "idefics2": PromptFormat(
        name="idefics2",
        image=lambda i: IMAGE_TOKEN,
        head="User:",
        tail="<end_of_utterance>\nAssistant:",
        response_prefix="",
        response_suffix="<end_of_utterance>\n",
        bos_in_text=False,
        stop_strings=("<end_of_utterance>",),
        revision=2,
    ),
}


def get_format(name: str) -> PromptFormat:
    """The format called ``name``; raises MedmimError listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise MedmimError(f"unknown prompt format {name!r}; known: {', '.join(sorted(FORMATS))}") from None


def _format(fmt: str | PromptFormat) -> PromptFormat:
    return fmt if isinstance(fmt, PromptFormat) else get_format(fmt)


def render_content(fmt: str | PromptFormat, prompt: Prompt) -> str:
    """The user content: text parts verbatim, image ``i`` (1-based, in prompt order) as its placeholder."""
    spec = _format(fmt)
    texts = [i for i, part in enumerate(prompt.parts) if isinstance(part, TextPart)]
    pieces: list[str] = []
    n = 0
    for i, part in enumerate(prompt.parts):
        if isinstance(part, ImagePart):
            n += 1
            pieces.append(spec.image(n))
        elif isinstance(part, TextPart):
            text = part.text
            if spec.strip_text and i == texts[0]:
                text = text.lstrip()
            if spec.strip_text and i == texts[-1]:
                text = text.rstrip()
            pieces.append(text)
    return "".join(pieces)


def render_prompt(fmt: str | PromptFormat, prompt: Prompt) -> str:
    """The evaluation prompt: user turn plus the assistant cue, nothing after it."""
    spec = _format(fmt)
    return spec.head + render_content(spec, prompt) + spec.tail


def render_training(fmt: str | PromptFormat, prompt: Prompt, response: str) -> TrainingText:
    """The training text with ``response`` closed by the format's end marker, and its prompt prefix."""
    spec = _format(fmt)
    prefix = render_prompt(spec, prompt)
    full = prefix + spec.response_prefix + response + spec.response_suffix
    if not full.startswith(prefix):  # pragma: no cover - guards future edits of the formats
        raise AssertionError(f"format {spec.name}: the prompt is not a prefix of the training text")
    return TrainingText(full=full, prompt=prefix)


def default_format(folder: Path) -> str:
    """The prompt format a LLaVA-architecture checkpoint folder declares or implies: its
    config.json's ``medmim_prompt_format``, else ``llava_med_mistral`` for a Mistral text model, else
    ``mantis_llama3``. Evaluation (``hf-llava``) and training (``sft-llava``) both use it."""
    try:
        config: Any = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if not isinstance(config, dict):
        config = {}
    declared = config.get("medmim_prompt_format")
    if isinstance(declared, str) and declared:
        return declared
    text = config.get("text_config") or {}
    return "llava_med_mistral" if text.get("model_type") == "mistral" else "mantis_llama3"
