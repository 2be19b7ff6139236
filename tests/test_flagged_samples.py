"""A sample with more images than the model accepts is never truncated: it is recorded as a
``TooManyImagesError`` and counted per model in the footer of every view."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from mixed_tasks import mixed_task

from medmim_eval.records import RecordStore


def _footer_counts(out: Path, tmp_path: Path) -> dict[str, str]:
    texts = {}
    for fmt in ("markdown", "html", "json", "latex"):
        target = tmp_path / f"board.{fmt}"
        result = run_cli("leaderboard", str(out), "--format", fmt, "--output", str(target), "--max-records", "0")
        assert result.returncode == 0, result.stderr
        texts[fmt] = target.read_text()
    rich = run_cli("leaderboard", str(out))
    assert rich.returncode == 0, rich.stderr
    texts["rich"] = rich.stdout
    return texts


def test_a_model_that_takes_two_images_gets_no_three_image_sample(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_models import tiny_llava

    task = mixed_task(tmp_path / "data", [2, 3, 2])
    out = tmp_path / "run"
    result = run_cli("run", "--models", f"hf-llava:{tiny_llava()},format=mantis_llama3,max_images=2,label=tiny2",
                     "--tasks", str(task), "--max-new-tokens", "4", "--output", str(out), "--quiet")
    assert result.returncode == 0, result.stderr  # flagged, not failed: rerunning would not change it
    assert "2 sample(s) not evaluated: more images than the model accepts" in result.stderr
    records = list(RecordStore(out).load().values())
    flagged = [r for r in records if r.n_images == 3]
    assert len(flagged) == 2 and len(records) == 6
    for record in flagged:
        assert record.error is not None and record.error.type == "TooManyImagesError"
        assert "at most max_images=2" in record.error.message
        assert record.output is None and record.sent is None and record.correct is None
    assert all(r.error is None and r.sent.n_images == 2 for r in records if r.n_images == 2)
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert sorted((c["kind"], c["errors"], c["too_many_images"], c["n_scored"]) for c in cells) == [
        ("closed", 1, 1, 2), ("open", 1, 1, 2)]

    texts = _footer_counts(out, tmp_path)
    line = "tiny2: 2 not evaluated because they have more images than the model accepts"
    for fmt in ("markdown", "html", "latex", "rich"):
        assert line in " ".join(texts[fmt].split()), fmt
    exported = json.loads(texts["json"])
    assert exported["not_scored"] == {"tiny2": {"too_many_images": 2, "other_errors": 0}}
    assert {r["too_many_images"] for r in exported["rows"]} == {1}


def test_an_adapter_refusal_keeps_what_it_sent_and_other_errors_are_counted_apart(plugin_site: Path,
                                                                                   tmp_path: Path) -> None:
    task = mixed_task(tmp_path / "data", [2, 2, 3])
    out = tmp_path / "run"
    result = run_cli("run", "--models", "echo-test,refuse_over=2,fail=mixed#0#,label=echo", "--tasks", str(task),
                     "--output", str(out), "--no-cache", "--quiet", pythonpath=[plugin_site])
    assert result.returncode != 0 and "1 sample(s) ended in errors" in result.stderr
    records = RecordStore(out).load().values()
    refused = [r for r in records if r.error and r.error.type == "TooManyImagesError"]
    assert len(refused) == 2 and all(r.n_images == 3 for r in refused)
    assert all(r.sent is not None and r.sent.notes == ["refused before sending: too many images"] for r in refused)
    assert "at most max_images=2" in refused[0].error.message  # type: ignore[union-attr]

    texts = _footer_counts(out, tmp_path)
    expected = ("echo: 2 not evaluated because they have more images than the model accepts (nothing sent, never "
                "truncated); 1 errored otherwise (rerun to retry)")
    assert f"- {expected}" in texts["markdown"]
    assert expected in texts["html"]
    assert json.loads(texts["json"])["not_scored"] == {"echo": {"too_many_images": 2, "other_errors": 1}}
    notes = " ".join(texts["rich"].split())
    assert "1 sample(s) ended in a model error" in notes and "2 sample(s) have more images than their model" in notes
