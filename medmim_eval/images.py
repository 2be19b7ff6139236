"""Checking that every image of the selected samples exists and decodes, before any model runs."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from medmim_eval.schema import Sample


@dataclass
class ImageCheck:
    missing: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # path -> sample keys
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason
    checked: int = 0

    @property
    def bad_paths(self) -> set[str]:
        return set(self.missing) | set(self.unreadable)

    def sample_ok(self, sample: Sample) -> bool:
        return not any(p in self.missing or p in self.unreadable for p in sample.image_paths)


def check_images(samples: Iterable[Sample], decode: bool = True) -> ImageCheck:
    """Existence of every image, and (with ``decode``) that PIL can read it."""
    result = ImageCheck()
    seen: set[str] = set()
    for sample in samples:
        for path in sample.image_paths:
            if path in seen:
                if path in result.missing:
                    result.missing[path].append(sample.key)
                continue
            seen.add(path)
            result.checked += 1
            if not Path(path).is_file():
                result.missing[path].append(sample.key)
            elif decode:
                reason = unreadable_reason(path)
                if reason:
                    result.unreadable[path] = reason
    return result


def unreadable_reason(path: str) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None
