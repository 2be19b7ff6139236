"""The placement options every in-process adapter takes: ``dtype``, ``device``, ``device_map``.

Light (no torch): the plugins' cheap option checks call :func:`placement_problem`; the adapters
turn valid values into a placement with :func:`medmim_eval.adapters.hf.common.placement`.
"""
from __future__ import annotations

import re

DTYPES = ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE = re.compile(r"^(cpu|mps|(cuda|xpu|npu)(:\d+)?)$")


def placement_problem(adapter: str, options: dict[str, str]) -> str | None:
    """Why ``dtype``/``device``/``device_map`` are invalid for ``adapter`` (one line with the fix), or None."""
    dtype, device, device_map = options.get("dtype"), options.get("device"), options.get("device_map")
    if dtype and dtype.lower() not in DTYPES:
        return f"{adapter} dtype={dtype!r}: use bf16, fp16 or fp32"
    if device and not _DEVICE.match(device):
        return f"{adapter} device={device!r}: use cpu, cuda, cuda:N or mps"
    if device_map and device_map not in DEVICE_MAPS:
        return f"{adapter} device_map={device_map!r}: use {', '.join(DEVICE_MAPS)}"
    if device and device_map:
        return f"{adapter}: give device= or device_map=, not both"
    return None


def placement_gpus(target: str | None, options: dict[str, str]) -> int:
    """GPUs an in-process model takes: none with ``device=cpu`` or ``mps``, else one (``device_map=auto``
    spreads over every GPU it sees; give a sweep ``--gpus MODEL=N`` for more)."""
    device = (options.get("device") or "").lower()
    return 0 if device in ("cpu", "mps") else 1
