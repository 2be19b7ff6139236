"""The skeleton every in-process family fills in (llava, idefics2, internvl, deepseek_vl, med_flamingo).

What is the same for all of them lives here: the common set-up (model id, checkpoint folder and its
lineage, placement, ``max_images`` and ``batch`` from the options, the capabilities), ``generate``
(prepare each sample, refuse what must be refused, batch the rest through ``run`` in a worker thread:
:func:`~medmim_eval.adapters.hf.common.answer_requests`) and ``aclose``. A family implements
``prepare_sample`` (text, images in prompt order, the record) and ``run`` (a prepared batch to
results), loads its own processor and model after ``_setup``, and writes its own ``fingerprint``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from medmim_eval.adapter import Capabilities, GenerationRequest, GenerationResult, GenerationSettings
from medmim_eval.adapters.hf.common import Placement, Prepared, answer_requests, placement, read_lineage
from medmim_eval.schema import Sample


class InProcessAdapter:
    """Base of the in-process adapters; see the module docstring for what a family adds."""

    model_id: str
    path: Path
    placement: Placement
    max_images: int
    capabilities: Capabilities
    #: the attribute ``aclose`` releases (the loaded model, or the route that holds it)
    released = "model"

    def _setup(self, torch: Any, model_id: str, path: Path, options: dict[str, str], *, batch: int,
               max_images: int, needs_gpu: bool = False, lineage: bool = True) -> None:
        """The common set-up: ``batch`` and ``max_images`` are the family's defaults, which the
        ``batch=`` and ``max_images=`` options override (validated before: see the plugin's options)."""
        self.torch = torch
        self.model_id, self.path = model_id, path
        self.lineage = read_lineage(path) if lineage else None
        self.placement = placement(torch, options)
        self.max_images = int(options.get("max_images") or max_images)
        self.capabilities = Capabilities(max_images=self.max_images, interleaved=True,
                                         batch_size=int(options.get("batch") or batch), max_concurrency=1,
                                         needs_gpu=needs_gpu)

    def prepare_sample(self, sample: Sample) -> Prepared:  # pragma: no cover - every family overrides it
        raise NotImplementedError

    def run(self, prepared: list[Any], settings: GenerationSettings) -> list[GenerationResult]:  # pragma: no cover
        raise NotImplementedError

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        """One result per request, in order; a refused or unreadable sample comes back as its exception."""
        return await answer_requests(requests, self.prepare_sample, self.run)

    async def aclose(self) -> None:
        setattr(self, self.released, None)
