"""Image thumbnails embedded once per image as CSS classes with base64 PNG data URLs.

The same image recurs across models (and often across items), so each file is encoded once into a
``.tN { background-image: url(data:image/png;base64,...) }`` rule and every use is a ``<span>``
with that class: the report stays self-contained without repeating the bytes. PIL is imported on
first use only.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

THUMB_PX = 96


class ThumbnailSheet:
    """Collects thumbnails of image files and renders them as one block of CSS rules."""

    def __init__(self, size: int = THUMB_PX) -> None:
        self.size = size
        self._classes: dict[str, str] = {}
        self._rules: list[str] = []
        self.failures: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._rules)

    def class_for(self, path: str | Path) -> str | None:
        """The CSS class showing ``path`` shrunk to fit ``size`` px, or ``None`` when it cannot be read.

        Why it failed is kept in :attr:`failures` (path -> reason).
        """
        key = str(path)
        if key in self._classes:
            return self._classes[key]
        if key in self.failures:
            return None
        try:
            data = self._encode(Path(key))
        except FileNotFoundError:
            self.failures[key] = "missing"
            return None
        except Exception as exc:  # any unreadable image only costs its thumbnail
            self.failures[key] = f"unreadable ({type(exc).__name__})"
            return None
        name = f"t{len(self._rules)}"
        self._classes[key] = name
        self._rules.append(f".{name}{{background-image:url(data:image/png;base64,{data})}}")
        return name

    def _encode(self, path: Path) -> str:
        from PIL import Image

        with Image.open(path) as source:
            source.draft("RGB", (self.size, self.size))  # JPEG: decode at reduced size, much faster
            image = source.convert("L" if source.mode in ("L", "I", "I;16", "F", "1") else "RGB")
        image.thumbnail((self.size, self.size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def css(self) -> str:
        """The CSS rules of every thumbnail made so far, one per line."""
        return "\n".join(self._rules)
