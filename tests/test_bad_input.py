"""Bad input: one clear line naming the file/index or the near names, non-zero exit, no traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image


def _item(images: list[str], user: str, answer: str) -> dict:
    return {"id": "x", "images": images, "source": "T",
            "conversation": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _write_task(folder: Path, items: list[dict] | str) -> Path:
    for name in ("a.png", "b.png", "c.png"):
        Image.new("L", (8, 8), 100).save(folder / name)
    path = folder / "task.json"
    path.write_text(items if isinstance(items, str) else json.dumps(items))
    return path


GOOD = _item(["a.png", "b.png"], "<image><image>Q?\nA: yes\nB: no\n", "A: yes")


def _run(task: Path, tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli("run", "-m", "random", "-t", str(task), "-o", str(tmp_path / "out"), "-q", *extra)


def _assert_clean_error(result, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_malformed_json(tmp_path: Path) -> None:
    task = _write_task(tmp_path, '[{"id": "x", "images": ["a.png"],')
    _assert_clean_error(_run(task, tmp_path), "task.json: malformed JSON at line 1")
    assert not (tmp_path / "out").exists()


def test_image_count_mismatch_names_the_index(tmp_path: Path) -> None:
    bad = _item(["a.png", "b.png", "c.png"], "<image><image>Q?\nA: yes\nB: no\n", "A: yes")
    task = _write_task(tmp_path, [GOOD, bad])
    _assert_clean_error(_run(task, tmp_path), "task.json: 1 invalid item(s)", "item 1 (id x): 2 <image> token(s) in the prompt but 3 image(s)")


def test_gold_answer_naming_no_option_and_unparseable_options(tmp_path: Path) -> None:
    no_option = _item(["a.png", "b.png"], "<image><image>Q?\nA: yes\nB: no\n", "C: maybe")
    disorder = _item(["a.png", "b.png"], "<image><image>Q?\nA: yes\nA: no\n", "A: yes")
    task = _write_task(tmp_path, [no_option, GOOD, disorder])
    _assert_clean_error(_run(task, tmp_path), "2 invalid item(s)", "item 0 (id x): gold answer 'C: maybe' names none of the options A, B",
                        "item 2 (id x): option A after option A")


def test_missing_image_is_reported_before_any_model_call(tmp_path: Path) -> None:
    task = _write_task(tmp_path, [GOOD])
    (tmp_path / "b.png").unlink()
    result = _run(task, tmp_path)
    _assert_clean_error(result, "1 of 2 images missing", str(tmp_path / "b.png"), "--skip-missing", "No model was called")
    assert not (tmp_path / "out" / "samples.jsonl").exists()


def test_corrupt_image_is_reported_and_skip_missing_runs_the_rest(tmp_path: Path) -> None:
    second = _item(["c.png", "a.png"], "<image><image>Q?\nA: yes\nB: no\n", "B: no")
    task = _write_task(tmp_path, [GOOD, second])
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    _assert_clean_error(_run(task, tmp_path), f"unreadable image {tmp_path / 'b.png'}")
    result = _run(task, tmp_path, "--skip-missing")
    assert result.returncode == 0, result.stderr
    assert "skipped in file:task: 1 samples (0 missing, 1 unreadable images)" in result.stderr
    records = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
    assert len(records) == 1 and json.loads(records[0])["gold"] == "B"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tasks"][0]["n_skipped"] == 1


@pytest.mark.parametrize("args, needle", [
    (["-m", "randon", "-t", "synth"], "unknown adapter 'randon'. Did you mean 'random'?"),
    (["-m", "random", "-t", "held-out-rda"], "unknown task 'held-out-rda'. Did you mean 'held-out-rad'"),
    (["-m", "random", "-t", "nowhere.json"], "task file 'nowhere.json' does not exist"),
])
def test_unknown_names(args: list[str], needle: str, tmp_path: Path) -> None:
    result = run_cli("run", *args, "-o", str(tmp_path / "out"))
    _assert_clean_error(result, needle)
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_benchmark_file_points_at_data_status(tmp_path: Path) -> None:
    result = run_cli("run", "-m", "random", "-t", "held-out-rad", "--data-dir", str(tmp_path / "empty"), "-o", str(tmp_path / "o"))
    _assert_clean_error(result, "Med_MIM_benchmark_Held_out_RAD.json: file not found")


def test_missing_rad_images_with_the_real_file(shared_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "med-mim").mkdir(parents=True)
    shutil.copy(shared_data / "med-mim" / "Med_MIM_benchmark_Held_out_RAD.json", data / "med-mim")
    result = run_cli("run", "-m", "random", "-t", "held-out-rad", "--data-dir", str(data), "-o", str(tmp_path / "o"))
    _assert_clean_error(result, "held-out-rad: 285 of 285 images missing", "medmim-eval data status")
    status = run_cli("data", "status", "--data-dir", str(data))
    assert status.returncode == 0
    assert "held-out-rad           366 items; images 0/285 present -> not runnable" in status.stdout
    assert "vqa-rad: VQA-RAD, open (CC0)" in status.stdout


def _one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_an_output_folder_under_a_file_is_one_error_line(tmp_path: Path) -> None:
    task = _write_task(tmp_path, [GOOD])
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    out = tmp_path / "notes.txt" / "runs" / "r1"
    line = _one_line_error(run_cli("run", "-m", "random", "-t", str(task), "-o", str(out), "-q"))
    assert line == f"error: cannot create the run directory {out}: {tmp_path / 'notes.txt'} is a file, not a folder; " \
        "pass another --output"


def test_an_output_folder_even_root_cannot_write_is_one_error_line(tmp_path: Path) -> None:
    # sysfs takes no new folders, not even from root (the tests run as root): a tree nobody can write.
    out = Path("/sys/medmim-eval-test/run")
    try:
        out.mkdir(parents=True)
    except OSError as exc:
        reason = exc.strerror
    else:
        out.rmdir()
        out.parent.rmdir()
        pytest.skip("this /sys accepts new folders")
    task = _write_task(tmp_path, [GOOD])
    line = _one_line_error(run_cli("run", "-m", "random", "-t", str(task), "-o", str(out), "-q"))
    assert line == f"error: cannot create the run directory {out}: {reason}; pass another --output"


def test_an_existing_output_folder_without_write_access_is_one_error_line(tmp_path: Path) -> None:
    task = _write_task(tmp_path, [GOOD])
    out = Path("/sys/kernel")  # a folder that exists, where not even root may create a file
    if not out.is_dir():
        pytest.skip("no /sys/kernel here")
    line = _one_line_error(run_cli("run", "-m", "random", "-t", str(task), "-o", str(out), "-q"))
    assert line.startswith(f"error: cannot write files in the run directory {out}: ") and line.endswith("pass another --output")


# --- run directories the views cannot read, files they cannot write ------------------------------

@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    task = _write_task(tmp_path, [GOOD, _item(["b.png", "a.png"], "<image><image>Other?\nA: yes\nB: no\n", "B: no")])
    assert run_cli("run", "-m", "random", "-t", str(task), "-o", str(tmp_path / "done"), "-q").returncode == 0
    return tmp_path / "done"


def _broken_copy(run: Path, target: Path, name: str, content: str | None) -> Path:
    """``run`` copied to ``target`` with file ``name`` replaced by ``content`` (None: by a folder)."""
    shutil.copytree(run, target)
    (target / name).unlink()
    if content is None:
        (target / name).mkdir()
    else:
        (target / name).write_text(content)
    return target


@pytest.mark.parametrize("name, content, needle", [
    ("results.json", '{"run_id": "x", "cells": [', "results.json: unreadable results (JSONDecodeError); delete it"),
    ("results.json", None, "results.json: unreadable results (Is a directory)"),
    ("samples.jsonl", None, "samples.jsonl: cannot read the sample records (Is a directory)"),
    ("manifest.json", None, "manifest.json: not a readable run manifest (Is a directory)"),
])
def test_a_run_directory_the_leaderboard_cannot_read_is_one_error_line(finished_run: Path, tmp_path: Path, name: str,
                                                                       content: str | None, needle: str) -> None:
    broken = _broken_copy(finished_run, tmp_path / "broken", name, content)
    if name != "results.json":
        (broken / "results.json").unlink()  # so the leaderboard must read the broken file
    assert needle in _one_line_error(run_cli("leaderboard", str(broken)))


@pytest.mark.parametrize("name, needle", [
    ("samples.jsonl", "samples.jsonl: cannot read the sample records (Is a directory)"),
    ("manifest.json", "manifest.json: not a readable run manifest (Is a directory)"),
])
def test_a_run_directory_compare_cannot_read_is_one_error_line(finished_run: Path, tmp_path: Path, name: str,
                                                               needle: str) -> None:
    broken = _broken_copy(finished_run, tmp_path / "broken", name, None)
    assert needle in _one_line_error(run_cli("compare", str(finished_run), str(broken)))
    assert "run directory" in _one_line_error(run_cli("compare", str(finished_run / "samples.jsonl"), str(finished_run)))


def test_view_files_that_cannot_be_written_are_one_error_line(finished_run: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    table = tmp_path / "notes.txt" / "table.md"
    for args, option in ((["leaderboard", str(finished_run), "-o", str(table)], "--output"),
                         (["leaderboard", str(finished_run), "--format", "csv", "-o", str(table)], "--output"),
                         (["compare", str(finished_run), str(finished_run), "--write-json", str(table)], "--write-json")):
        line = _one_line_error(run_cli(*args))
        assert line == f"error: cannot write {table}: {tmp_path / 'notes.txt'} is a file, not a folder; pass another {option}"


def test_a_results_file_that_cannot_be_replaced_keeps_every_record(finished_run: Path, tmp_path: Path) -> None:
    blocked = _broken_copy(finished_run, tmp_path / "blocked", "results.json", None)
    (blocked / "samples.jsonl").write_text((blocked / "samples.jsonl").read_text().splitlines(keepends=True)[0])
    task = tmp_path / "task.json"
    line = _one_line_error(run_cli("run", "-m", "random", "-t", str(task), "-o", str(blocked), "-q"))
    assert line.startswith(f"error: cannot write {blocked / 'results.json'}: Is a directory; move what is in the way")
    assert len((blocked / "samples.jsonl").read_text().splitlines()) == 2  # the missing sample was answered and kept
