"""Adapter options declared as data: an adapter entry lists its ``key=value`` options (name, kind,
default, help) and the core validates a spec against them once, before any model loads, and shows
them in ``medmim-eval list adapters --options``.

Kinds: ``str`` (anything), ``int`` (digits, at least ``minimum``), ``choice`` (one of ``choices``),
``bool`` (``0`` or ``1``). A name ending in ``.*`` declares a family of keys (``env.*``). ``label``
is always allowed (the harness reads it). Checks that involve several options at once (``device``
with ``device_map``, a mode that excludes another option) stay in the adapter's ``check``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

KINDS = ("str", "int", "choice", "bool")
HARNESS_OPTIONS = ("label",)


@dataclass(frozen=True)
class AdapterOption:
    """One ``key=value`` option of an adapter spec.

    ``default`` is what the adapter does without it (text for people, e.g. ``"fp32 on CPU, bf16 on
    GPU"``); ``hint`` replaces ``" or ".join(choices)`` in the error for a wrong choice; ``metavar``
    names the value in listings where the kind says too little (``SECONDS``: a ``str`` option whose
    adapter parses it itself).
    """

    name: str
    kind: str = "str"
    default: str = ""
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    hint: str = ""
    metavar: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"option {self.name}: a choice needs choices")

    def matches(self, key: str) -> bool:
        return key.startswith(self.name[:-1]) if self.name.endswith(".*") else key == self.name

    def problem(self, adapter: str, raw: str) -> str | None:
        """Why ``raw`` is not a valid value (one line naming the fix), or None."""
        if raw == "" or self.kind == "str":
            return None
        if self.kind == "int":
            low = self.minimum
            if not raw.isdigit() or (low is not None and int(raw) < low):
                wanted = "a positive integer" if low == 1 else f"an integer >= {low}" if low is not None else "an integer"
                return f"{adapter} option {self.name}={raw!r} must be {wanted}"
        elif self.kind == "choice" and raw not in self.choices:
            return f"{adapter} {self.name}={raw!r}: use {self.hint or ' or '.join(self.choices)}"
        elif self.kind == "bool" and raw not in ("0", "1"):
            return f"{adapter} {self.name}={raw!r}: use 0 or 1"
        return None


def known_names(declared: Iterable[AdapterOption]) -> list[str]:
    return sorted({o.name for o in declared} | set(HARNESS_OPTIONS))


def options_problem(adapter: str, declared: Sequence[AdapterOption], options: dict[str, str]) -> str | None:
    """Why ``options`` do not fit the declared options of ``adapter`` (one line), or None."""
    unknown = sorted(k for k in options if k not in HARNESS_OPTIONS and not any(o.matches(k) for o in declared))
    if unknown:
        return f"unknown option(s) {', '.join(unknown)}; {adapter} knows {', '.join(known_names(declared))}"
    for option in declared:
        for key, raw in options.items():
            if option.matches(key):
                problem = option.problem(adapter, raw)
                if problem:
                    return problem
    return None


def describe(declared: Sequence[AdapterOption]) -> list[str]:
    """One line per option for ``list adapters --options``."""
    lines = []
    for o in declared:
        kind = o.metavar or ("|".join(o.choices) if o.kind == "choice" else "0|1" if o.kind == "bool" else o.kind.upper())
        default = f" (default: {o.default})" if o.default else ""
        lines.append(f"{o.name}={kind}  {o.help}{default}")
    return lines


def placement_options(device_map: bool = True) -> tuple[AdapterOption, ...]:
    """``dtype``, ``device`` (and ``device_map``): every in-process adapter's placement options."""
    out = [AdapterOption("dtype", default="bf16 on a GPU, fp32 on the CPU", help="bf16, fp16 or fp32"),
           AdapterOption("device", default="cuda if available, else cpu", help="cpu, cuda, cuda:N or mps")]
    if device_map:
        out.append(AdapterOption("device_map", help="auto, balanced, balanced_low_0 or sequential (accelerate); "
                                                     "not with device="))
    return tuple(out)


def batching_options(batch: int, max_images: int = 3) -> tuple[AdapterOption, ...]:
    """``batch`` and ``max_images``, with the adapter's defaults."""
    return (AdapterOption("batch", "int", default=str(batch), help="samples per forward pass", minimum=1),
            AdapterOption("max_images", "int", default=str(max_images), help="images a prompt may hold; more "
                          "are flagged, never truncated", minimum=1))
