"""Image fingerprints for the contamination audit: SHA-256 of the file bytes (exact duplicates) and
64-bit pHash and dHash from ``imagehash`` (near duplicates), with the Hamming thresholds measured by
``benchmarks/bench_near_duplicates.py`` on real VQA-RAD images.

Two images are near duplicates when BOTH the pHash distance is at most :data:`PHASH_MAX` and the
dHash distance at most :data:`DHASH_MAX` (bits out of 64).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medmim_eval.errors import MedmimError

# Chosen by measurement (benchmarks/bench_near_duplicates.py; README "Contamination audit").
PHASH_MAX = 8
DHASH_MAX = 14
HASH_BITS = 64


@dataclass(frozen=True)
class ImageHashes:
    """One image file's fingerprints; ``phash``/``dhash`` are 64-bit integers."""

    sha256: str
    phash: int
    dhash: int


def _imagehash():  # type: ignore[no-untyped-def]
    try:
        import imagehash
    except ImportError:
        raise MedmimError("the contamination audit needs the 'imagehash' package: "
                          "pip install 'medmim-eval[audit]'") from None
    return imagehash


def perceptual_hashes(image: "object") -> tuple[int, int]:
    """(pHash, dHash) of a PIL image as 64-bit integers."""
    imagehash = _imagehash()
    return int(str(imagehash.phash(image)), 16), int(str(imagehash.dhash(image)), 16)


def hash_file(path: Path) -> ImageHashes:
    """Fingerprints of one image file.

    Raises:
        OSError: the file is missing or cannot be decoded (PIL's error).
    """
    from PIL import Image

    data = path.read_bytes()
    with Image.open(path) as image:
        image.load()
        phash, dhash = perceptual_hashes(image)
    return ImageHashes(hashlib.sha256(data).hexdigest(), phash, dhash)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distances of two broadcastable uint64 arrays."""
    x = np.bitwise_xor(a, b)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    return np.unpackbits(x[..., None].view(np.uint8), axis=-1).sum(axis=-1).astype(np.int64)


class NearIndex:
    """All-pairs near-duplicate lookup over a fixed list of fingerprints (vectorised, in blocks)."""

    def __init__(self, hashes: Sequence[ImageHashes], phash_max: int = PHASH_MAX, dhash_max: int = DHASH_MAX):
        self.phash = np.array([h.phash for h in hashes], dtype=np.uint64)
        self.dhash = np.array([h.dhash for h in hashes], dtype=np.uint64)
        self.phash_max, self.dhash_max = phash_max, dhash_max

    def matches(self, query: ImageHashes) -> list[int]:
        """Positions of the indexed fingerprints that are near duplicates of ``query``."""
        if not len(self.phash):
            return []
        close = ((hamming(self.phash, np.uint64(query.phash)) <= self.phash_max)
                 & (hamming(self.dhash, np.uint64(query.dhash)) <= self.dhash_max))
        return np.flatnonzero(close).tolist()
