"""The Med-Flamingo prompt: OpenFlamingo's interleaving of images and text (pure Python).

Med-Flamingo (snap-stanford/med-flamingo, ``scripts/demo.py``) prompts with a system sentence, then
one chunk per image: ``<image>`` followed by that image's text, each chunk closed by
``<|endofchunk|>``; the last chunk is left open and ends with the answer cue ``Answer:``::

    You are a helpful medical assistant. ... <image>Question: ... Answer: pons.<|endofchunk|>
    <image>Question: ... Answer:

A Med-MIM prompt becomes: the system sentence, the text before the first image (if any), then for
every image ``<image>`` + the text up to the next image (stripped), chunks joined by
``<|endofchunk|>``, and `` Answer:`` at the end. The last non-empty text segment (the question) is
prefixed with ``Question: ``. In OpenFlamingo a text token cross-attends only to the image of its
own chunk, so the question sees the last image directly and the earlier ones through the text
that attended to them -- the model's design, not something a prompt can change.
"""
from __future__ import annotations

from medmim_eval.schema import ImagePart, Prompt, TextPart

SYSTEM_PROMPT = ("You are a helpful medical assistant. You are being provided with images, a question about the "
                 "image and an answer. Follow the examples and answer the last question.")
MEDIA_TOKEN = "<image>"
END_OF_CHUNK = "<|endofchunk|>"
ANSWER_CUE = "Answer:"
QUESTION_CUE = "Question: "


def text_segments(prompt: Prompt) -> list[str]:
    """The text before the first image, then the text after each image, each stripped."""
    segments = [""]
    for part in prompt.parts:
        if isinstance(part, ImagePart):
            segments.append("")
        elif isinstance(part, TextPart):
            segments[-1] += part.text
    return [s.strip() for s in segments]


def render_med_flamingo(prompt: Prompt, system: str = SYSTEM_PROMPT) -> str:
    """The text handed to the Med-Flamingo tokenizer (see the module docstring)."""
    segments = text_segments(prompt)
    filled = [i for i, s in enumerate(segments) if s]
    if filled:
        segments[filled[-1]] = QUESTION_CUE + segments[filled[-1]]
    lead = " ".join(s for s in (system, segments[0]) if s)
    chunks = END_OF_CHUNK.join(MEDIA_TOKEN + s for s in segments[1:])
    body = " ".join(s for s in (lead, chunks) if s)
    return f"{body} {ANSWER_CUE}" if body else ANSWER_CUE
