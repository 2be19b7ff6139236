"""One model on one task's pending samples: batches, concurrency, the response cache, one record per sample.

A cell sees its run only through a :class:`CellContext`. A ``generate`` that breaks the adapter
contract (a wrong number of results, an item that is neither a result nor an exception) raises
:class:`~medmim_eval.errors.ContractError` naming the plugin and adapter; nothing of that batch is
recorded, so it is never retried as if it were a model's error.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medmim_eval.adapter import GenerationRequest, GenerationResult, GenerationSettings, ModelAdapter, result_problem
from medmim_eval.cache import ImageHasher, ResponseCache, cache_key
from medmim_eval.errors import ContractError, TooFewImagesError, TooManyImagesError
from medmim_eval.flags import has_too_many_images
from medmim_eval.manifest import now
from medmim_eval.schema import ModelError, PromptRecord, Sample, SampleRecord
from medmim_eval.scoring import score_answer_explained

if TYPE_CHECKING:
    from medmim_eval.metrics import OpenScorer
    from medmim_eval.progress import RunDisplay
    from medmim_eval.records import RecordStore
    from medmim_eval.runner import RunSummary


@dataclass
class CellContext:
    """What a cell uses of its run: settings, where records and cached answers go, the scorer,
    the counters and display it advances, and who the adapter is (for contract errors)."""

    settings: GenerationSettings
    concurrency: int | None
    store: "RecordStore"
    scorer: "OpenScorer"
    summary: "RunSummary"
    display: "RunDisplay"
    hasher: ImageHasher
    cache: ResponseCache | None = None
    plugin: str = ""
    adapter_name: str = ""


@dataclass
class _Answered:
    """A batch answered and not yet recorded."""

    batch: list[Sample]
    outputs: dict[str, "GenerationResult | BaseException"]
    from_cache: set[str]
    keys: dict[str, str]
    latency: float
    use_cache: bool


class CellRunner:
    """Evaluates one model on one task's pending samples."""

    def __init__(self, context: CellContext, adapter: ModelAdapter, fingerprint: dict[str, Any],
                 previous: dict[str, SampleRecord]) -> None:
        self.context, self.adapter, self.fingerprint, self.previous = context, adapter, fingerprint, previous

    async def run(self, pending: list[Sample]) -> None:
        """Every batch of ``pending``, ``max_concurrency`` at a time. Raises ContractError (the other
        batches in flight cancelled) when the adapter breaks its contract."""
        caps = self.adapter.capabilities
        size = max(1, caps.batch_size)
        batches = [pending[i:i + size] for i in range(0, len(pending), size)]
        limit = self.context.concurrency
        workers = max(1, min(limit, caps.max_concurrency) if limit else caps.max_concurrency)
        queue: asyncio.Queue[list[Sample]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)

        # With one worker, record before the next request: an adapter that computes inside generate
        # (without awaiting) would otherwise keep the last answer unwritten through its whole next batch.
        pipelined = workers > 1

        async def worker() -> None:
            answered: _Answered | None = None
            try:
                while not queue.empty():
                    upcoming = asyncio.ensure_future(self._answer_batch(queue.get_nowait()))
                    try:
                        if answered is not None:
                            done, answered = answered, None
                            try:  # the next request goes out before this answer is scored and written:
                                await asyncio.sleep(0)  # a server answering many at once is not left idle
                            finally:
                                self._record_batch(done)  # even when cancelled: an answer received is kept
                        answered = await upcoming
                    except BaseException:
                        upcoming.cancel()
                        raise
                    if not pipelined:
                        done, answered = answered, None
                        self._record_batch(done)
            finally:
                if answered is not None:
                    self._record_batch(answered)

        running = [asyncio.ensure_future(worker()) for _ in range(min(workers, len(batches)) or 1)]
        try:
            await asyncio.gather(*running)
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise

    async def _answer_batch(self, batch: list[Sample]) -> "_Answered":
        """The batch's outcomes: refused (too many or too few images), from the cache, or generated."""
        ctx = self.context
        settings = ctx.settings
        outputs: dict[str, GenerationResult | BaseException] = {}
        from_cache: set[str] = set()
        keys: dict[str, str] = {}
        limit, least = self.adapter.capabilities.max_images, self.adapter.capabilities.min_images
        for sample in batch:  # never sent, never truncated: recorded and counted in every view's footer
            if len(sample.images) > limit:
                outputs[sample.key] = TooManyImagesError(len(sample.images), limit, self.adapter.model_id)
            elif len(sample.images) < least:  # e.g. @noimage for a model that needs an image
                outputs[sample.key] = TooFewImagesError(len(sample.images), least, self.adapter.model_id)
        use_cache = ctx.cache is not None and self.adapter.capabilities.cacheable
        if use_cache:
            for sample in batch:
                if sample.key in outputs:
                    continue
                keys[sample.key] = cache_key(self.fingerprint, sample, settings, ctx.hasher)
                hit = ctx.cache.get(keys[sample.key])  # type: ignore[union-attr]
                if hit is not None:
                    outputs[sample.key] = hit
                    from_cache.add(sample.key)
        misses = [s for s in batch if s.key not in outputs]
        started = time.perf_counter()
        if misses:
            requests = [GenerationRequest(sample=s, settings=settings) for s in misses]
            try:
                results = await self.adapter.generate(requests)
            except Exception as exc:  # the batch failed; each sample records the error
                results = [exc] * len(requests)
            else:
                problem = result_problem(results, len(requests))
                if problem is not None:
                    raise ContractError(f"plugin '{ctx.plugin}', adapter '{ctx.adapter_name}' (model "
                                        f"'{self.adapter.model_id}'): {problem}; nothing of this batch was "
                                        "recorded. This is a bug in the plugin; a rerun cannot fix it")
            for sample, result in zip(misses, results):
                outputs[sample.key] = result
        latency = (time.perf_counter() - started) / max(1, len(misses))
        return _Answered(batch, outputs, from_cache, keys, latency, use_cache)

    def _record_batch(self, answered: "_Answered") -> None:
        """One record per sample of the batch, the cache filled, the counters and display advanced."""
        ctx = self.context
        batch, outputs, from_cache, keys, latency, use_cache = (answered.batch, answered.outputs, answered.from_cache,
                                                                answered.keys, answered.latency, answered.use_cache)
        errors = flagged = 0
        for sample in batch:
            result = outputs[sample.key]
            record = self._record(sample, result, latency if sample.key not in from_cache else 0.0)
            record.cached = sample.key in from_cache
            if has_too_many_images(record):
                flagged += 1
            elif record.error is not None:
                errors += 1
            elif use_cache and sample.key not in from_cache and isinstance(result, GenerationResult):
                ctx.cache.put(keys[sample.key], result)  # type: ignore[union-attr]
            ctx.store.append(record)
        if use_cache:
            ctx.cache.commit()  # type: ignore[union-attr]
        ctx.summary.computed += len(batch) - len(from_cache)
        ctx.summary.from_cache += len(from_cache)
        ctx.summary.errors += errors
        ctx.summary.too_many_images += flagged
        ctx.display.advance(len(batch), errors)

    def _record(self, sample: Sample, result: GenerationResult | BaseException, latency: float) -> SampleRecord:
        base = dict(
            key=sample.key, task=sample.task, model=self.adapter.model_id, kind=sample.kind,
            ability=sample.ability, source=sample.source, item_id=sample.item_id,
            n_images=len(sample.images), n_options=len(sample.options) or None, image_set="|".join(sample.image_set), gold=sample.answer,
            finished_at=now(), control=sample.metadata.get("control"),
            refers_to_position=sample.metadata.get("refers_to_position"), rotation=sample.metadata.get("rotation"),
        )
        if isinstance(result, BaseException):
            previous = self.previous.get(sample.key)
            attempts = (previous.error.attempts if previous and previous.error else 0) + 1
            message = str(result).strip().splitlines()
            error = ModelError(type=type(result).__name__, message=message[0] if message else "", attempts=attempts)
            sent = getattr(result, "sent", None)  # what the adapter sent, when its exception says so
            return SampleRecord(**base, error=error, sent=sent if isinstance(sent, PromptRecord) else None)
        extracted, correct, scores, how = score_answer_explained(sample, result.text, self.context.scorer)
        pending = self.context.scorer.pending_components(result.text) if sample.kind == "open" else []
        return SampleRecord(
            **base, sent=result.sent, output=result.text, extracted=extracted, correct=correct,
            options=dict(sample.options) if sample.kind == "closed" else None, extraction=how,
            scores=scores, scores_pending=pending, latency_s=round(latency, 6), tokens=result.tokens,
        )
