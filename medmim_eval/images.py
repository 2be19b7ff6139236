"""Images on disk: checking that every image of the selected samples exists and decodes before any
model runs, and loading one as the in-process models and the training recipes see it (8-bit, RGB,
optionally padded to a square)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from medmim_eval.schema import Sample

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N"}


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


def to_8bit(image: "PILImage") -> tuple["PILImage", str | None]:
    """``image`` in a mode JPEG can hold (L or RGB), and a note when the conversion lost something."""
    from PIL import Image

    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        import numpy as np

        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        grey = Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), "L")
        return grey, f"{mode} scaled min-max ({low:g}..{high:g}) to 8-bit"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        flat_mode = "L" if mode == "LA" else "RGB"
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert(flat_mode), f"{mode} alpha composited on black"
    if mode in ("L", "RGB"):
        return image, None
    if mode == "1":
        return image.convert("L"), None
    return image.convert("RGB"), (None if mode == "P" else f"{mode} converted to RGB")


# --- loading, as the in-process models and the training recipes see an image ---
def load_llava_padded(path: str, image_mean: Sequence[float] | None) -> tuple[Any, str | None]:
    """The image at ``path`` padded to a square as LLaVA's ``process_images`` pads it
    (``image_aspect_ratio: pad``), then RGB: a grey image is padded in grey with
    ``int(255 * mean(image_mean))``, a colour one with ``int(255 * m)`` per channel (truncated, as
    LLaVA does), the image centred (LLaVA-Med's own copy jitters by 0 or 1 px at random; we keep
    the lower offset, which is upstream LLaVA's)."""
    from PIL import Image

    mean = list(image_mean or [0.5, 0.5, 0.5])
    with Image.open(path) as image:
        image.load()
        pixels, note = to_8bit(image)
    if pixels.width != pixels.height:
        colour: Any = (int(255 * sum(mean) / len(mean)) if pixels.mode == "L"
                       else tuple(int(float(m) * 255) for m in mean))
        pixels = pad_to_square(pixels, colour)
        note = ", ".join(filter(None, [note, f"padded to {pixels.width}x{pixels.height} with the mean colour"]))
    return pixels.convert("RGB"), note


def pad_to_square(image: Any, colour: tuple[int, ...]) -> Any:
    """``image`` centred on a square canvas of ``colour`` (LLaVA's ``image_aspect_ratio: pad``)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def load_rgb(path: str) -> tuple[Any, str | None]:
    """The image at ``path`` as 8-bit RGB and a note when converting it lost something."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        pixels, note = to_8bit(image)
        return pixels.convert("RGB"), note
