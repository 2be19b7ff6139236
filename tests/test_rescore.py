"""``medmim-eval rescore``: new extraction and scores from a run's stored outputs, never calling a model,
and ``compare --across-definitions``, which lists the samples whose outcome a definition changed.

The source runs are real runs on the synthetic suite: the baselines for closed questions and the
test plugin's ``echo-test`` adapter, whose open answers are text. Rescoring happens without the
plugin on the path, so the model that wrote the answers cannot be reached.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

TASKS = "synth-temporal,synth-comparison:closed"
MODELS = "majority,echo-test"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("rescore-home")
    return {"MEDMIM_CACHE_DIR": str(folder / "cache"), "XDG_CONFIG_HOME": str(folder / "config"),
            "XDG_DATA_HOME": str(folder / "data")}


@pytest.fixture(scope="module")
def source_run(plugin_site: Path, home: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with closed and open answers, open score = BLEU and ROUGE-L."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MEDMIM_")]:
            patch.delenv(name)
        out = tmp_path_factory.mktemp("source") / "run"
        result = run_cli("run", "-m", MODELS, "-t", TASKS, "--limit", "8", "-o", str(out), "-q",
                         "--open-metrics", "components=bleu+rougeL", pythonpath=[plugin_site], env=home)
        assert result.returncode == 0, result.stderr
        return out


def _copy(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    return target


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def _write_records(run: Path, records: list[dict[str, Any]]) -> None:
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def test_a_rescore_under_another_open_definition_needs_no_model(source_run: Path, home: dict[str, str],
                                                                tmp_path: Path) -> None:
    before = _snapshot(source_run)
    out = tmp_path / "rougeL-only"
    result = run_cli("rescore", str(source_run), "--open-metrics", "components=rougeL", "-o", str(out), "-q", env=home)
    assert result.returncode == 0, result.stderr
    assert "without calling a model" in result.stderr and str(out) in result.stderr
    assert _snapshot(source_run) == before  # the source is never written to
    open_records = [r for r in _records(out) if r["kind"] == "open"]
    assert open_records and all(r["model"] == "echo-test" or r["output"] == "" for r in open_records)
    assert all(r["scores"]["open_score"] == r["scores"]["rougeL_recall"] and "bleu" not in r["scores"]
               for r in open_records)
    assert any(r["scores"]["open_score"] > 0 for r in open_records)  # echo-test answers in words
    manifest, source_manifest = _json(out / "manifest.json"), _json(source_run / "manifest.json")
    assert manifest["metrics"]["open"]["components"] == ["rougeL_recall"]
    assert manifest["rescored_from"]["run_id"] == source_manifest["run_id"] != manifest["run_id"]
    assert manifest["rescored_from"]["metrics"] == source_manifest["metrics"]
    assert [m["id"] for m in manifest["models"]] == [m["id"] for m in source_manifest["models"]]
    cells = {(c["model"], c["task"], c["kind"]): c for c in _json(out / "results.json")["cells"]}
    expected = sum(r["scores"]["open_score"] for r in open_records if r["model"] == "echo-test") / 8
    assert cells[("echo-test", "synth-temporal", "open")]["score"] == pytest.approx(expected)
    board = run_cli("leaderboard", str(out), "--format", "json", env=home)
    assert board.returncode == 0, board.stderr
    shown = [row for row in json.loads(board.stdout)["rows"] if row["model"] == "echo-test" and row["kind"] == "open"]
    assert shown and shown[0]["score"] == pytest.approx(expected)


def test_a_rescore_under_the_same_definition_reproduces_the_run_exactly(source_run: Path, home: dict[str, str],
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "same"
    result = run_cli("rescore", str(source_run), "-o", str(out), "-q", env=home)
    assert result.returncode == 0, result.stderr
    assert "0 changed outcome" in result.stderr
    assert _records(out) == _records(source_run)
    old, new = _json(source_run / "results.json"), _json(out / "results.json")
    assert any(c["shortcut"] is not None for c in old["cells"])  # the text-only baselines are carried over too
    for part in ("cells", "by_source", "metrics", "bootstrap"):
        assert new[part] == old[part], part


def test_the_default_output_is_a_new_folder_beside_the_run_named_for_the_definition(
        source_run: Path, home: dict[str, str], tmp_path: Path) -> None:
    run = _copy(source_run, tmp_path / "run")
    first = run_cli("rescore", str(run), "--open-metrics", "components=bleu", "-q", env=home)
    assert first.returncode == 0, first.stderr
    (made,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.rescore-")]
    again = run_cli("rescore", str(run), "--open-metrics", "components=bleu", "-q", env=home)
    assert again.returncode == 0, again.stderr  # the same definition: the same folder, replaced
    other = run_cli("rescore", str(run), "--open-metrics", "components=rougeL", "-q", env=home)
    assert other.returncode == 0, other.stderr
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("run.rescore-")]) == 2 and made.is_dir()


def test_missing_outputs_are_refused_in_one_line_and_nothing_is_written(source_run: Path, home: dict[str, str],
                                                                       tmp_path: Path) -> None:
    run = _copy(source_run, tmp_path / "run")
    records = _records(run)
    records[3]["output"] = None
    _write_records(run, records)
    out = tmp_path / "out"
    result = run_cli("rescore", str(run), "-o", str(out), env=home)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "1 finished record(s) have no stored output" in line and records[3]["key"] in line
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("rescore", str(empty), env=home)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no model outputs to rescore" in result.stderr


def test_a_rescore_never_overwrites_a_run(source_run: Path, home: dict[str, str], tmp_path: Path) -> None:
    itself = run_cli("rescore", str(source_run), "-o", str(source_run), env=home)
    assert itself.returncode == 2 and "never overwrites its source" in itself.stderr
    other = _copy(source_run, tmp_path / "other")
    into_other = run_cli("rescore", str(source_run), "-o", str(other), env=home)
    assert into_other.returncode == 2 and "already holds a run" in into_other.stderr


def test_errored_records_are_carried_over_unscored(source_run: Path, home: dict[str, str], tmp_path: Path) -> None:
    run = _copy(source_run, tmp_path / "run")
    records = _records(run)
    records[0].update(output=None, extracted=None, correct=None, scores={},
                      error={"type": "RuntimeError", "message": "server gone", "attempts": 1})
    _write_records(run, records)
    out = tmp_path / "out"
    result = run_cli("rescore", str(run), "-o", str(out), "-q", env=home)
    assert result.returncode == 0, result.stderr
    assert "1 errored record(s) carried over unscored" in result.stderr
    assert _records(out)[0]["error"]["message"] == "server gone"
    assert _json(out / "manifest.json")["invocations"][-1]["status"] == "finished with errors"


# ------------------------------------------------------------------------ compare --across-definitions


def _with_an_older_extraction(source_run: Path, target: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of the run as if an older rule had left one right closed answer unparseable."""
    run = _copy(source_run, target)
    (run / "results.json").unlink()
    records = _records(run)
    planted = next(r for r in records if r["kind"] == "closed" and r["correct"] and r["model"] == "echo-test")
    planted.update(extracted="unparseable", correct=False, scores={"accuracy": 0.0},
                   extraction={"rule_version": "2", "rule": "no rule", "detail": "older rule"})
    _write_records(run, records)
    manifest = _json(run / "manifest.json")
    manifest["metrics"]["extraction_rule_version"] = "2"
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run, planted


def test_compare_across_definitions_lists_exactly_the_samples_a_rescore_changed(
        source_run: Path, home: dict[str, str], tmp_path: Path) -> None:
    old, planted = _with_an_older_extraction(source_run, tmp_path / "old")
    new = tmp_path / "new"
    result = run_cli("rescore", str(old), "-o", str(new), "-q", env=home)
    assert result.returncode == 0 and "1 changed outcome" in result.stderr, result.stderr

    refused = run_cli("compare", str(old), str(new), env=home)
    assert refused.returncode == 2 and "--across-definitions" in refused.stderr

    report = run_cli("compare", str(old), str(new), "--across-definitions", "--json", env=home)
    data = json.loads(report.stdout)
    assert data["problems"] == [] and data["status"] == "pass"
    assert [(c["key"], c["baseline_answer"], c["candidate_answer"]) for c in data["changes"]] == [
        (planted["key"], "unparseable", planted["gold"])]
    change = data["changes"][0]
    assert change["baseline_rule"].startswith("rule v2") and change["candidate_rule"].startswith("rule v3")
    assert any("extraction_rule_version: '2' vs '3'" in note for note in data["notes"])
    table = run_cli("compare", str(old), str(new), "--across-definitions", env={**home, "COLUMNS": "240"})
    assert "Outcome changed between the two definitions (1)" in table.stdout and planted["key"] in table.stdout


def test_compare_across_definitions_refuses_different_outputs(source_run: Path, home: dict[str, str],
                                                             tmp_path: Path) -> None:
    other = _copy(source_run, tmp_path / "other")
    records = _records(other)
    closed = next(r for r in records if r["kind"] == "closed")
    closed["output"] = closed["output"] + " (a different answer)"
    _write_records(other, records)
    result = run_cli("compare", str(source_run), str(other), "--across-definitions", env=home)
    assert result.returncode == 2
    assert "not comparable (outputs-differ)" in result.stderr and closed["key"] in result.stderr


def test_records_written_before_rule_v3_get_their_options_from_the_task_data(
        source_run: Path, home: dict[str, str], tmp_path: Path) -> None:
    run = _copy(source_run, tmp_path / "run")
    records = _records(run)
    for record in records:
        record.pop("options", None)
        record.pop("extraction", None)
    _write_records(run, records)
    out = tmp_path / "out"
    result = run_cli("rescore", str(run), "-o", str(out), "-q", env=home)
    assert result.returncode == 0, result.stderr
    rescored = _records(out)
    assert [r["options"] for r in rescored] == [r["options"] for r in _records(source_run)]
    assert [r["extracted"] for r in rescored] == [r["extracted"] for r in _records(source_run)]


@pytest.mark.parametrize("items", [(), ("bertscore.model=minilm",), ("components=bleu+rougeL,bleu.tokenize=intl",),
                                   ("bertscore.layer=9,bertscore.idf=true,rouge.stemmer=true",)])
def test_a_recorded_open_definition_is_rebuilt_exactly(items: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    from medmim_eval.metrics import OpenMetricsConfig

    monkeypatch.delenv("MEDMIM_OPEN_METRICS", raising=False)
    config = OpenMetricsConfig.parse(items)
    assert OpenMetricsConfig.from_definition(config.definition()).definition() == config.definition()
