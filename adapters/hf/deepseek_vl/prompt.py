"""The DeepSeek-VL chat prompt, rendered in one place for both ``hf-deepseek-vl`` routes (pure Python).

DeepSeek-VL's processor renders its ``deepseek`` conversation template: the system prompt, a blank
line, ``User: `` + the stripped user content, a blank line and the ``Assistant:`` cue. Each image is
an ``<image_placeholder>`` tag at its position in the text (the processor expands it into the
image's 576 embedding slots); several tags in one message is how DeepSeek-VL takes several images.
The tokenizer adds the BOS. The template stops an answer at the end-of-sentence token or at a new
``User:`` turn.
"""
from __future__ import annotations

from medmim_eval.prompt_formats import PromptFormat
from medmim_eval.schema import Prompt

SYSTEM_PROMPT = ("You are a helpful language and vision assistant. You are able to understand the visual "
                 "content that the user provides, and assist the user with a variety of tasks using natural "
                 "language.")
IMAGE_TAG = "<image_placeholder>"
END_OF_SENTENCE = "<｜end▁of▁sentence｜>"
STOP_STRINGS = (END_OF_SENTENCE, "User:")


def render_deepseek_vl(prompt: Prompt, image_token: str = IMAGE_TAG, system: str = SYSTEM_PROMPT) -> str:
    """The text handed to the DeepSeek-VL processor: every image as ``image_token`` at its place."""
    content = prompt.render(image_token).strip()
    head = f"{system}\n\n" if system else ""
    return f"{head}User: {content}\n\nAssistant:"


def deepseek_vl_format(image_token: str = IMAGE_TAG) -> PromptFormat:
    """The format as a :class:`PromptFormat` (stop strings, image token) for the shared decoding helpers."""
    return PromptFormat(name="deepseek_vl", image=lambda i: image_token, head=f"{SYSTEM_PROMPT}\n\nUser: ",
                        tail="\n\nAssistant:", response_prefix=" ", response_suffix=END_OF_SENTENCE,
                        bos_in_text=False, stop_strings=STOP_STRINGS, image_token=image_token)
