"""``InternVLProcessor`` without its video processor, so it loads where torchvision is absent.

transformers' ``InternVLVideoProcessor`` imports torchvision, and ``InternVLProcessor`` refuses to
be built without one when torchvision is missing. Images never touch the video path, so this
subclass declares only the image processor and the tokenizer; loading, tiling
(``GotOcr2ImageProcessor`` / its ``Pil`` fallback) and token expansion are the parent's.
"""
from __future__ import annotations

from typing import Any

from transformers import InternVLProcessor


class ImageOnlyInternVLProcessor(InternVLProcessor):
    """An InternVL processor for images and text only (``videos=`` is not supported)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, image_seq_length: int = 256,
                 chat_template: str | None = None, **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, None, image_seq_length, chat_template, **kwargs)
