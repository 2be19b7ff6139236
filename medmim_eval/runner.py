"""The runner: evaluates models on prepared tasks, resumably, and writes the run directory.

Finished samples are never recomputed; errored ones are retried on the next invocation. Each
record is appended and flushed as its batch finishes, so a killed run loses only what was in flight.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from medmim_eval.adapter import AdapterContext, GenerationRequest, GenerationResult, ModelAdapter
from medmim_eval.cache import ImageHasher, ResponseCache, cache_key
from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.manifest import add_model, add_task, now, start_manifest
from medmim_eval.plugins import PluginHost
from medmim_eval.progress import QuietDisplay, RunDisplay
from medmim_eval.records import MANIFEST_FILE, RESULTS_FILE, RecordStore, write_json_atomic
from medmim_eval.registry import AdapterEntry
from medmim_eval.run_setup import PreparedRun, PreparedTask
from medmim_eval.schema import ModelError, ModelInfo, Results, Sample, SampleRecord, TaskInfo
from medmim_eval.scoring import aggregate, aggregate_by_source, finish_pending, score_answer
from medmim_eval.stats import BootstrapSettings

CACHE_FILE = "responses.sqlite"


@dataclass
class RunSummary:
    run_dir: str
    results: Results
    computed: int = 0
    reused: int = 0
    from_cache: int = 0
    errors: int = 0
    model_failures: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)


class _Cell:
    """Evaluates one model on one task's pending samples."""

    def __init__(self, runner: "Runner", adapter: ModelAdapter, fingerprint: dict[str, Any], task: PreparedTask,
                 previous: dict[str, SampleRecord]) -> None:
        self.runner, self.adapter, self.fingerprint = runner, adapter, fingerprint
        self.task, self.previous = task, previous
        # Open records waiting for batched metrics: this run's, plus any a killed run left behind.
        self.pending: list[SampleRecord] = [r for r in previous.values() if r.done and r.scores_pending]

    def finish_scoring(self) -> None:
        """Batched metrics (BERTScore) over all the task's open answers, appended as final records."""
        references = {s.key: s.answer for s in self.task.samples}
        pending = [r for r in self.pending if r.key in references]
        for record in finish_pending(pending, references, self.runner.scorer):
            self.runner.store.append(record)
        self.pending = []

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
        use_cache = runner.cache is not None and self.adapter.capabilities.cacheable
        if use_cache:
            for sample in batch:
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
        errors = 0
        for sample in batch:
            result = outputs[sample.key]
            record = self._record(sample, result, latency if sample.key not in from_cache else 0.0)
            record.cached = sample.key in from_cache
            if record.error is not None:
                errors += 1
            elif use_cache and sample.key not in from_cache and isinstance(result, GenerationResult):
                runner.cache.put(keys[sample.key], result)  # type: ignore[union-attr]
            runner.store.append(record)
            if record.scores_pending:
                self.pending.append(record)
        if use_cache:
            runner.cache.commit()  # type: ignore[union-attr]
        runner.summary.computed += len(batch) - len(from_cache)
        runner.summary.from_cache += len(from_cache)
        runner.summary.errors += errors
        runner.display.advance(len(batch), errors)

    def _record(self, sample: Sample, result: GenerationResult | BaseException, latency: float) -> SampleRecord:
        base = dict(
            key=sample.key, task=sample.task, model=self.adapter.model_id, kind=sample.kind,
            ability=sample.ability, source=sample.source, item_id=sample.item_id,
            n_images=len(sample.images), n_options=len(sample.options) or None, image_set="|".join(sample.image_set), gold=sample.answer,
            finished_at=now(),
        )
        if isinstance(result, BaseException):
            previous = self.previous.get(sample.key)
            attempts = (previous.error.attempts if previous and previous.error else 0) + 1
            message = str(result).strip().splitlines()
            error = ModelError(type=type(result).__name__, message=message[0] if message else "", attempts=attempts)
            return SampleRecord(**base, error=error)
        extracted, correct, scores = score_answer(sample, result.text, self.runner.scorer)
        pending = self.runner.scorer.pending_components(result.text) if sample.kind == "open" else []
        return SampleRecord(
            **base, sent=result.sent, output=result.text, extracted=extracted, correct=correct,
            scores=scores, scores_pending=pending, latency_s=round(latency, 6), tokens=result.tokens,
        )


class Runner:
    def __init__(self, prepared: PreparedRun, host: PluginHost, display: RunDisplay | None = None) -> None:
        self.prepared = prepared
        self.host = host
        self.display = display or QuietDisplay()
        self.run_dir = prepared.options.output
        self.store = RecordStore(self.run_dir)
        self.scorer = prepared.scorer
        self.hasher = ImageHasher()
        self.cache: ResponseCache | None = None
        self.summary = RunSummary(run_dir=str(self.run_dir), results=Results(run_id=""))

    async def run(self) -> RunSummary:
        options = self.prepared.options
        self.run_dir.mkdir(parents=True, exist_ok=True)
        existing = self.store.load(repair=True)
        for note in self.store.dropped_lines:
            self.display.message(f"note: {self.store.path}: {note}")
        manifest = start_manifest(self.run_dir, options.argv, options.seed, options.settings.as_dict(), self.host,
                                  self.scorer.definition())
        for task in self.prepared.tasks:
            add_task(manifest, TaskInfo(
                name=task.selection.name, kinds=list(task.selection.kinds),
                files=[str(p) for p in task.loaded.files], sha256=task.loaded.data_hash(),
                n_samples=len(task.samples), n_skipped=task.skipped.get("samples", 0), skipped_reasons=task.skipped,
            ))
            if task.skipped:
                self.summary.skipped[task.selection.label] = task.skipped
        write_json_atomic(self.run_dir / MANIFEST_FILE, manifest)
        if options.use_cache:
            self.cache = ResponseCache(options.cache_dir / CACHE_FILE)
        status = "interrupted"
        try:
            for spec, entry in self.prepared.models:
                await self._run_model(spec, entry, existing, manifest)
            status = "finished" if not self.summary.errors and not self.summary.model_failures else "finished with errors"
        finally:
            self.store.close()
            if self.cache is not None:
                self.cache.close()
            final = list(self.store.load(repair=False).values())
            bootstrap = BootstrapSettings(seed=options.seed)
            self.summary.results = Results(
                run_id=manifest.run_id, metrics=manifest.metrics, bootstrap=bootstrap.describe(),
                cells=aggregate(final, bootstrap), by_source=aggregate_by_source(final, bootstrap),
            )
            write_json_atomic(self.run_dir / RESULTS_FILE, self.summary.results)
            manifest.invocations[-1].finished_at = now()
            manifest.invocations[-1].status = status
            write_json_atomic(self.run_dir / MANIFEST_FILE, manifest)
            self.display.close()
        return self.summary

    async def _run_model(self, spec: Any, entry: AdapterEntry, existing: dict[tuple[str, str], SampleRecord],
                         manifest: Any) -> None:
        options = self.prepared.options
        context = AdapterContext(seed=options.seed, settings=options.settings)
        model_id = spec.model_id
        pending_by_task = []
        for task in self.prepared.tasks:
            previous = {s.key: existing[(model_id, s.key)] for s in task.samples if (model_id, s.key) in existing}
            pending = [s for s in task.samples if not (s.key in previous and previous[s.key].done)]
            self.summary.reused += len(task.samples) - len(pending)
            pending_by_task.append((task, previous, pending))
        if not any(p for _, _, p in pending_by_task):
            self.display.message(f"{model_id}: every selected sample is already done in {self.run_dir}")
        try:
            adapter: ModelAdapter = entry.load_factory()(spec.target, spec.option_dict, context)
        except (MedmimError, MissingBackendError, ImportError) as exc:
            self._model_failed(model_id, exc)
            return
        # From here on the adapter may hold a server or a worker: it is closed whatever happens.
        try:
            adapter.model_id = model_id
            try:
                fingerprint = adapter.fingerprint()
            except (MedmimError, MissingBackendError, ImportError) as exc:
                self._model_failed(model_id, exc)
                return
            add_model(manifest, ModelInfo(id=model_id, spec=str(spec), adapter=entry.name,
                                          plugin=self.host.adapters.owners.get(entry.name, ""), fingerprint=fingerprint))
            write_json_atomic(self.run_dir / MANIFEST_FILE, manifest)
            for task, previous, pending in pending_by_task:
                prepare = getattr(adapter, "prepare", None)
                if callable(prepare):
                    prepare(task.selection.name, task.loaded.samples)
                cell = _Cell(self, adapter, fingerprint, task, previous)
                if pending:
                    self.display.start_cell(f"{model_id} · {task.selection.label}", len(pending))
                    await cell.run(pending)
                    self.display.finish_cell()
                cell.finish_scoring()
        finally:
            self._record_cost(adapter, model_id, manifest)
            await adapter.aclose()

    def _model_failed(self, model_id: str, exc: BaseException) -> None:
        self.summary.model_failures[model_id] = str(exc)
        self.display.message(f"error: model '{model_id}' could not be loaded: {exc}")

    def _record_cost(self, adapter: ModelAdapter, model_id: str, manifest: Any) -> None:
        """API adapters that price their tokens (``cost_usd()``) get an estimate in the manifest."""
        cost_usd = getattr(adapter, "cost_usd", None)
        value = cost_usd() if callable(cost_usd) else None
        if value is None:
            return
        manifest.estimated_cost_usd[model_id] = round(manifest.estimated_cost_usd.get(model_id, 0.0) + value, 6)
        self.display.message(f"{model_id}: estimated API cost this invocation ${value:.4f} (list prices)")


def run_prepared(prepared: PreparedRun, host: PluginHost, display: RunDisplay | None = None) -> RunSummary:
    return asyncio.run(Runner(prepared, host, display).run())


__all__: Sequence[str] = ("Runner", "RunSummary", "run_prepared")
