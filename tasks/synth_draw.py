"""Drawing primitives of the synthetic suite: small grayscale "scans" with bright findings.

Pure PIL, driven only by the ``random.Random`` passed in, so a seed fixes every pixel. A scan is
a dark field with a mid-gray, smoothly textured body oval; findings are bright, roughly
elliptical blobs drawn on top. Tissue never reaches ``FINDING_MIN`` and findings never fall
below it, so "pixels at or above ``THRESHOLD``" is the finding area (up to blurred edges).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageFilter

SIZE = 128
THRESHOLD = 150
TISSUE_MAX = 104
FINDING_MIN = 185

_COARSE_LUT = [50 + v * 40 // 255 for v in range(256)]  # tissue: 50..90
_FINE_LUT = [v * 14 // 255 for v in range(256)]  # + 0..14 grain
_SPECKLE_LUT = [v * 18 // 255 for v in range(256)]  # finding texture: 0..18 subtracted
_BACKGROUND = 4


@dataclass(frozen=True)
class Body:
    """The body oval of a scan: centre and semi-axes in pixels."""

    cx: float
    cy: float
    rx: float
    ry: float

    @classmethod
    def random(cls, rng: random.Random) -> "Body":
        return cls(
            cx=SIZE / 2 + rng.uniform(-3, 3),
            cy=SIZE / 2 + rng.uniform(-3, 3),
            rx=rng.uniform(50, 57),
            ry=rng.uniform(44, 57),
        )


@dataclass(frozen=True)
class Blob:
    """A finding: an ellipse (semi-axes ``a`` >= ``b``) rotated by ``angle``, edge wobbled."""

    x: float
    y: float
    a: float
    b: float
    angle: float = 0.0
    wobble: float = 0.05
    lobes: int = 4
    phase: float = 0.0

    @property
    def extent(self) -> float:
        """The largest distance of the outline from the centre."""
        return max(self.a, self.b) * (1 + self.wobble)

    def moved(self, dx: float, dy: float) -> "Blob":
        return Blob(self.x + dx, self.y + dy, self.a, self.b, self.angle, self.wobble, self.lobes, self.phase)

    def scaled(self, factor: float) -> "Blob":
        return Blob(self.x, self.y, self.a * factor, self.b * factor, self.angle, self.wobble, self.lobes, self.phase)


def round_blob(rng: random.Random, x: float, y: float, r: float) -> Blob:
    """A roughly circular finding of radius ``r`` with a random, gentle edge wobble."""
    return Blob(x, y, r, r, rng.uniform(0, math.pi), rng.uniform(0.03, 0.07), rng.randint(3, 5), rng.uniform(0, 2 * math.pi))


def polygon(blob: Blob, steps: int = 72) -> list[tuple[float, float]]:
    cos_a, sin_a = math.cos(blob.angle), math.sin(blob.angle)
    points = []
    for i in range(steps):
        t = 2 * math.pi * i / steps
        k = 1 + blob.wobble * math.sin(blob.lobes * t + blob.phase)
        u, v = blob.a * k * math.cos(t), blob.b * k * math.sin(t)
        points.append((blob.x + u * cos_a - v * sin_a, blob.y + u * sin_a + v * cos_a))
    return points


def place(
    rng: random.Random, body: Body, extents: list[float], gap: float = 6.0, fixed: list[Blob] | None = None
) -> list[tuple[float, float]]:
    """Centres inside ``body`` for findings of the given extents, apart from each other and ``fixed``.

    Rejection sampling with the caller's generator (so deterministic); after many misses the gap
    requirement is relaxed rather than looping forever.
    """
    taken: list[tuple[float, float, float]] = [(b.x, b.y, b.extent) for b in (fixed or [])]
    centres: list[tuple[float, float]] = []
    for extent in extents:
        margin = extent + 5
        sx, sy = max(body.rx - margin, 1.0), max(body.ry - margin, 1.0)
        for attempt in range(400):
            # uniform in the shrunken ellipse
            while True:
                u, v = rng.uniform(-1, 1), rng.uniform(-1, 1)
                if u * u + v * v <= 1:
                    break
            x, y = body.cx + u * sx, body.cy + v * sy
            need = gap if attempt < 300 else gap / 3
            if all(math.hypot(x - tx, y - ty) >= extent + te + need for tx, ty, te in taken):
                break
        taken.append((x, y, extent))
        centres.append((x, y))
    return centres


def _noise(rng: random.Random, side: int, lut: list[int], resample: Image.Resampling) -> Image.Image:
    small = Image.frombytes("L", (side, side), rng.randbytes(side * side))
    return small.resize((SIZE, SIZE), resample).point(lut)


def draw_scan(rng: random.Random, body: Body, blobs: list[Blob]) -> Image.Image:
    """One grayscale scan with the given findings (an empty list draws none)."""
    tissue = ImageChops.add(
        _noise(rng, 16, _COARSE_LUT, Image.Resampling.BICUBIC),
        _noise(rng, 64, _FINE_LUT, Image.Resampling.BILINEAR),
    )
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).ellipse(
        (body.cx - body.rx, body.cy - body.ry, body.cx + body.rx, body.cy + body.ry), fill=255
    )
    image = Image.new("L", (SIZE, SIZE), _BACKGROUND)
    image.paste(tissue, (0, 0), mask.filter(ImageFilter.GaussianBlur(2)))
    if blobs:
        intensity = rng.randint(FINDING_MIN + 18, 240)
        bright = ImageChops.subtract(
            Image.new("L", (SIZE, SIZE), intensity), _noise(rng, 32, _SPECKLE_LUT, Image.Resampling.BILINEAR)
        )
        finding = Image.new("L", (SIZE, SIZE), 0)
        draw = ImageDraw.Draw(finding)
        for blob in blobs:
            draw.polygon(polygon(blob), fill=255)
        image = Image.composite(bright, image, finding.filter(ImageFilter.GaussianBlur(0.8)))
    return image
