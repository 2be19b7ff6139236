"""Paired comparison of a baseline and a candidate run directory: the CI regression gate.

Records of the two runs are paired by sample key (and model). Every cell (model pair x task x kind,
plus one ``overall`` closed row per model pair) gets both scores, their difference, a paired
cluster-bootstrap interval of the difference and, for closed questions, McNemar's exact test;
closed answers that changed between the runs are listed as flips.

The result is plain data (:class:`Comparison`); the renderers in :mod:`medmim_eval.cli.compare_cmd`
turn it into a rich table, Markdown or JSON, so tests check data rather than escape codes. The
statistics live in :mod:`medmim_eval.compare_stats`.

Gate semantics (also the exit status of ``medmim-eval compare``):

* ``0`` -- no cell dropped by more than ``max_drop`` points with statistical significance;
* ``1`` -- at least one such regression (closed: McNemar ``p < alpha``; open: the paired
  bootstrap interval at level ``1 - alpha`` lies entirely below 0);
* ``2`` -- the runs are not comparable (different metric definitions, different sample sets,
  errored or unscored records) and ``force`` was not given. Metric definitions are compared
  without their package ``versions`` entries; a version-only difference is reported as a note.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from medmim_eval.compare_stats import CellComparison, CompareSettings, compare_cell
from medmim_eval.errors import MedmimError
from medmim_eval.manifest import REPORTING_ONLY
from medmim_eval.run_reader import RunDirectory
from medmim_eval.schema import SampleRecord

OVERALL = "overall"
Status = Literal["pass", "regression", "not comparable"]
EXIT_CODES: dict[str, int] = {"pass": 0, "regression": 1, "not comparable": 2}


@dataclass(frozen=True)
class ModelPair:
    baseline: str
    candidate: str

    @property
    def label(self) -> str:
        return self.baseline if self.baseline == self.candidate else f"{self.baseline} → {self.candidate}"


@dataclass(frozen=True)
class Problem:
    """Why the runs are not comparable; ``message`` names the reason and the fix."""

    code: str
    message: str

    @property
    def line(self) -> str:
        return f"not comparable ({self.code}): {self.message}"


@dataclass(frozen=True)
class Flip:
    """A closed question answered right by one run and wrong by the other."""

    baseline_model: str
    candidate_model: str
    task: str
    key: str
    item_id: str
    direction: Literal["right->wrong", "wrong->right"]
    gold: str
    baseline_answer: str | None
    candidate_answer: str | None


@dataclass(frozen=True)
class Change:
    """A sample whose outcome differs between two definitions of the same output (``--across-definitions``).

    Closed: the extracted answer (or its correctness) changed, with the rule that decided on each
    side; open: the open score changed (``baseline_answer``/``candidate_answer`` hold the scores).
    """

    baseline_model: str
    candidate_model: str
    task: str
    kind: str
    key: str
    item_id: str
    gold: str
    baseline_answer: str | None
    candidate_answer: str | None
    baseline_rule: str | None
    candidate_rule: str | None
    baseline_correct: bool | None
    candidate_correct: bool | None


@dataclass
class Comparison:
    """The full result of comparing two run directories."""

    baseline_dir: str
    candidate_dir: str
    baseline_run_id: str | None
    candidate_run_id: str | None
    settings: CompareSettings
    pairs: list[ModelPair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    cells: list[CellComparison] = field(default_factory=list)
    flips: list[Flip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    across_definitions: bool = False
    changes: list[Change] = field(default_factory=list)  # only with ``across_definitions``

    @property
    def forced(self) -> bool:
        """Problems were found and overridden with ``force``."""
        return bool(self.problems) and self.settings.force and bool(self.cells)

    @property
    def regressions(self) -> list[CellComparison]:
        return [c for c in self.cells if c.regression]

    @property
    def status(self) -> Status:
        if self.problems and not self.forced:
            return "not comparable"
        return "regression" if self.regressions else "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


@dataclass
class RunRecords:
    """The per-sample records and recorded metric definitions of one run directory."""

    role: str
    path: Path
    run_id: str | None
    records: dict[tuple[str, str], SampleRecord]
    metrics: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return sorted({model for model, _ in self.records})

    def of_model(self, model: str) -> dict[str, SampleRecord]:
        return {key: r for (m, key), r in self.records.items() if m == model}


def load_run(path: Path, role: str) -> RunRecords:
    """Read a run directory for comparison; ``role`` ("baseline"/"candidate") names it in messages.

    Metric definitions come from ``manifest.json``, else from ``results.json``; ``None`` when
    neither records any.

    Raises:
        MedmimError: the folder is missing, is no run directory, or holds no records.
    """
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise MedmimError(f"{role} run directory {path} {what}; pass the -o folder of a `medmim-eval run`")
    run = RunDirectory(path)
    if not run.has_records:
        raise MedmimError(f"{path}: no samples.jsonl; compare needs the per-sample records of a `medmim-eval run` output folder")
    records = run.records()
    if not records:
        raise MedmimError(f"{run.store.path} holds no records; run the evaluation first")
    notes = [f"{role} {run.store.path}: {line}" for line in run.dropped_lines]
    manifest = run.manifest()
    metrics = manifest.metrics if manifest is not None and manifest.metrics else None
    run_id = manifest.run_id if manifest is not None else None
    if metrics is None and run.results_path.exists():
        try:
            results = run.results()
        except MedmimError:
            notes.append(f"{role} {run.results_path}: unreadable, ignored")
        else:
            metrics = (results.metrics if results else None) or None
            run_id = run_id or (results.run_id if results else None)
    return RunRecords(role=role, path=path, run_id=run_id, records=records, metrics=metrics, notes=notes)


def choose_pairs(baseline: list[str], candidate: list[str], explicit: list[str] | None = None) -> list[ModelPair]:
    """Which baseline model is compared with which candidate model.

    ``explicit`` entries are ``BASE_ID=CAND_ID``. Without them: every model id present in both runs,
    else -- when each run holds exactly one model -- those two.

    Raises:
        MedmimError: an explicit id that a run lacks, or no pairing can be inferred.
    """
    if explicit:
        return [_parse_pair(text, baseline, candidate) for text in explicit]
    common = sorted(set(baseline) & set(candidate))
    if common:
        return [ModelPair(m, m) for m in common]
    if len(baseline) == 1 and len(candidate) == 1:
        return [ModelPair(baseline[0], candidate[0])]
    raise MedmimError(
        f"no model id is in both runs (baseline: {', '.join(baseline)}; candidate: {', '.join(candidate)}); "
        "choose the pair with --model BASELINE_ID=CANDIDATE_ID"
    )


def _parse_pair(text: str, baseline: list[str], candidate: list[str]) -> ModelPair:
    # Model ids may themselves contain '=', so try every split and keep the one both runs know.
    splits = [(text[:i], text[i + 1:]) for i, ch in enumerate(text) if ch == "="]
    for base, cand in splits:
        if base in baseline and cand in candidate:
            return ModelPair(base, cand)
    if not splits:
        raise MedmimError(f"--model {text!r}: expected BASELINE_ID=CANDIDATE_ID")
    base, cand = splits[0]
    missing = (f"the baseline run has no model '{base}' (it has: {', '.join(baseline)})" if base not in baseline
               else f"the candidate run has no model '{cand}' (it has: {', '.join(candidate)})")
    raise MedmimError(f"--model {text}: {missing}")


def compare_runs(baseline_dir: Path, candidate_dir: Path, settings: CompareSettings = CompareSettings(),
                 models: list[str] | None = None, across_definitions: bool = False) -> Comparison:
    """Compare two run directories; see the module docstring for the gate semantics.

    Without ``settings.force``, a non-comparable pair of runs yields a :class:`Comparison` with
    ``problems`` and no cells. With it, the samples that pair (present and scored in both runs) are
    compared and the problems stay listed.

    With ``across_definitions`` the two runs are the same outputs scored under two definitions (a
    run and its ``medmim-eval rescore``): different metric definitions are expected (named in a
    note), different outputs are a problem, and every sample whose outcome changed is listed in
    ``changes``.

    Raises:
        MedmimError: unreadable input (see :func:`load_run`, :func:`choose_pairs`).
    """
    if settings.max_drop < 0 or not 0 < settings.alpha < 1:
        raise MedmimError("--max-drop must be >= 0 and --alpha between 0 and 1")
    base, cand = load_run(baseline_dir, "baseline"), load_run(candidate_dir, "candidate")
    pairs = choose_pairs(base.models, cand.models, models)
    result = Comparison(baseline_dir=str(baseline_dir), candidate_dir=str(candidate_dir), baseline_run_id=base.run_id,
                        candidate_run_id=cand.run_id, settings=settings, pairs=pairs, notes=base.notes + cand.notes,
                        across_definitions=across_definitions)
    ignored = sorted((set(base.models) - {p.baseline for p in pairs}) | (set(cand.models) - {p.candidate for p in pairs}))
    if ignored:
        result.notes.append(f"not compared (in one run only or not chosen): {', '.join(ignored)}")
    result.problems = find_problems(base, cand, pairs)
    if across_definitions:
        _across_definitions(base, cand, pairs, result)
    note = _version_note(base, cand, pairs)
    if note and not any(p.code == "metric-definitions" for p in result.problems):
        result.notes.append(note)
    result.notes.extend(_judge_notes(base, cand, pairs))
    if result.problems and not settings.force:
        return result
    for pair in pairs:
        _compare_pair(base.of_model(pair.baseline), cand.of_model(pair.candidate), pair, result)
        if across_definitions:
            result.changes.extend(_changes(base.of_model(pair.baseline), cand.of_model(pair.candidate), pair))
    if not result.cells:
        result.problems.append(Problem("no-shared-samples", "no scored sample is in both runs; evaluate both on the same tasks"))
    return result


def find_problems(base: RunRecords, cand: RunRecords, pairs: list[ModelPair]) -> list[Problem]:
    """Every reason the two runs are not comparable, one :class:`Problem` each."""
    problems: list[Problem] = []
    if base.metrics is None or cand.metrics is None:
        which = " and ".join(r.role for r in (base, cand) if r.metrics is None)
        problems.append(Problem("metric-definitions", f"the {which} run records no metric definitions (no manifest.json "
                                "or results.json); rerun it with medmim-eval, or pass --force to compare anyway"))
    else:
        has_open = _has_open(base, cand, pairs)
        diff = _differences(_relevant(base.metrics, has_open), _relevant(cand.metrics, has_open))
        if diff:
            shown = "; ".join(f"{path}: {_short(b)} vs {_short(c)}" for path, b, c in diff[:3])
            more = f"; and {len(diff) - 3} more" if len(diff) > 3 else ""
            problems.append(Problem("metric-definitions", f"baseline and candidate were scored with different metric "
                                    f"definitions ({shown}{more}); rescore both with the same medmim-eval version and "
                                    "metric settings (--open-metrics), or pass --force to compare anyway (a run and its rescore: "
                                    "--across-definitions)"))
    for pair in pairs:
        problems.extend(_sample_set_problems(base.of_model(pair.baseline), cand.of_model(pair.candidate), pair))
    for run, models in ((base, [p.baseline for p in pairs]), (cand, [p.candidate for p in pairs])):
        records = [r for m in models for r in run.of_model(m).values()]
        errored = sorted((r for r in records if r.error is not None), key=lambda r: (r.task, r.key))
        if errored:
            first = errored[0]
            problems.append(Problem("errored-records", f"the {run.role} run has {len(errored)} errored record(s) "
                                    f"(e.g. {first.task} {first.key}: {first.error.type if first.error else ''}); rerun "
                                    f"the same `medmim-eval run` command into {run.path} to retry them, or pass --force "
                                    "to compare the other samples"))
        unscored = [r for r in records if r.error is None and _value(r) is None]
        if unscored:
            problems.append(Problem("unscored-records", f"the {run.role} run has {len(unscored)} record(s) without a "
                                    f"score (e.g. {unscored[0].task} {unscored[0].key}); rerun the same `medmim-eval "
                                    f"run` command into {run.path} to finish scoring, or pass --force"))
    return problems


def _sample_set_problems(base: dict[str, SampleRecord], cand: dict[str, SampleRecord], pair: ModelPair) -> list[Problem]:
    by_task: dict[str, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for key, record in base.items():
        by_task[record.task][0].add(key)
    for key, record in cand.items():
        by_task[record.task][1].add(key)
    problems = []
    for task, (base_keys, cand_keys) in sorted(by_task.items()):
        if base_keys != cand_keys:
            problems.append(Problem("sample-set", f"task '{task}' ({pair.label}): {len(base_keys - cand_keys)} sample(s) "
                                    f"only in the baseline, {len(cand_keys - base_keys)} only in the candidate; evaluate "
                                    "both on the same task data and selection (same --tasks, --limit), or pass --force "
                                    f"to compare the {len(base_keys & cand_keys)} shared sample(s)"))
    return problems


def _has_open(base: RunRecords, cand: RunRecords, pairs: list[ModelPair]) -> bool:
    return any(r.kind == "open" for run, models in ((base, [p.baseline for p in pairs]), (cand, [p.candidate for p in pairs]))
               for m in models for r in run.of_model(m).values())


def _relevant(definition: dict[str, Any], has_open: bool, versions: bool = False) -> Any:
    """The part of a metric definition that can change the compared scores.

    The ``open`` entry only matters when open questions are compared. Package ``versions`` entries
    and the LLM judge's ``endpoint`` are left out unless asked for: like resuming a run, comparing
    is not blocked by a package upgrade or a judge at another address alone (it is reported as a
    note, see :func:`_version_note`). The judge itself (``extraction_judge``: model, prompt
    version) counts, so a judged run and an unjudged one are not comparable.
    """
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if versions or k not in ("versions", "endpoint")}
        return value
    # Shortcut rules, chance and the controls view are reported beside the scores; they never change one.
    return strip({k: v for k, v in definition.items() if (has_open or k != "open") and k not in REPORTING_ONLY})


def _version_note(base: RunRecords, cand: RunRecords, pairs: list[ModelPair]) -> str | None:
    if base.metrics is None or cand.metrics is None:
        return None
    has_open = _has_open(base, cand, pairs)
    diff = _differences(_relevant(base.metrics, has_open, True), _relevant(cand.metrics, has_open, True))
    if not diff:
        return None
    what = " and ".join(name for name, found in (
        ("metric package versions differ", any(".endpoint" not in k for k, _, _ in diff)),
        ("the extraction judge's endpoint differs", any(".endpoint" in k for k, _, _ in diff))) if found)
    return (f"{what} (" + "; ".join(f"{k}: {_short(b)} vs {_short(c)}" for k, b, c in diff[:3])
            + "); the definitions agree, so the runs are compared")


def _judge_notes(base: RunRecords, cand: RunRecords, pairs: list[ModelPair]) -> list[str]:
    """Per run that used an LLM judge: how many closed answers of the compared models it decided."""
    notes = []
    for run, models in ((base, [p.baseline for p in pairs]), (cand, [p.candidate for p in pairs])):
        judge = (run.metrics or {}).get("extraction_judge")
        if not isinstance(judge, dict):
            continue
        asked = [r.judge for m in models for r in run.of_model(m).values() if r.judge is not None]
        decided = sum(j.outcome == "decided" for j in asked)
        failed = sum(j.outcome == "failed" for j in asked)
        failures = f"; {failed} judge request(s) failed (rerun that run to ask again)" if failed else ""
        notes.append(f"{run.role}: the extraction judge {judge.get('adapter')}:{judge.get('model')} (prompt "
                     f"v{judge.get('prompt_version')}) decided {decided} of {len(asked)} closed answer(s) the rule "
                     f"left unparseable{failures}")
    return notes


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _differences(base: Any, cand: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted paths where two nested definitions differ, with both values."""
    if isinstance(base, dict) and isinstance(cand, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(base) | set(cand), key=str):
            sub = f"{path}.{key}" if path else str(key)
            out.extend(_differences(base.get(key), cand.get(key), sub))
        return out
    return [] if base == cand else [(path or "(all)", base, cand)]


def _natural(key: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for ``file#index#hash`` sample keys: numbers by value, so #2 comes before #10."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in key.split("#"))


def _value(record: SampleRecord) -> float | None:
    """The record's score on 0-100 (closed: 0 or 100), or ``None`` when it has none."""
    if record.kind == "closed":
        return None if record.correct is None else (100.0 if record.correct else 0.0)
    return None if record.scores_pending else record.scores.get("open_score")


def _compare_pair(base: dict[str, SampleRecord], cand: dict[str, SampleRecord], pair: ModelPair, result: Comparison) -> None:
    groups: dict[tuple[str, str], list[tuple[SampleRecord, SampleRecord]]] = defaultdict(list)
    skipped = 0
    for key in sorted(base.keys() & cand.keys(), key=_natural):
        b, c = base[key], cand[key]
        if b.error is not None or c.error is not None or _value(b) is None or _value(c) is None:
            skipped += 1
            continue
        groups[(b.task, b.kind)].append((b, c))
    unpaired = len(base.keys() ^ cand.keys())
    if skipped or unpaired:
        result.notes.append(f"{pair.label}: left out {unpaired} sample(s) in one run only and {skipped} errored or "
                            "unscored pair(s)")
    closed: list[tuple[SampleRecord, SampleRecord]] = []
    for (task, kind), items in sorted(groups.items()):
        result.cells.append(_cell(pair, task, kind, items, result.settings))
        if kind == "closed":
            closed.extend(items)
            result.flips.extend(_flips(pair, items))
    if closed:
        result.cells.append(_cell(pair, OVERALL, "closed", closed, result.settings))


def _cell(pair: ModelPair, task: str, kind: str, items: list[tuple[SampleRecord, SampleRecord]],
          settings: CompareSettings) -> CellComparison:
    cell = compare_cell(pair.baseline, pair.candidate, task, kind, [_value(b) or 0.0 for b, _ in items],
                        [_value(c) or 0.0 for _, c in items], [b.image_set or b.key for b, _ in items], settings)
    return replace(cell, agreement=answer_agreement(items), text_agreement=text_agreement(items))


def _same_text(b: SampleRecord, c: SampleRecord) -> bool:
    return " ".join((b.output or "").split()) == " ".join((c.output or "").split())


def _same_answer(b: SampleRecord, c: SampleRecord) -> bool:
    return b.extracted == c.extracted if b.kind == "closed" else _same_text(b, c)


def text_agreement(items: list[tuple[SampleRecord, SampleRecord]]) -> float | None:
    """Share (0-100) of paired items whose raw outputs are the same text up to whitespace (closed too:
    two backends of one checkpoint should agree here, not only on the extracted letter)."""
    if not items:
        return None
    return 100 * sum(_same_text(b, c) for b, c in items) / len(items)


def answer_agreement(items: list[tuple[SampleRecord, SampleRecord]]) -> float | None:
    """Share (0-100) of paired items with the same answer: closed, the same extracted option (two
    unparseable answers agree); open, the same text up to whitespace."""
    if not items:
        return None
    return 100 * sum(_same_answer(b, c) for b, c in items) / len(items)


def _flips(pair: ModelPair, items: list[tuple[SampleRecord, SampleRecord]]) -> list[Flip]:
    flips = []
    for b, c in items:
        if bool(b.correct) != bool(c.correct):
            flips.append(Flip(
                baseline_model=pair.baseline, candidate_model=pair.candidate, task=b.task, key=b.key,
                item_id=b.item_id, direction="right->wrong" if b.correct else "wrong->right", gold=b.gold,
                baseline_answer=b.extracted, candidate_answer=c.extracted,
            ))
    return flips


def _across_definitions(base: RunRecords, cand: RunRecords, pairs: list[ModelPair], result: Comparison) -> None:
    """For ``--across-definitions``: the definitions may differ (said in a note); the outputs must not."""
    definition_problems = [p for p in result.problems if p.code == "metric-definitions"]
    result.problems = [p for p in result.problems if p.code != "metric-definitions"]
    if base.metrics is not None and cand.metrics is not None:
        diff = _differences(_relevant(base.metrics, True), _relevant(cand.metrics, True))
        shown = "; ".join(f"{path}: {_short(b)} vs {_short(c)}" for path, b, c in diff[:4]) or "none"
        result.notes.append(f"definitions compared (baseline vs candidate): {shown}")
    else:
        result.problems.extend(definition_problems)
    for pair in pairs:
        b, c = base.of_model(pair.baseline), cand.of_model(pair.candidate)
        differ = sorted((k for k in b.keys() & c.keys() if b[k].output != c[k].output), key=_natural)
        if differ:
            result.problems.append(Problem("outputs-differ", f"{pair.label}: {len(differ)} sample(s) have different "
                                           f"outputs (e.g. {differ[0]}); --across-definitions compares the same "
                                           "outputs under two definitions (a run and its `medmim-eval rescore`)"))


def _changes(base: dict[str, SampleRecord], cand: dict[str, SampleRecord], pair: ModelPair) -> list[Change]:
    out = []
    for key in sorted(base.keys() & cand.keys(), key=_natural):
        b, c = base[key], cand[key]
        if b.error is not None or c.error is not None:
            continue
        if b.kind == "closed":
            if (b.extracted, b.correct) == (c.extracted, c.correct):
                continue
            answers = (b.extracted, c.extracted)
        else:
            bv, cv = _value(b), _value(c)
            if bv is not None and cv is not None and abs(bv - cv) <= 1e-9:
                continue
            answers = tuple(None if v is None else f"{v:.2f}" for v in (bv, cv))  # type: ignore[assignment]
        out.append(Change(
            baseline_model=pair.baseline, candidate_model=pair.candidate, task=b.task, kind=b.kind, key=key,
            item_id=b.item_id, gold=b.gold if b.kind == "closed" else "", baseline_answer=answers[0],
            candidate_answer=answers[1], baseline_rule=_rule(b), candidate_rule=_rule(c),
            baseline_correct=b.correct, candidate_correct=c.correct))
    return out


def _rule(record: SampleRecord) -> str | None:
    """What decided a closed answer: the judge's verdict, else the rule (with its version)."""
    if record.judge is not None and record.judge.outcome == "decided":
        return f"judge {record.judge.judge}"
    if record.extraction is not None:
        return f"rule v{record.extraction.rule_version}: {record.extraction.rule}"
    return None
