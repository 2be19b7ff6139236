"""``medmim-eval explain``: per-sample extraction decisions, recorded by runs and readable in old records."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.records import RecordStore


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("explain") / "run"
    result = run_cli("run", "--models", "random", "--tasks", "synth:closed", "--output", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_every_closed_record_holds_its_options_and_decision(synth_run: Path) -> None:
    records = list(RecordStore(synth_run).load(repair=False).values())
    assert records and all(r.kind == "closed" for r in records)
    for record in records:
        assert record.options and record.extracted in record.options
        assert record.extraction is not None and record.extraction.rule_version == "3"
        assert record.extraction.rule == "letter statement (whole reply is a letter)"


def test_explain_prints_reply_options_and_decision(synth_run: Path) -> None:
    record = next(iter(RecordStore(synth_run).load(repair=False).values()))
    result = run_cli("explain", str(synth_run), "--sample", record.key)
    assert result.returncode == 0, result.stderr
    assert f"sample:    {record.key}" in result.stdout
    for letter, text in (record.options or {}).items():
        assert f"  {letter}: {text}" in result.stdout
    assert f"  | {record.output}" in result.stdout
    assert "decided by: letter statement (whole reply is a letter) (rule v3)" in result.stdout


def test_explain_unknown_sample_is_one_line(synth_run: Path) -> None:
    result = run_cli("explain", str(synth_run), "--sample", "no-such-key")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no record of sample 'no-such-key'" in result.stderr


def test_records_from_before_rule_v3_still_read(synth_run: Path, tmp_path: Path) -> None:
    lines = (synth_run / "samples.jsonl").read_text().splitlines()
    old = json.loads(lines[0])
    options = old.pop("options")
    old.pop("extraction")
    old["output"] = "Let's analyze each option:\n(A) first: unlikely.\n(B) second: unlikely.\n\nSo the answer is (C)."
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "samples.jsonl").write_text(json.dumps(old) + "\n")
    result = run_cli("explain", str(run_dir), "--sample", old["key"])
    assert result.returncode == 0, result.stderr
    assert "options: not recorded" in result.stdout and "decided by: not recorded" in result.stdout
    old["options"] = options
    (run_dir / "samples.jsonl").write_text(json.dumps(old) + "\n")
    result = run_cli("explain", str(run_dir), "--sample", old["key"])
    assert "rule v3 would now give C by letter statement (answer statement)" in result.stdout
