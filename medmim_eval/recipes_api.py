"""What a training recipe gets and gives: :class:`TrainRequest` in, a summary dict out.

A recipe is registered with ``register(RecipeEntry(name, description, recipe="module:attr"))``
and called as ``recipe(request)`` by ``medmim-eval train`` (and ``demo``, for ``tiny``). It trains
``request.base`` (or builds its own base) on ``request.data`` into ``request.output`` and returns
the lineage it wrote there. A recipe that brings its own data (``needs=()``) may also implement
:class:`SelfContainedRecipe`; ``medmim-eval demo`` uses the ``tiny`` recipe through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from medmim_eval.datadir import DataPaths
from medmim_eval.errors import MedmimError

if TYPE_CHECKING:
    from medmim_eval.plugins import PluginHost


@dataclass
class TrainRequest:
    """What ``medmim-eval train`` hands a recipe.

    ``host`` is the plugin host, for a recipe that reaches tasks (or other plugins' entries)
    through it; None when a recipe is called directly (it may then create one).
    """

    recipe: str
    recipe_version: str
    output: Path
    data: list[Path] = field(default_factory=list)
    base: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    restart: bool = False
    data_paths: DataPaths | None = None
    progress: bool = True
    rich: bool | None = None
    host: "PluginHost | None" = field(default=None, repr=False, compare=False)


@runtime_checkable
class TrainingRecipe(Protocol):
    """``recipe(request)`` trains and returns the lineage (a JSON-able dict) it wrote to the output."""

    def __call__(self, request: TrainRequest) -> dict[str, Any]: ...


@runtime_checkable
class SelfContainedRecipe(TrainingRecipe, Protocol):
    """A recipe that needs neither ``--data`` nor ``--base`` and can say what it would train on.

    ``default_data(request)`` returns its training files (generating them if needed);
    ``model_key(request)`` names the model that ``request`` (its ``recipe_version``, ``data`` and
    ``overrides``) would train, so a caller can cache the trained model under it.
    """

    def default_data(self, request: TrainRequest) -> list[Path]: ...

    def model_key(self, request: TrainRequest) -> str: ...


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["lr=1e-5", "lora=true,lora_r=8"]`` -> ``{"lr": "1e-5", "lora": "true", "lora_r": "8"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        for piece in filter(None, (p.strip() for p in pair.split(","))):
            key, sep, value = piece.partition("=")
            if not sep or not key:
                raise MedmimError(f"override {piece!r} is not KEY=VALUE (e.g. lr=1e-5 lora=true)")
            out[key.strip().replace("-", "_")] = value.strip()
    return out
