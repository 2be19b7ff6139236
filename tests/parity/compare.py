"""One comparison helper for every parity check: text byte for byte, token ids exactly, pixel tensors
exactly for integer data and to 1e-6 otherwise. A mismatch fails with the first place it differs."""
from __future__ import annotations

from typing import Any, Sequence

import pytest

PIXEL_ATOL = 1e-6


class ParityMismatch(AssertionError):
    """Our rendering differs from the reference's."""


def _first_difference(ours: Sequence[Any], ref: Sequence[Any]) -> int:
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a != b:
            return i
    return min(len(ours), len(ref))


def same_text(what: str, ours: str, ref: str) -> None:
    """Byte-for-byte equality of two rendered strings."""
    if ours.encode() != ref.encode():
        i = _first_difference(ours, ref)
        raise ParityMismatch(f"{what}: text differs at character {i}: ours {ours[max(0, i - 30):i + 30]!r} "
                             f"vs reference {ref[max(0, i - 30):i + 30]!r} (lengths {len(ours)}, {len(ref)})")


def same_ids(what: str, ours: Sequence[int], ref: Sequence[int]) -> None:
    """Exact equality of two token id sequences."""
    ours, ref = [int(x) for x in ours], [int(x) for x in ref]
    if ours != ref:
        i = _first_difference(ours, ref)
        raise ParityMismatch(f"{what}: token ids differ at position {i}: ours {ours[max(0, i - 5):i + 5]} vs "
                             f"reference {ref[max(0, i - 5):i + 5]} (lengths {len(ours)}, {len(ref)})")


def same_pixels(what: str, ours: Any, ref: Any) -> None:
    """Equal shapes, then exact equality for integer tensors or max |diff| <= 1e-6 otherwise."""
    import numpy as np

    a = np.asarray(ours.float().numpy() if hasattr(ours, "float") and ours.dtype.is_floating_point else
                   ours.numpy() if hasattr(ours, "numpy") else ours)
    b = np.asarray(ref.float().numpy() if hasattr(ref, "float") and ref.dtype.is_floating_point else
                   ref.numpy() if hasattr(ref, "numpy") else ref)
    if a.shape != b.shape:
        raise ParityMismatch(f"{what}: pixel shapes differ: ours {a.shape} vs reference {b.shape}")
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        bad = np.argwhere(a != b)
        if bad.size:
            raise ParityMismatch(f"{what}: {len(bad)} integer pixel(s) differ, first at {tuple(bad[0])}")
        return
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if diff.max(initial=0.0) > PIXEL_ATOL:
        where = tuple(int(x) for x in np.unravel_index(int(diff.argmax()), diff.shape))
        raise ParityMismatch(f"{what}: pixels differ by up to {diff.max():.3g} (> {PIXEL_ATOL}) at {where}")


def same_value(what: str, ours: Any, ref: Any) -> None:
    """Plain equality (generation settings: eos ids, greedy flags, stop strings)."""
    if ours != ref:
        raise ParityMismatch(f"{what}: ours {ours!r} vs reference {ref!r}")


def rejects(check: Any, *args: Any) -> str:
    """The message with which ``check(*args)`` rejects (for the self-check); fails if it accepts."""
    with pytest.raises(ParityMismatch) as info:
        check(*args)
    return str(info.value)
