"""The adapter contract: what a model must provide to be evaluated.

An adapter is any object satisfying :class:`ModelAdapter`. Capabilities are data, not subclasses:
the runner reads them to decide batching, concurrency, caching and image checks. Three optional
parts, each its own Protocol, are used when present: :class:`PreparesForTask` (``prepare``),
:class:`ReportsCost` (``cost_usd``) and :class:`SentOnError` (an exception saying what was sent).
The runner checks an adapter against :class:`ModelAdapter` as soon as its factory returns it
(:func:`contract_problem`), and every ``generate`` result (:func:`result_problem`); a breach is a
:class:`~medmim_eval.errors.ContractError` naming the plugin, never a per-sample error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

from medmim_eval.errors import MedmimError
from medmim_eval.schema import Prompt, PromptRecord, Sample


@dataclass(frozen=True)
class Capabilities:
    """What an adapter can do.

    Attributes:
        max_images: the most images one prompt may carry; samples with more are flagged.
        min_images: the fewest images one prompt may carry (``@noimage`` sends none); fewer are flagged.
        interleaved: accepts images between text pieces (not only before the text).
        batch_size: prompts handed to one ``generate`` call.
        max_concurrency: ``generate`` calls that may run at once.
        needs_gpu: informational; shown by ``list adapters``.
        cacheable: answers may be served from the response cache (off for instant baselines).
            The cache key is the adapter's ``fingerprint()``, the sample (text and image bytes)
            and the generation settings; nothing else. So an adapter whose answers can change
            for any other reason (its code, a prompt template, a server-side model) must put that
            into ``fingerprint()`` (a version string it bumps is enough), or set ``cacheable=False``;
            otherwise a rerun silently serves the old answers.
    """

    max_images: int = 3
    min_images: int = 0
    interleaved: bool = True
    batch_size: int = 1
    max_concurrency: int = 1
    needs_gpu: bool = False
    cacheable: bool = True


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "seed": self.seed}


@dataclass(frozen=True)
class GenerationRequest:
    sample: Sample
    settings: GenerationSettings

    @property
    def prompt(self) -> Prompt:
        return self.sample.prompt


@dataclass
class GenerationResult:
    """One answer. ``sent`` says what reached the model; ``tokens`` its usage, when known."""

    text: str
    sent: PromptRecord | None = None
    tokens: dict[str, int] | None = None


@runtime_checkable
class ModelAdapter(Protocol):
    """A model the runner can evaluate.

    ``generate`` receives up to ``capabilities.batch_size`` requests and returns one item per
    request, in order: a :class:`GenerationResult`, or an exception for a request that failed
    (recorded as an error, never as a wrong answer). Raising fails the whole batch. Returning a
    list of another length, or an item of another type (a ``str``), is a contract error.

    A request holds ``sample`` (a :class:`~medmim_eval.schema.Sample`: ``sample.prompt.parts``, the
    text and image parts in order, ``sample.prompt.images[i].path``, ``sample.kind`` ``closed`` or
    ``open``, ``sample.options`` letter -> text, ``{}`` for an open question) and ``settings``.

    ``fingerprint()`` returns the model's identity (name, checkpoint, weight hashes, settings that
    change answers, a version of the adapter's own code); it is the cache key's model part, so
    change it whenever the same sample could get a different answer (see ``Capabilities.cacheable``).
    ``aclose()`` frees what the adapter holds (servers, workers, GPU memory); it is always called.
    The whole contract, optional parts included: docs/adapter-contract.md.
    """

    model_id: str
    capabilities: Capabilities

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the model: name, checkpoint, weight hashes... Feeds the cache key."""
        ...

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        ...

    async def aclose(self) -> None:
        ...


@runtime_checkable
class PreparesForTask(Protocol):
    """Optional: ``prepare(task, samples)`` is called once per task before its samples are sent
    (with every sample of the task, also those already done), e.g. to build few-shot context."""

    def prepare(self, task: str, samples: Sequence[Sample]) -> None: ...


@runtime_checkable
class ReportsCost(Protocol):
    """Optional: ``cost_usd()`` is the estimated API cost of this invocation (list prices), or None
    when unknown; the runner adds it to the manifest's ``estimated_cost_usd`` and prints it."""

    def cost_usd(self) -> Optional[float]: ...


@runtime_checkable
class SentOnError(Protocol):
    """Optional, for exceptions returned by ``generate``: ``sent`` says what reached the model before
    the request failed; the error record keeps it."""

    sent: Optional[PromptRecord]


REQUIRED_METHODS = ("fingerprint", "generate", "aclose")
CAPABILITY_FIELDS = tuple(Capabilities.__dataclass_fields__)


def contract_problem(adapter: object) -> str | None:
    """What ``adapter`` lacks of :class:`ModelAdapter` (one phrase naming the member), or None."""
    for name in REQUIRED_METHODS:
        member = getattr(adapter, name, None)
        if not callable(member):
            return f"has no {name}() method (the adapter Protocol needs fingerprint, generate and aclose)"
    capabilities = getattr(adapter, "capabilities", None)
    if capabilities is None:
        return "has no capabilities attribute (a medmim_eval.adapter.Capabilities)"
    lacking = [name for name in CAPABILITY_FIELDS if not hasattr(capabilities, name)]
    if lacking:
        return (f"capabilities ({type(capabilities).__name__}) has no {', '.join(lacking)}; use "
                "medmim_eval.adapter.Capabilities")
    return None


def result_problem(results: object, n_requests: int) -> str | None:
    """Why ``results`` is not a valid return of ``generate`` for ``n_requests`` requests, or None."""
    if not isinstance(results, (list, tuple)):
        return f"generate returned {type(results).__name__}, not a list of {n_requests} result(s)"
    if len(results) != n_requests:
        return f"generate returned {len(results)} result(s) for {n_requests} request(s)"
    for index, item in enumerate(results):
        if not isinstance(item, (GenerationResult, BaseException)):
            return (f"generate returned a {type(item).__name__} for request {index + 1}; each item must be a "
                    "GenerationResult or an exception")
    return None


@dataclass(frozen=True)
class AdapterContext:
    """Run-level settings an adapter factory may use."""

    seed: int = 0
    settings: GenerationSettings = field(default_factory=GenerationSettings)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``ADAPTER[:TARGET][,key=value...]``."""

    adapter: str
    target: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def option_dict(self) -> dict[str, str]:
        return dict(self.options)

    @property
    def model_id(self) -> str:
        """The row name in tables: ``label=`` if given, else ``ADAPTER[:TARGET]``."""
        label = self.option_dict.get("label")
        if label:
            return label
        return f"{self.adapter}:{self.target}" if self.target else self.adapter

    def __str__(self) -> str:
        head = f"{self.adapter}:{self.target}" if self.target else self.adapter
        return ",".join([head, *(f"{k}={v}" for k, v in self.options)])


_OPTION = re.compile(r"^[A-Za-z_][\w.-]*=")


def parse_model_specs(text: str) -> list[ModelSpec]:
    """Split ``--models`` into specs: a comma piece of the form ``key=value`` belongs to the
    spec before it, any other piece starts a new spec."""
    specs: list[ModelSpec] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if _OPTION.match(piece):
            if not specs:
                raise MedmimError(f"model option '{piece}' comes before any model name in --models")
            key, _, value = piece.partition("=")
            last = specs[-1]
            specs[-1] = ModelSpec(last.adapter, last.target, (*last.options, (key, value)))
        else:
            adapter, _, target = piece.partition(":")
            specs.append(ModelSpec(adapter, target or None))
    return specs


def spec_from_mapping(item: Any, where: str) -> ModelSpec:
    """A spec from one entry of a ``--models-file`` YAML list (a string or a mapping)."""
    if isinstance(item, str):
        parsed = parse_model_specs(item)
        if len(parsed) != 1:
            raise MedmimError(f"{where}: expected one model spec, got {item!r}")
        return parsed[0]
    if isinstance(item, dict) and isinstance(item.get("adapter"), str):
        options = tuple((str(k), str(v)) for k, v in (item.get("options") or {}).items())
        if item.get("label"):
            options = (*options, ("label", str(item["label"])))
        target = item.get("target")
        return ModelSpec(item["adapter"], str(target) if target is not None else None, options)
    raise MedmimError(f"{where}: each model is a spec string or a mapping with 'adapter', 'target', 'options'")
