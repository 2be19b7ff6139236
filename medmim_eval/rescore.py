"""Re-scoring a finished run from its stored outputs: new extraction and scores, no model called.

:func:`rescore_run` reads a run directory's ``samples.jsonl`` and ``manifest.json``, re-extracts
every closed answer with the current rule (and, with an extraction judge, asks it about the answers
the rule leaves unparseable), rescores every open answer under the chosen open-metric definition,
and writes a *new* run directory: ``samples.jsonl``, ``results.json`` and a manifest that records
the new definitions and the source run (``rescored_from``). The source run is never written to.

Errored records are carried over as they are (there is no answer to score). A record that finished
but has no stored output stops the rescore before anything is written. The text-only shortcut
figures of closed cells depend on the data, not on the answers, so they are carried over from the
source's ``results.json`` (the scored items of a closed cell never change under a rescore).
"""
from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from pydantic import ValidationError

from medmim_eval.circular import letter_bias_table
from medmim_eval.errors import MedmimError
from medmim_eval.extract import EXTRACTION_RULE_VERSION, decide_choice
from medmim_eval.flags import with_flag_counts
from medmim_eval.manifest import git_commit, metric_definitions, now, package_versions, read_manifest
from medmim_eval.metrics import OpenMetricsConfig, OpenScorer
from medmim_eval.records import (MANIFEST_FILE, RESULTS_FILE, SAMPLES_FILE, RecordStore, ensure_run_dir, shard_paths,
                                 write_json_atomic)
from medmim_eval.schema import (ExtractionRecord, Invocation, RescoreSource, ResultCell, Results, RunManifest,
                                SampleRecord, content_hash)
from medmim_eval.scoring import aggregate, aggregate_by_source, finish_pending
from medmim_eval.shortcuts import shortcut_normalised
from medmim_eval.stats import BootstrapSettings

if TYPE_CHECKING:
    from medmim_eval.datadir import DataPaths
    from medmim_eval.extract_judge import JudgeSpec, JudgeTally
    from medmim_eval.plugins import PluginHost


@dataclass
class RescoreOptions:
    """What ``medmim-eval rescore`` was asked: the source run, where to write, the new definitions.

    ``open_metrics`` ``None`` keeps the source run's open-metric definition; ``extractor`` ``None``
    is the current rule alone. ``data`` is only read for records written before rule v3, which did
    not store their options.
    """

    source: Path
    output: Path | None = None
    open_metrics: OpenMetricsConfig | None = None
    extractor: "JudgeSpec | None" = None
    data: "DataPaths | None" = None
    use_cache: bool = True
    cache_dir: Path | None = None
    argv: list[str] = field(default_factory=list)


@dataclass
class RescoreSummary:
    """What a rescore did: where it wrote, the new results, and counts for the console line."""

    output: Path
    results: Results
    closed: int = 0
    open: int = 0
    carried_errors: int = 0
    changed: int = 0
    notes: list[str] = field(default_factory=list)
    judge: "JudgeTally | None" = None


def read_source(source: Path) -> tuple[RunManifest, list[SampleRecord]]:
    """The manifest and the latest record per (model, sample) of a finished run.

    Raises:
        MedmimError: one line when the folder, its manifest, its records or any stored output is missing.
    """
    if not source.is_dir():
        what = "is a file, not a folder" if source.exists() else "does not exist"
        raise MedmimError(f"run directory {source} {what}; pass the -o folder of a `medmim-eval run`")
    if shard_paths(source):
        raise MedmimError(f"{source}: holds record shards of an unfinished data-parallel run; rerun that run "
                          "command to merge them, then rescore")
    store = RecordStore(source)
    records = list(store.load(repair=False).values()) if store.path.exists() else []
    if not records:
        raise MedmimError(f"{source}: no model outputs to rescore ({SAMPLES_FILE} is missing or empty); "
                          "rescore reads the answers a `medmim-eval run` stored there")
    if store.corrupt_lines:
        raise MedmimError(f"{store.path}: {store.corrupt_lines} corrupt line(s); repair or remove them, then rescore")
    manifest = read_manifest(source)
    if manifest is None:
        raise MedmimError(f"{source}: no {MANIFEST_FILE}; rescore needs the manifest a `medmim-eval run` writes "
                          "(it names the models, tasks and the definitions being replaced)")
    missing = [r for r in records if r.error is None and r.output is None]
    if missing:
        first = missing[0]
        raise MedmimError(f"{store.path}: {len(missing)} finished record(s) have no stored output (e.g. model "
                          f"{first.model}, sample {first.key}); they cannot be rescored without calling the model "
                          "again, so nothing was written; rerun the evaluation")
    return manifest, records


def reload_options(records: list[SampleRecord], source: Path, host: "PluginHost",
                   data: "DataPaths | None") -> dict[str, dict[str, str]]:
    """Options of closed records written before rule v3 (which did not store them), from the task data.

    Raises:
        MedmimError: naming a sample whose options cannot be found and the fix (``--data-dir``).
    """
    lacking = [r for r in records if r.kind == "closed" and r.error is None and not r.options]
    if not lacking:
        return {}
    from medmim_eval.datadir import DataPaths
    from medmim_eval.exports.drilldown import load_run_samples

    loaded = load_run_samples(source, {r.task for r in lacking}, host, data or DataPaths.resolve())
    found = {key: dict(s.options) for key, s in loaded.samples.items() if s.options}
    absent = [r for r in lacking if r.key not in found]
    if absent:
        why = f" ({loaded.problems[0]})" if loaded.problems else ""
        raise MedmimError(f"{len(absent)} closed record(s) of {source} do not store their options (written before "
                          f"extraction rule v3) and the task data does not hold them (e.g. {absent[0].key}){why}; "
                          "pass --data-dir with the data the run used")
    return found


def rescore_record(record: SampleRecord, scorer: OpenScorer, options: dict[str, str] | None = None) -> SampleRecord:
    """``record`` re-extracted (closed) or rescored (open) from its stored output; errored records unchanged.

    Open records come back with their batched components pending (see :func:`finish_pending`).
    """
    if record.error is not None or record.output is None:
        return record
    if record.kind == "closed":
        shown = record.options or options or {}
        decision = decide_choice(record.output, shown)
        correct = decision.answer == record.gold
        return record.model_copy(update={
            "options": dict(shown), "extracted": decision.answer, "correct": correct, "judge": None,
            "extraction": ExtractionRecord(rule_version=EXTRACTION_RULE_VERSION, rule=decision.rule,
                                           detail=decision.detail),
            "scores": {"accuracy": 100.0 if correct else 0.0}, "scores_pending": []})
    scores = scorer.score(record.output, record.gold)
    return record.model_copy(update={"scores": scores, "scores_pending": scorer.pending_components(record.output)})


def outcome_changed(old: SampleRecord, new: SampleRecord) -> bool:
    """Whether a rescore changed what a record counts as: the closed answer, or the open score."""
    if old.kind == "closed":
        return (old.extracted, old.correct) != (new.extracted, new.correct)
    before, after = old.scores.get("open_score"), new.scores.get("open_score")
    return before is None or after is None or abs(before - after) > 1e-9


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("versions", "endpoint", "shortcuts")}
    return value


def default_output(source: Path, metrics: dict[str, Any]) -> Path:
    """``RUN_DIR.rescore-<tag>`` beside the source; the tag names the definition, so a rescore repeated
    under the same definition lands in the same folder."""
    tag = content_hash(json.dumps(_strip(metrics), sort_keys=True, default=str), 8)
    return source.parent / f"{source.name}.rescore-{tag}"


def _check_output(output: Path, source: Path, manifest: RunManifest) -> None:
    """Refuse the source itself, or a folder holding another run; a previous rescore of this source is replaced."""
    if output.resolve() == source.resolve():
        raise MedmimError(f"--output {output} is the run being rescored; a rescore never overwrites its source, "
                          "pass another --output")
    if not any((output / name).exists() for name in (SAMPLES_FILE, RESULTS_FILE, MANIFEST_FILE)):
        return
    try:
        existing = read_manifest(output)
    except MedmimError:
        existing = None
    if existing is None or existing.rescored_from is None or existing.rescored_from.run_id != manifest.run_id:
        raise MedmimError(f"{output} already holds a run that is no rescore of {source}; pass another --output "
                          "(a rescore never overwrites a run)")


def _source_results(source: Path) -> Results | None:
    path = source / RESULTS_FILE
    try:
        return Results.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ValidationError, UnicodeDecodeError):
        return None


def carry_shortcuts(cells: Iterable[ResultCell], old: Iterable[ResultCell]) -> list[ResultCell]:
    """``cells`` with the text-only shortcut figures of the same closed cells of the source results."""
    by_cell = {(c.model, c.task, c.kind, c.source): c for c in old if c.shortcut is not None}
    out = []
    for cell in cells:
        before = by_cell.get((cell.model, cell.task, cell.kind, cell.source))
        if before is None or cell.n_scored != before.n_scored:
            out.append(cell)
            continue
        out.append(cell.model_copy(update={
            "shortcuts": dict(before.shortcuts), "shortcut": before.shortcut, "shortcut_rule": before.shortcut_rule,
            "shortcut_normalised": shortcut_normalised(cell.score, before.shortcut)}))
    return out


def rescore_run(options: RescoreOptions, host: "PluginHost") -> RescoreSummary:
    """Rescore ``options.source`` into a new run directory; never calls the evaluated models.

    Raises:
        MedmimError: missing outputs, an output folder that holds another run, metrics that cannot load.
    """
    manifest, records = read_source(options.source)
    open_config = options.open_metrics
    if open_config is None:
        open_config = OpenMetricsConfig.from_definition(manifest.metrics.get("open") or {}) if manifest.metrics.get(
            "open") else OpenMetricsConfig.parse(())
    scorer = OpenScorer(open_config)
    judge_definition = options.extractor.definition() if options.extractor is not None else None
    metrics = metric_definitions(scorer.definition(), judge_definition)
    output = options.output or default_output(options.source, metrics)
    _check_output(output, options.source, manifest)
    reloaded = reload_options(records, options.source, host, options.data)
    if options.extractor is not None:
        from medmim_eval.extract_judge import check_judge

        check_judge(options.extractor, host)
    if any(r.kind == "open" and r.error is None and (r.output or "").strip() for r in records):
        scorer.ensure_ready()  # a metric that cannot load fails before anything is written
    ensure_run_dir(output)
    started = now()
    summary = RescoreSummary(output=output, results=Results(run_id=""))
    new = {(r.model, r.key): rescore_record(r, scorer, reloaded.get(r.key)) for r in records}
    if options.extractor is not None:
        summary.judge = _judge(options, host, records, new)
    pending = sorted((r for r in new.values() if r.scores_pending), key=lambda r: (r.model, r.key))
    for record in finish_pending(pending, {r.key: r.gold for r in pending}, scorer):
        new[(record.model, record.key)] = record
    final = list(new.values())
    for old in records:
        if old.error is not None:
            summary.carried_errors += 1
            continue
        summary.closed += old.kind == "closed"
        summary.open += old.kind == "open"
        summary.changed += outcome_changed(old, new[(old.model, old.key)])
    RecordStore(output).rewrite(final)
    bootstrap = BootstrapSettings(seed=manifest.seed)
    source_results = _source_results(options.source)
    old_cells = (source_results.cells + source_results.by_source) if source_results else []
    if source_results is None:
        summary.notes.append(f"{options.source}: no readable {RESULTS_FILE}; the text-only shortcut figures are left out")
    run_id = uuid.uuid4().hex[:12]
    summary.results = Results(
        run_id=run_id, metrics=metrics, bootstrap=bootstrap.describe(),
        cells=carry_shortcuts(with_flag_counts(aggregate(final, bootstrap), final), old_cells),
        by_source=carry_shortcuts(with_flag_counts(aggregate_by_source(final, bootstrap), final), old_cells),
        letter_bias=letter_bias_table(final),
    )
    write_json_atomic(output / RESULTS_FILE, summary.results)
    status = "finished with errors" if summary.carried_errors else "finished"
    rescored = manifest.model_copy(deep=True, update={
        "run_id": run_id, "created_at": started, "git_commit": git_commit(), "metrics": metrics,
        "packages": package_versions(), "estimated_cost_usd": {},
        "invocations": [Invocation(started_at=started, finished_at=now(), argv=options.argv, status=status)],
        "rescored_from": RescoreSource(run_dir=str(options.source.resolve()), run_id=manifest.run_id,
                                       metrics=manifest.metrics),
    })
    from medmim_eval import __version__

    rescored.harness_version = __version__
    write_json_atomic(output / MANIFEST_FILE, rescored)
    if manifest.invocations and manifest.invocations[-1].status not in ("finished", "finished with errors"):
        summary.notes.append(f"{options.source}: its last invocation ended '{manifest.invocations[-1].status}'; "
                             "samples it never answered are not in the rescore")
    judged = manifest.metrics.get("extraction_judge")
    if isinstance(judged, dict) and options.extractor is None:
        summary.notes.append(f"the source run used the extraction judge {judged.get('adapter')}:{judged.get('model')}; "
                             "this rescore uses the rule alone (pass --extractor llm=... to ask a judge again)")
    return summary


def _judge(options: RescoreOptions, host: "PluginHost", old: list[SampleRecord],
           new: dict[tuple[str, str], SampleRecord]) -> "JudgeTally":
    """The judge's verdicts on the answers the rule leaves unparseable, into ``new``.

    A verdict the source run already holds from the same judge and prompt version is kept without
    asking again (the reply and options it judged are the same); the rest are asked (the response
    cache answers repeats).
    """
    from medmim_eval.cache import ResponseCache
    from medmim_eval.datadir import cache_dir
    from medmim_eval.extract_judge import JUDGE_PROMPT_VERSION, ExtractionJudge, JudgeTally, needs_judge, with_verdict

    spec = options.extractor
    assert spec is not None
    for record in old:
        verdict, current = record.judge, new[(record.model, record.key)]
        if (verdict is not None and verdict.outcome != "failed" and verdict.judge == spec.name
                and verdict.prompt_version == JUDGE_PROMPT_VERSION and needs_judge(current)):
            new[(record.model, record.key)] = with_verdict(current, verdict)
    asked = [r for r in new.values() if needs_judge(r)]
    if not asked:
        return JudgeTally()
    judge = ExtractionJudge(spec, host)
    cache = ResponseCache((options.cache_dir or cache_dir()) / "responses.sqlite") if options.use_cache else None

    def done(record: SampleRecord) -> None:
        new[(record.model, record.key)] = record

    async def ask() -> "JudgeTally":
        try:
            return await judge.judge(asked, cache, done)
        finally:
            await judge.aclose()

    try:
        return asyncio.run(ask())
    finally:
        if cache is not None:
            cache.close()
