"""One model on one task's pending samples: batches, concurrency, the response cache, one record per sample."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from medmim_eval.adapter import GenerationRequest, GenerationResult, ModelAdapter
from medmim_eval.cache import cache_key
from medmim_eval.errors import TooFewImagesError, TooManyImagesError
from medmim_eval.flags import has_too_many_images
from medmim_eval.manifest import now
from medmim_eval.schema import ModelError, PromptRecord, Sample, SampleRecord
from medmim_eval.scoring import score_answer_explained

if TYPE_CHECKING:
    from medmim_eval.runner import Runner


class CellRunner:
    """Evaluates one model on one task's pending samples."""

    def __init__(self, runner: "Runner", adapter: ModelAdapter, fingerprint: dict[str, Any],
                 previous: dict[str, SampleRecord]) -> None:
        self.runner, self.adapter, self.fingerprint, self.previous = runner, adapter, fingerprint, previous

    async def run(self, pending: list[Sample]) -> None:
        caps = self.adapter.capabilities
        size = max(1, caps.batch_size)
        batches = [pending[i:i + size] for i in range(0, len(pending), size)]
        limit = self.runner.prepared.options.concurrency
        workers = max(1, min(limit, caps.max_concurrency) if limit else caps.max_concurrency)
        queue: asyncio.Queue[list[Sample]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)

        async def worker() -> None:
            while not queue.empty():
                await self._run_batch(queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(min(workers, len(batches)) or 1)))

    async def _run_batch(self, batch: list[Sample]) -> None:
        runner = self.runner
        settings = runner.prepared.options.settings
        outputs: dict[str, GenerationResult | BaseException] = {}
        from_cache: set[str] = set()
        keys: dict[str, str] = {}
        limit, least = self.adapter.capabilities.max_images, self.adapter.capabilities.min_images
        for sample in batch:  # never sent, never truncated: recorded and counted in every view's footer
            if len(sample.images) > limit:
                outputs[sample.key] = TooManyImagesError(len(sample.images), limit, self.adapter.model_id)
            elif len(sample.images) < least:  # e.g. @noimage for a model that needs an image
                outputs[sample.key] = TooFewImagesError(len(sample.images), least, self.adapter.model_id)
        use_cache = runner.cache is not None and self.adapter.capabilities.cacheable
        if use_cache:
            for sample in batch:
                if sample.key in outputs:
                    continue
                keys[sample.key] = cache_key(self.fingerprint, sample, settings, runner.hasher)
                hit = runner.cache.get(keys[sample.key])  # type: ignore[union-attr]
                if hit is not None:
                    outputs[sample.key] = hit
                    from_cache.add(sample.key)
        misses = [s for s in batch if s.key not in outputs]
        started = time.perf_counter()
        if misses:
            requests = [GenerationRequest(sample=s, settings=settings) for s in misses]
            try:
                results = await self.adapter.generate(requests)
                if len(results) != len(requests):
                    raise RuntimeError(f"adapter returned {len(results)} answers for {len(requests)} prompts")
            except Exception as exc:  # the batch failed; each sample records the error
                results = [exc] * len(requests)
            for sample, result in zip(misses, results):
                outputs[sample.key] = result
        latency = (time.perf_counter() - started) / max(1, len(misses))
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
                runner.cache.put(keys[sample.key], result)  # type: ignore[union-attr]
            runner.store.append(record)
        if use_cache:
            runner.cache.commit()  # type: ignore[union-attr]
        runner.summary.computed += len(batch) - len(from_cache)
        runner.summary.from_cache += len(from_cache)
        runner.summary.errors += errors
        runner.summary.too_many_images += flagged
        runner.display.advance(len(batch), errors)

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
        extracted, correct, scores, how = score_answer_explained(sample, result.text, self.runner.scorer)
        pending = self.runner.scorer.pending_components(result.text) if sample.kind == "open" else []
        return SampleRecord(
            **base, sent=result.sent, output=result.text, extracted=extracted, correct=correct,
            options=dict(sample.options) if sample.kind == "closed" else None, extraction=how,
            scores=scores, scores_pending=pending, latency_s=round(latency, 6), tokens=result.tokens,
        )
