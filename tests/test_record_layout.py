"""``samples.jsonl`` holds one line per (model, sample) once a run finishes, and every reader gives
the same numbers on a run written in the earlier layout: an open answer appended twice (pending,
then scored) and an errored attempt followed by its retry."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from medmim_eval.records import RecordStore, merge_shards, shard_name
from medmim_eval.schema import SampleRecord

# Module-scoped fixtures run before the per-test environment fixture, so they pass their own.
ENV = {"MEDMIM_OPEN_METRICS": "bertscore.model=minilm", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines() if line.strip()]


def _pending_version(record: dict[str, Any]) -> dict[str, Any]:
    """The line an open answer had before its batched score (BERTScore) was computed."""
    scores = {k: v for k, v in record["scores"].items() if k not in ("bertscore_recall", "open_score")}
    return {**record, "scores": scores, "scores_pending": ["bertscore_recall"]}


def _write(run: Path, records: list[dict[str, Any]]) -> None:
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    (target / "results.json").unlink()  # every view recomputes from the records
    return target


@pytest.fixture(scope="module")
def finished(plugin_site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run of toy-shapes (12 closed, 1 open) whose first attempt at one sample failed, then resumed."""
    root = tmp_path_factory.mktemp("layout")
    out, log = root / "new" / "run", root / "calls.jsonl"
    env = dict(ENV, MEDMIM_CACHE_DIR=str(root / "cache"))
    base = ["run", "-t", "toy-shapes", "-o", str(out), "-q", "--no-cache"]
    first = run_cli(*base, "-m", f"echo-test,fail=#3#,label=echo,log={log}", pythonpath=[plugin_site], env=env)
    assert first.returncode != 0 and "ended in errors" in first.stderr
    attempts = _lines(out)
    second = run_cli(*base, "-m", f"echo-test,label=echo,log={log}", pythonpath=[plugin_site], env=env)
    assert second.returncode == 0, second.stderr
    return {"root": root, "new": out, "first_attempt": attempts, "env": env, "log": log, "base": base}


@pytest.fixture(scope="module")
def old_layout(finished: dict[str, Any]) -> Path:
    """The same run as the earlier layout wrote it: every attempt, and each open answer twice."""
    old = finished["root"] / "old" / "run"
    shutil.copytree(finished["new"], old)
    errored = {r["key"]: r for r in finished["first_attempt"] if r["error"]}
    lines: list[dict[str, Any]] = []
    for record in _lines(finished["new"]):
        if record["key"] in errored:
            lines.append(errored[record["key"]])
        if record["kind"] == "open":
            lines.append(_pending_version(record))
        lines.append(record)
    _write(old, lines)
    return old


def test_a_finished_run_has_one_line_per_sample_and_model(finished: dict[str, Any]) -> None:
    lines = _lines(finished["new"])
    assert len(lines) == len({(r["model"], r["key"]) for r in lines}) == 13
    assert [r for r in finished["first_attempt"] if r["error"]], "the first attempt must have failed once"
    assert all(r["error"] is None and not r["scores_pending"] for r in lines)
    (open_record,) = [r for r in lines if r["kind"] == "open"]
    assert open_record["scores"]["open_score"] == pytest.approx(100.0, abs=1e-3)


def test_the_old_layout_really_has_more_lines_than_samples(old_layout: Path) -> None:
    lines = _lines(old_layout)
    assert len(lines) == 13 + 2 and sum(r["kind"] == "open" for r in lines) == 2
    assert sum(r["error"] is not None for r in lines) == 1


def test_views_give_the_same_numbers_on_both_layouts(finished: dict[str, Any], old_layout: Path,
                                                     tmp_path: Path) -> None:
    from medmim_eval.exports import render
    from medmim_eval.exports.drilldown import record_groups
    from medmim_eval.leaderboard import build_view, load_run

    old, new = _copy(old_layout, tmp_path / "old" / "run"), _copy(finished["new"], tmp_path / "new" / "run")
    old_run, new_run = load_run(old, by_source=True), load_run(new, by_source=True)
    assert [c.model_dump() for c in old_run.cells] == [c.model_dump() for c in new_run.cells]
    assert [c.model_dump() for c in old_run.by_source] == [c.model_dump() for c in new_run.by_source]
    assert {c.kind: c.n for c in new_run.cells} == {"closed": 12, "open": 1}
    for fmt in ("markdown", "csv", "json", "latex"):
        shown = [render(fmt, build_view([run], ci=True)).replace(str(run), "RUN") for run in (old, new)]
        assert shown[0] == shown[1], fmt
    old_groups = [(g.model, g.task, [r.model_dump() for r in g.records]) for g in record_groups(old_run)]
    new_groups = [(g.model, g.task, [r.model_dump() for r in g.records]) for g in record_groups(new_run)]
    assert old_groups == new_groups and sum(len(g[2]) for g in new_groups) == 13


def test_compare_sees_the_same_records_on_both_layouts(finished: dict[str, Any], old_layout: Path) -> None:
    from medmim_eval.compare import compare_runs, load_run

    old, new = load_run(old_layout, "baseline"), load_run(finished["new"], "candidate")
    assert old.records == new.records and len(new.records) == 13
    comparison = compare_runs(old_layout, finished["new"])
    assert not comparison.problems and not comparison.flips and comparison.cells
    assert all(c.delta == 0 and c.baseline == c.candidate for c in comparison.cells)


def test_a_shard_in_the_old_layout_merges_to_the_same_records(finished: dict[str, Any], old_layout: Path,
                                                             tmp_path: Path) -> None:
    shutil.copy(old_layout / "samples.jsonl", tmp_path / shard_name(1))
    report = merge_shards(tmp_path)
    assert report.appended == 15 and report.shards == [shard_name(1)]
    assert RecordStore(tmp_path).load() == RecordStore(finished["new"]).load()


def test_resuming_an_old_layout_run_calls_no_model_and_leaves_one_line_per_sample(
        plugin_site: Path, finished: dict[str, Any], old_layout: Path, tmp_path: Path) -> None:
    run = _copy(old_layout, tmp_path / "run")
    calls = finished["log"].read_text().count("\n")
    base = [a if a != str(finished["new"]) else str(run) for a in finished["base"]]
    result = run_cli(*base, "-m", f"echo-test,label=echo,log={finished['log']}", pythonpath=[plugin_site],
                     env=finished["env"])
    assert result.returncode == 0, result.stderr
    assert finished["log"].read_text().count("\n") == calls
    assert _lines(run) == _lines(finished["new"])
    cells = json.loads((run / "results.json").read_text())["cells"]
    assert cells == json.loads((finished["new"] / "results.json").read_text())["cells"]


def test_an_answer_killed_before_its_score_was_written_is_scored_on_resume(
        plugin_site: Path, finished: dict[str, Any], tmp_path: Path) -> None:
    run = _copy(finished["new"], tmp_path / "run")
    complete = _lines(run)
    _write(run, [_pending_version(r) if r["kind"] == "open" else r for r in complete])
    calls = finished["log"].read_text().count("\n")
    base = [a if a != str(finished["new"]) else str(run) for a in finished["base"]]
    result = run_cli(*base, "-m", f"echo-test,label=echo,log={finished['log']}", pythonpath=[plugin_site],
                     env=finished["env"])
    assert result.returncode == 0, result.stderr
    assert finished["log"].read_text().count("\n") == calls  # the answer is kept; only the score is computed
    resumed = _lines(run)
    assert len(resumed) == 13 and not any(r["scores_pending"] for r in resumed)
    (before,) = [r for r in complete if r["kind"] == "open"]
    (after,) = [r for r in resumed if r["kind"] == "open"]
    assert after["scores"] == pytest.approx(before["scores"], abs=1e-6)
    assert after["output"] == before["output"] and after["finished_at"] == before["finished_at"]


def test_a_file_with_a_corrupt_line_is_appended_to_not_rewritten(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    record = SampleRecord(key="k", task="t", model="m", kind="closed", ability="a", source="s", item_id="i",
                          n_images=2, gold="A", output="A", extracted="A", correct=True)
    store.append(record)
    store.append(record)
    store.close()
    with open(store.path, "a") as handle:
        handle.write("{not json}\n")
    reader = RecordStore(tmp_path)
    latest = reader.load(repair=False)
    assert reader.lines_read == 3 and reader.corrupt_lines == 1 and not reader.needs_rewrite(len(latest))
    clean = RecordStore(tmp_path, "other.jsonl")
    clean.append(record)
    clean.append(record)
    clean.close()
    assert clean.needs_rewrite(len(clean.load())) and os.path.exists(clean.path)
    clean.rewrite(clean.load().values())
    assert clean.path.read_text().count("\n") == 1
