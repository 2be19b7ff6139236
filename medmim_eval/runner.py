"""The runner: evaluates models on prepared tasks, resumably, and writes the run directory.

Finished samples are never recomputed; errored ones are retried on the next invocation. Each
record is appended and flushed as its batch finishes, so a killed run loses only what was in flight;
at the end ``samples.jsonl`` is rewritten with one line per sample (see :mod:`medmim_eval.records`).

Data-parallel (launched by torchrun or accelerate launch, see :mod:`medmim_eval.distributed`):
rank 0 first merges any record shards a killed run left; every rank then reads the same records,
lists the pending samples of each model x task in file order and takes every ``world_size``-th one
from its rank on, appending its records to its own shard. After generation the ranks exchange
their status; rank 0 merges the shards into ``samples.jsonl``, asks the optional extraction judge
(:mod:`medmim_eval.extract_judge`) about closed answers the rule left unparseable, computes the
batched metrics (BERTScore) and writes ``results.json`` and the manifest. A rank that fails reports its error to
the others instead of leaving them waiting.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Sequence

from medmim_eval.adapter import (AdapterContext, ModelAdapter, ModelSpec, PreparesForTask, ReportsCost,
                                 contract_problem)
from medmim_eval.cache import ImageHasher, ResponseCache
from medmim_eval.cell_runner import CellContext, CellRunner
from medmim_eval.circular import letter_bias_table
from medmim_eval.distributed import DistributedError, RankGroup, RankInfo, failure_message
from medmim_eval.errors import ContractError, MedmimError, MissingBackendError
from medmim_eval.exclusion import mark_cells
from medmim_eval.extract_judge import JudgeTally, needs_judge
from medmim_eval.flags import with_flag_counts
from medmim_eval.manifest import add_model, add_task, now, start_manifest
from medmim_eval.plugins import PluginHost
from medmim_eval.progress import QuietDisplay, RunDisplay
from medmim_eval.records import (
    MANIFEST_FILE,
    RESULTS_FILE,
    SAMPLES_FILE,
    RecordStore,
    merge_shards,
    shard_name,
    write_json_atomic,
)
from medmim_eval.registry import AdapterEntry
from medmim_eval.run_reader import RunDirectory
from medmim_eval.run_setup import PreparedRun, PreparedTask
from medmim_eval.schema import ModelInfo, Results, RunManifest, Sample, SampleRecord, TaskInfo
from medmim_eval.scoring import aggregate, aggregate_by_source, finish_pending
from medmim_eval.shortcuts import shortcut_correct
from medmim_eval.stats import BootstrapSettings

CACHE_FILE = "responses.sqlite"
_Cell = CellRunner  # the name benchmarks/bench_vllm_throughput.py times


@dataclass
class RunSummary:
    run_dir: str
    results: Results
    computed: int = 0
    reused: int = 0
    from_cache: int = 0
    errors: int = 0
    too_many_images: int = 0
    model_failures: dict[str, str] = field(default_factory=dict)
    contract_errors: dict[str, str] = field(default_factory=dict)  # model -> how its plugin broke the contract
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1
    failed_ranks: dict[int, str] = field(default_factory=dict)
    judge: JudgeTally | None = None  # what the extraction judge did in this invocation (rank 0)

    _COUNTERS = ("computed", "from_cache", "errors", "too_many_images")


class Runner:
    def __init__(self, prepared: PreparedRun, host: PluginHost, display: RunDisplay | None = None,
                 group: RankGroup | None = None) -> None:
        self.prepared = prepared
        self.host = host
        self.display = display or QuietDisplay()
        self.group = group or RankGroup(RankInfo())
        self.run_dir = prepared.options.output
        self.store = RecordStore(self.run_dir, shard_name(self.group.rank) if self.group.distributed else SAMPLES_FILE)
        self.scorer = prepared.scorer
        self.hasher = ImageHasher()
        self.cache: ResponseCache | None = None
        self._existing: dict[tuple[str, str], SampleRecord] | None = None  # read by rank 0 before starting
        self._final: list[SampleRecord] | None = None  # every record once scored, for results.json
        self.summary = RunSummary(run_dir=str(self.run_dir), results=Results(run_id=""), rank=self.group.rank,
                                  world_size=self.group.world_size)

    def _say(self, text: str) -> None:
        self.display.message(f"[rank {self.group.rank}] {text}" if self.group.distributed else text)

    async def run(self) -> RunSummary:
        """Evaluate every model on every task (this rank's share), then merge, score and write results."""
        try:
            return await self._run()
        finally:
            self.display.close()
            self.scorer.close()
            if self.prepared.judge is not None:
                await self.prepared.judge.aclose()

    async def _run(self) -> RunSummary:
        group = self.group
        self.run_dir.mkdir(parents=True, exist_ok=True)
        error: Exception | None = None
        if group.is_main:
            try:
                self._merge_shards()
                self._existing = self._load_records()
                self._ready_scorer(self._existing)
            except Exception as exc:
                error = exc
        group.check("merging the records of an earlier run and loading the open metrics", error)
        manifest, failure = None, None
        try:
            manifest, existing = self._start()
            for spec, entry in self.prepared.models:
                await self._run_model(spec, entry, existing, manifest)
        except Exception as exc:  # reported to the other ranks below, then raised
            failure = exc
        except BaseException:  # interrupted: no collective, every rank is being stopped
            self._close_local()
            if not group.distributed and manifest is not None:
                self._finish(manifest, "interrupted")
            raise
        self._close_local()
        reports = group.gather(self._report(failure), "finishing generation")
        self._combine(reports)
        error = None
        if group.is_main and manifest is not None:
            try:
                try:
                    self._merge_shards()
                    await self._judge_unparseable()
                    self._finish_scoring()
                except Exception as exc:
                    error = exc
                status = "failed" if failure or error or self.summary.failed_ranks else (
                    "finished with errors" if self.summary.errors or self.summary.model_failures or self.summary.contract_errors
                    else "finished")
                self._finish(manifest, status)
            except Exception as exc:
                error = error or exc
        group.check("merging and scoring on rank 0", error)
        if failure is not None:
            raise failure
        if self.summary.failed_ranks and group.is_main:
            rank, text = next(iter(self.summary.failed_ranks.items()))
            raise DistributedError(f"rank {rank} failed: {text}; the records of every rank are saved and merged, "
                                   "rerun the same command to resume")
        return self.summary

    def _load_records(self) -> dict[tuple[str, str], SampleRecord]:
        """The latest record per (model, sample) so far; rank 0 repairs a torn last line and says so."""
        run = RunDirectory(self.run_dir)
        existing = run.records(repair=self.group.is_main)
        if self.group.is_main:
            for note in run.dropped_lines:
                self._say(f"note: {run.store.path}: {note}")
        return existing

    def _ready_scorer(self, existing: dict[tuple[str, str], SampleRecord]) -> None:
        """If any open answer is left to score, check that the open metrics can load (packages,
        weights; no import of them), so that a broken setup fails before any model is called. They
        load once a model is ready (:meth:`_run_model`); a finished run never imports them."""
        for spec, _ in self.prepared.models:
            for task in self.prepared.tasks:
                for sample in task.samples:
                    if sample.kind != "open":
                        continue
                    record = existing.get((spec.model_id, sample.key))
                    if record is None or not record.done or record.scores_pending:
                        self.scorer.check_ready()
                        return

    def _start_scorer(self, work: list[tuple[PreparedTask, dict[str, SampleRecord], list[Sample]]]) -> None:
        """Once a model is ready and has open samples to answer: BERTScore starts loading beside
        the requests (in a child process where this one holds no torch: a served run)."""
        references = [s.answer for _, _, share in work for s in share if s.kind == "open"]
        if references and self.group.is_main:
            self.scorer.start_loading(references)

    def _start(self) -> tuple[RunManifest, dict[tuple[str, str], SampleRecord]]:
        """Records so far and the manifest with this invocation (written by rank 0 only)."""
        options = self.prepared.options
        existing = self._existing if self._existing is not None else self._load_records()
        manifest = start_manifest(self.run_dir, options.argv, options.seed, options.settings.as_dict(), self.host,
                                  self.scorer.definition(),
                                  options.extractor.definition() if options.extractor is not None else None)
        manifest.invocations[-1].world_size = self.group.world_size
        for task in self.prepared.tasks:
            add_task(manifest, TaskInfo(
                name=task.selection.name, kinds=list(task.selection.kinds),
                files=[str(p) for p in task.loaded.files], sha256=task.loaded.data_hash(),
                n_samples=len(task.samples), n_skipped=task.skipped.get("samples", 0), skipped_reasons=task.skipped,
                from_file=task.selection.path is not None and not task.selection.base.startswith("file:"),
                control=task.loaded.control,
                excluded_keys=task.excluded,
                excluded_from=options.exclude.describe() if options.exclude is not None and task.excluded else None,
            ))
            if task.skipped:
                self.summary.skipped[task.selection.label] = task.skipped
        self._write_manifest(manifest)
        if options.use_cache:
            self.cache = ResponseCache(options.cache_dir / CACHE_FILE)
        return manifest, existing

    def _write_manifest(self, manifest: RunManifest) -> None:
        if self.group.is_main:
            write_json_atomic(self.run_dir / MANIFEST_FILE, manifest)

    def _close_local(self) -> None:
        self.store.close()
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def _merge_shards(self) -> None:
        report = merge_shards(self.run_dir)
        for note in report.notes:
            self._say(f"note: {note}")
        if report.shards and not self.group.distributed:
            self._say(f"merged {report.appended} record(s) from {len(report.shards)} shard(s) of an earlier "
                      f"data-parallel run ({report.already_merged} were merged before)")

    def _report(self, failure: Exception | None) -> dict[str, Any]:
        counters = {name: getattr(self.summary, name) for name in RunSummary._COUNTERS}
        return {**counters, "model_failures": dict(self.summary.model_failures),
                "contract_errors": dict(self.summary.contract_errors),
                "failure": failure_message(failure) if failure is not None else None}

    def _combine(self, reports: list[dict[str, Any]]) -> None:
        """On rank 0: totals over every rank; a model that failed on some ranks only names them."""
        if len(reports) == 1 or not self.group.is_main:
            return
        for name in RunSummary._COUNTERS:
            setattr(self.summary, name, sum(r[name] for r in reports))
        failures: dict[str, dict[int, str]] = {}
        for rank, report in enumerate(reports):
            self.summary.contract_errors.update(report.get("contract_errors", {}))
            for model, text in report["model_failures"].items():
                failures.setdefault(model, {})[rank] = text
            if report["failure"] is not None and rank != 0:
                self.summary.failed_ranks[rank] = report["failure"]
        self.summary.model_failures = {
            model: next(iter(by_rank.values())) if len(by_rank) == len(reports) and len(set(by_rank.values())) == 1
            else "; ".join(f"rank {r}: {t}" for r, t in by_rank.items())
            for model, by_rank in failures.items()}

    async def _judge_unparseable(self) -> None:
        """On rank 0: the extraction judge's verdicts on closed answers the rule left unparseable, appended as final records.

        Every such record of the run directory is asked about (those of earlier invocations too),
        except ones the judge already settled; a failed judge request is asked again next time.
        """
        judge = self.prepared.judge
        if judge is None:
            return
        store = RecordStore(self.run_dir)
        records = [r for r in store.load(repair=False).values() if needs_judge(r)]
        self.summary.judge = JudgeTally()
        if not records:
            return
        options = self.prepared.options
        cache = ResponseCache(options.cache_dir / CACHE_FILE) if options.use_cache else None
        self._say(f"extraction judge {judge.spec.name}: {len(records)} answer(s) the rule left unparseable")
        try:
            self.summary.judge = await judge.judge(records, cache, store.append)
        finally:
            store.close()
            if cache is not None:
                cache.close()

    def _finish_scoring(self) -> None:
        """Batched metrics (BERTScore) over every open answer still waiting, then one line per sample.

        ``samples.jsonl`` is rewritten (atomically) with the latest record of each (model, sample),
        scores filled in; until then a kill leaves the answers, still pending, to the next run.
        """
        references = {s.key: s.answer for task in self.prepared.tasks for s in task.samples}
        store = RecordStore(self.run_dir)
        latest = store.load(repair=False)
        pending = [r for r in latest.values() if r.done and r.scores_pending and r.key in references]
        pending.sort(key=lambda r: (r.model, r.key))  # batches of the same texts, whatever order they were answered in
        finished = finish_pending(pending, references, self.scorer)
        for record in finished:
            latest[(record.model, record.key)] = record
        if finished or store.needs_rewrite(len(latest)):
            if store.corrupt_lines:  # left for a person to look at: append instead of rewriting
                try:
                    for record in finished:
                        store.append(record)
                finally:
                    store.close()
            else:
                store.rewrite(latest.values())
        self._final = list(latest.values())

    def _finish(self, manifest: RunManifest, status: str) -> None:
        """``results.json`` from every record, and the invocation's end in the manifest."""
        final = self._final if self._final is not None else list(RunDirectory(self.run_dir).records().values())
        bootstrap = BootstrapSettings(seed=self.prepared.options.seed)
        # The text-only baselines of every cell, on the full task (the majority rule ranks letters over it).
        shortcuts = shortcut_correct([s for task in self.prepared.tasks for s in task.loaded.samples])
        self.summary.results = Results(
            run_id=manifest.run_id, metrics=manifest.metrics, bootstrap=bootstrap.describe(),
            cells=mark_cells(with_flag_counts(aggregate(final, bootstrap, shortcuts), final), manifest.tasks),
            by_source=mark_cells(with_flag_counts(aggregate_by_source(final, bootstrap, shortcuts), final),
                                 manifest.tasks),
            letter_bias=letter_bias_table(final),
        )
        write_json_atomic(self.run_dir / RESULTS_FILE, self.summary.results)
        manifest.invocations[-1].finished_at = now()
        manifest.invocations[-1].status = status
        write_json_atomic(self.run_dir / MANIFEST_FILE, manifest)

    async def _run_model(self, spec: ModelSpec, entry: AdapterEntry, existing: dict[tuple[str, str], SampleRecord],
                         manifest: RunManifest) -> None:
        options = self.prepared.options
        group = self.group
        context = AdapterContext(seed=options.seed, settings=options.settings)
        model_id = spec.model_id
        work: list[tuple[PreparedTask, dict[str, SampleRecord], list[Sample]]] = []
        for task in self.prepared.tasks:
            previous = {s.key: existing[(model_id, s.key)] for s in task.samples if (model_id, s.key) in existing}
            pending = [s for s in task.samples if not (s.key in previous and previous[s.key].done)]
            if group.is_main:
                self.summary.reused += len(task.samples) - len(pending)
            work.append((task, previous, pending[group.rank::group.world_size]))
        if not any(share for _, _, share in work):
            if group.is_main:
                self._say(f"{model_id}: every selected sample is already done in {self.run_dir}")
            else:
                return  # nothing for this rank; rank 0 still checks the model's fingerprint
        plugin = self.host.adapters.owners.get(entry.name, "")
        try:
            adapter: ModelAdapter = entry.load_factory()(spec.target, spec.option_dict, context)
        except (MedmimError, MissingBackendError, ImportError) as exc:
            self._model_failed(model_id, exc)
            return
        problem = contract_problem(adapter)
        if problem is not None:  # checked before anything calls a member it may lack
            self._contract_broken(model_id, ContractError(
                f"plugin '{plugin}', adapter '{entry.name}': the adapter its factory returned {problem}"))
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
                                          plugin=plugin, fingerprint=fingerprint))
            self._write_manifest(manifest)
            self._start_scorer(work)
            cells = self._cell_context(plugin, entry.name)
            for task, previous, share in work:
                if isinstance(adapter, PreparesForTask):
                    adapter.prepare(task.selection.name, task.loaded.samples)
                if share:
                    where = f" · rank {group.rank}/{group.world_size}" if group.distributed else ""
                    self.display.start_cell(f"{model_id} · {task.selection.label}{where}", len(share))
                    try:
                        await CellRunner(cells, adapter, fingerprint, previous).run(share)
                    except ContractError as exc:
                        self.display.finish_cell()
                        self._contract_broken(model_id, exc)
                        return
                    self.display.finish_cell()
        finally:
            self._record_cost(adapter, model_id, manifest)
            await adapter.aclose()

    def _cell_context(self, plugin: str, adapter_name: str) -> CellContext:
        options = self.prepared.options
        return CellContext(settings=options.settings, concurrency=options.concurrency, store=self.store,
                           scorer=self.scorer, summary=self.summary, display=self.display, hasher=self.hasher,
                           cache=self.cache, plugin=plugin, adapter_name=adapter_name)

    def _contract_broken(self, model_id: str, exc: ContractError) -> None:
        """The model stops here; said at once and at the end, and never offered a rerun."""
        self.summary.contract_errors[model_id] = str(exc)
        self._say(f"contract error: {exc}")

    def _model_failed(self, model_id: str, exc: BaseException) -> None:
        self.summary.model_failures[model_id] = str(exc)
        self._say(f"error: model '{model_id}' could not be loaded: {exc}")

    def _record_cost(self, adapter: ModelAdapter, model_id: str, manifest: RunManifest) -> None:
        """API adapters that price their tokens (``cost_usd()``) get an estimate in the manifest."""
        value = adapter.cost_usd() if isinstance(adapter, ReportsCost) else None
        if value is None:
            return
        manifest.estimated_cost_usd[model_id] = round(manifest.estimated_cost_usd.get(model_id, 0.0) + value, 6)
        self._say(f"{model_id}: estimated API cost this invocation ${value:.4f} (list prices)")


def run_prepared(prepared: PreparedRun, host: PluginHost, display: RunDisplay | None = None,
                 group: RankGroup | None = None) -> RunSummary:
    """Run ``prepared``; ``group`` is this process's rank group (a single process when omitted)."""
    return asyncio.run(Runner(prepared, host, display, group).run())


__all__: Sequence[str] = ("Runner", "RunSummary", "run_prepared")
