"""What one sweep cell reserves: GPUs from its adapter's registry entry (``tp`` x ``dp`` for vLLM), CPUs per cell."""
from __future__ import annotations

from dataclasses import dataclass

from medmim_eval.adapter import ModelSpec
from medmim_eval.errors import MedmimError
from medmim_eval.registry import AdapterEntry


@dataclass(frozen=True)
class Resources:
    gpus: int = 0
    cpus: int = 1

    def describe(self) -> str:
        return f"{self.gpus} GPU, {self.cpus} CPU" if self.gpus else f"{self.cpus} CPU"


def parse_gpu_overrides(items: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``--gpus MODEL=N`` items -> {model id: N}."""
    overrides: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise MedmimError(f"--gpus {item!r}: expected MODEL=N with N a whole number, e.g. --gpus internvl2-8b=2")
        overrides[name.strip()] = int(value)
    return overrides


def cell_resources(spec: ModelSpec, entry: AdapterEntry, *, cpus: int = 1,
                   gpu_overrides: dict[str, int] | None = None) -> Resources:
    """The resources a cell of ``spec`` asks its executor for.

    An override from ``--gpus`` wins; a model whose prompts go to a server off this machine
    (``remote``: API models, ``vllm`` with ``base_url``) takes no GPU; otherwise the adapter entry says.
    """
    overrides = gpu_overrides or {}
    if spec.model_id in overrides:
        return Resources(overrides[spec.model_id], cpus)
    options = spec.option_dict
    if entry.remote_host(spec.target, options):
        return Resources(0, cpus)
    return Resources(max(0, entry.gpus_needed(spec.target, options)), cpus)
