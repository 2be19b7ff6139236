"""``audit contamination`` on real image files and Med-MIM files written here and on the official
release, and ``run --exclude`` / ``--exclude-contaminated`` (clean subsets marked in every view)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from medmim_eval.medmim_format import load_medmim_file


def _texture(seed: int, size: int = 192) -> "object":
    """A real, structured grey image (smooth random texture): distinct seeds give unrelated images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8), mode="L")
    return small.resize((size, size), Image.BICUBIC).convert("RGB")


def _near_copy(image: "object") -> "object":
    """Resized, cropped by 5%, 8% brighter: saved as JPEG quality 75 by the caller."""
    from PIL import ImageEnhance

    w, h = image.size  # type: ignore[attr-defined]
    small = image.resize((w * 3 // 4, h * 3 // 4))  # type: ignore[attr-defined]
    dx, dy = small.width // 40, small.height // 40
    return ImageEnhance.Brightness(small.crop((dx, dy, small.width - dx, small.height - dy))).enhance(1.08)


def _item(item_id: str, images: list[str], question: str, answer: str, options: list[str] | None = None) -> dict:
    user = "<image>" * len(images) + question
    if options:
        user += "".join(f"\n{chr(65 + i)}: {o}" for i, o in enumerate(options)) + "\n"
    return {"id": item_id, "images": images, "source": "T",
            "conversation": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


LONG_ANSWER = ("The second scan shows that the small nodule in the right upper lobe has grown to about twice its "
               "earlier size since the first scan")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A benchmark and a training file with real PNG/JPEG images, one match of each kind planted."""
    bench, train = tmp_path / "bench", tmp_path / "train"
    bench.mkdir()
    train.mkdir()
    for seed, name in enumerate(["a", "b", "c", "d", "e", "f", "g", "h"]):
        _texture(seed).save(bench / f"{name}.png")
    (train / "a_copy.png").write_bytes((bench / "a.png").read_bytes())  # exact duplicate (same bytes)
    from PIL import Image

    with Image.open(bench / "b.png") as b:
        _near_copy(b).save(train / "b_near.jpg", quality=75)  # near duplicate
    (train / "c_copy.png").write_bytes((bench / "c.png").read_bytes())
    _texture(100).save(train / "other.png")
    benchmark = [
        _item("set", ["a.png", "b.png"], "What changed between the two scans?", "It is unchanged."),  # 0: image set
        _item("one", ["c.png", "d.png"], "Which scan is brighter?", "A: the first", ["the first", "the second"]),  # 1
        _item("text", ["e.png", "f.png"], "Is there a Pleural effusion?", "B: no", ["yes", "no"]),  # 2: question
        _item("gram", ["g.png", "h.png"], "Describe the change.", LONG_ANSWER),  # 3: 13-gram only
        _item("path", ["p10/s1/x.png", "p10/s2/y.png"], "How do they differ?", "Not at all."),  # 4: absent, by path
    ]
    training = [
        _item("t0", ["a_copy.png", "b_near.jpg"], "Any other question?", "Something else entirely."),
        _item("t1", ["c_copy.png", "other.png"], "Unrelated.", "Also unrelated."),
        _item("t2", ["nothere/1.png"], "is there a pleural  effusion", "Yes, a small one."),
        _item("t3", ["nothere/2.png"], "Tell me.", "In short: " + LONG_ANSWER.lower() + ", and more."),
        _item("t4", ["p10/s2/y.png", "p10/s1/x.png"], "Other words.", "Different."),
    ]
    (bench / "bench.json").write_text(json.dumps(benchmark))
    (train / "train.json").write_text(json.dumps(training))
    return {"bench": bench / "bench.json", "train": train / "train.json"}


def _keys(path: Path) -> list[str]:
    return [s.key for s in load_medmim_file(path, task="t", ability="custom", image_root=lambda _t: path.parent)]


def _audit(files: dict[str, Path], *extra: str) -> dict:
    result = run_cli("audit", "contamination", "--train", str(files["train"]), "--tasks", str(files["bench"]),
                     "--format", "json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_each_planted_match_is_found_and_nothing_else(files: dict[str, Path]) -> None:
    report = _audit(files)
    (task,) = report["tasks"]
    keys = _keys(files["bench"])
    flagged = {flag: set(task["contaminated_keys"] if flag == "contaminated" else task["examples"][flag])
               for flag in task["counts"]}
    assert flagged["image_set"] == {keys[0], keys[4]}  # exact + near copy; the same two paths, order swapped
    assert flagged["any_image"] == {keys[0], keys[1], keys[4]}  # item 1 shares one image only
    assert flagged["question"] == {keys[2]}  # case, spacing and "?" differ
    assert flagged["answer"] == set()
    assert flagged["ngram13"] == {keys[3]}
    assert flagged["contaminated"] == {keys[0], keys[4]}  # the default criterion: the image set
    assert task["counts"]["contaminated"] == 2 and task["percent"]["contaminated"] == pytest.approx(40.0)
    assert task["image_matches"] == {"exact": 2, "near": 1, "path": 2}
    assert task["images"] == {"distinct": 10, "here": 8, "absent": 2}
    assert report["train_items"] == 5 and report["definitions"]["phash_max"] > 0


def test_criterion_picks_the_flags_that_make_an_item_contaminated(files: dict[str, Path]) -> None:
    keys = _keys(files["bench"])
    (task,) = _audit(files, "--criterion", "ngram13,question")["tasks"]
    assert set(task["contaminated_keys"]) == {keys[2], keys[3]}
    bad = run_cli("audit", "contamination", "--train", str(files["train"]), "--tasks", str(files["bench"]),
                  "--criterion", "image_set,vibes")
    assert bad.returncode == 2 and "vibes" in bad.stderr and "ngram13" in bad.stderr


def test_distinct_real_images_do_not_match(files: dict[str, Path], tmp_path: Path) -> None:
    # The training images replaced by other textures: no image of the benchmark may match any more.
    train = files["train"].parent
    for i, name in enumerate(["a_copy.png", "c_copy.png"]):
        _texture(200 + i).save(train / name)
    _texture(300).convert("RGB").save(train / "b_near.jpg", quality=75)
    (task,) = _audit(files)["tasks"]
    assert task["counts"]["image_set"] == 1 and task["counts"]["any_image"] == 1  # the absent pair, by path only
    assert task["image_matches"] == {"path": 2}


def test_rich_and_html_formats(files: dict[str, Path], tmp_path: Path) -> None:
    rich = run_cli("audit", "contamination", "--train", str(files["train"]), "--tasks", str(files["bench"]),
                   env={"COLUMNS": "220"})
    assert rich.returncode == 0, rich.stderr
    assert "Contamination audit" in rich.stdout and "2 (40.0%)" in rich.stdout
    page = tmp_path / "audit.html"
    html = run_cli("audit", "contamination", "--train", str(files["train"].parent), "--tasks", str(files["bench"]),
                   "--format", "html", "-o", str(page))
    assert html.returncode == 0, html.stderr
    text = page.read_text()
    assert '<section id="contamination">' in text and "<td>2<small>40.0%</small></td>" in text


def test_llava_med_jsonl_training_file(files: dict[str, Path], tmp_path: Path) -> None:
    rows = [{"id": "x", "image": "p10/s1/x.png", "conversations": [
        {"from": "human", "value": "<image>\nHow do they DIFFER"}, {"from": "gpt", "value": "not at all"}]}]
    path = tmp_path / "llava.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (task,) = _audit({"train": path, "bench": files["bench"]})["tasks"]
    keys = _keys(files["bench"])
    assert task["examples"]["question_answer"] == [keys[4]] and task["examples"]["any_image"] == [keys[4]]
    assert task["counts"]["image_set"] == 0  # one image of the pair only


def test_bad_training_input_is_one_clear_error(files: dict[str, Path], tmp_path: Path) -> None:
    missing = run_cli("audit", "contamination", "--train", str(tmp_path / "nope.json"), "--tasks", str(files["bench"]))
    assert missing.returncode == 2 and "nope.json: training file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1, "images": []')
    bad = run_cli("audit", "contamination", "--train", str(broken), "--tasks", str(files["bench"]))
    assert bad.returncode == 2 and "broken.json: malformed JSON at line 1" in bad.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"id": "z", "images": ["a.png"], "text": "no conversation"}]))
    item = run_cli("audit", "contamination", "--train", str(wrong), "--tasks", str(files["bench"]))
    assert item.returncode == 2 and "item 0 (id z)" in item.stderr and "conversation" in item.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = run_cli("audit", "contamination", "--train", str(empty), "--tasks", str(files["bench"]))
    assert folder.returncode == 2 and "no .json or .jsonl training file" in folder.stderr


def test_run_exclude_contaminated_scores_the_clean_subset_and_marks_it(files: dict[str, Path], tmp_path: Path) -> None:
    audit_file = tmp_path / "audit.json"
    assert run_cli("audit", "contamination", "--train", str(files["train"]), "--tasks", str(files["bench"]),
                   "--format", "json", "-o", str(audit_file)).returncode == 0
    contaminated = set(json.loads(audit_file.read_text())["tasks"][0]["contaminated_keys"])
    clean, full = tmp_path / "clean", tmp_path / "full"
    ran = run_cli("run", "-m", "majority", "-t", str(files["bench"]), "-o", str(clean), "-q",
                  "--exclude-contaminated", str(audit_file))
    assert ran.returncode == 0, ran.stderr
    # (item 4's images exist nowhere: the full run skips it, the clean one excluded it before checking images)
    assert run_cli("run", "-m", "majority", "-t", str(files["bench"]), "-o", str(full), "-q",
                   "--skip-missing").returncode == 0
    manifest = json.loads((clean / "manifest.json").read_text())
    (task,) = manifest["tasks"]
    assert set(task["excluded_keys"]) == contaminated and "audit" in task["excluded_from"]
    records = [json.loads(line) for line in (clean / "samples.jsonl").read_text().splitlines()]
    assert {r["key"] for r in records} == set(_keys(files["bench"])) - contaminated
    cells = json.loads((clean / "results.json").read_text())["cells"]
    assert sum(c["n"] for c in cells) == 3
    assert all(c["excluded"] == 2 for c in cells)
    # Both runs side by side: the clean cells carry the marker, the full ones do not, the footer says why.
    board = run_cli("leaderboard", str(clean), str(full), "--format", "markdown")
    assert board.returncode == 0, board.stderr
    rows = {line.split("|")[1].strip(): line for line in board.stdout.splitlines() if line.startswith("| majority")}
    assert "‡" in rows[f"majority [{clean.name}]"] and "‡" not in rows[f"majority [{full.name}]"]
    assert "a clean subset, 2 item(s) left out" in board.stdout
    csv_text = run_cli("leaderboard", str(clean), str(full), "--format", "csv").stdout.splitlines()
    header = csv_text[0].split(",")
    excluded = {row.split(",")[header.index("run")]: row.split(",")[header.index("excluded")] for row in csv_text[1:]}
    assert excluded == {clean.name: "2", full.name: "0"}
    html = run_cli("leaderboard", str(clean), "--format", "html")
    assert html.returncode == 0, html.stderr
    section = html.stdout.split('<section id="contamination">')[1].split("</section>")[0]
    assert "<td>2<small>40.0%</small></td>" in section
    # Resuming the clean run directory without the exclusion (or the full one with it) is refused.
    again = run_cli("run", "-m", "majority", "-t", str(files["bench"]), "-o", str(clean), "-q", "--skip-missing")
    assert again.returncode == 2 and "clean subset and the full task" in again.stderr
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# contaminated\n" + "\n".join(sorted(contaminated)) + "\n")
    into_full = run_cli("run", "-m", "majority", "-t", str(files["bench"]), "-o", str(full), "-q",
                        "--exclude", str(keys_file), "--skip-missing")
    assert into_full.returncode == 2 and "another --output" in into_full.stderr


def test_run_exclude_keys_file_and_its_bad_input(files: dict[str, Path], tmp_path: Path) -> None:
    keys = _keys(files["bench"])
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"{keys[1]}\n\n{keys[4]}\n")  # item 4's images exist nowhere
    out = tmp_path / "run"
    assert run_cli("run", "-m", "majority", "-t", str(files["bench"]), "-o", str(out), "-q",
                   "--exclude", str(keys_file)).returncode == 0
    records = [json.loads(line)["key"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(records) == sorted(keys[i] for i in (0, 2, 3))
    blind = tmp_path / "blind"  # a control's samples go with their standard keys
    assert run_cli("run", "-m", "majority", "-t", f"{files['bench']}@blind", "-o", str(blind), "-q",
                   "--exclude", str(keys_file)).returncode == 0
    blind_records = [json.loads(line)["key"] for line in (blind / "samples.jsonl").read_text().splitlines()]
    assert sorted(blind_records) == sorted(f"{keys[i]}@blind" for i in (0, 2, 3))
    stale = tmp_path / "stale.txt"
    stale.write_text("other_file#0#abcdef012345\n")
    unused = run_cli("run", "-m", "majority", "-t", str(files["bench"]), "-o", str(tmp_path / "r2"), "-q",
                     "--exclude", str(stale))
    assert unused.returncode == 2 and "none of its 1 key(s)" in unused.stderr and not (tmp_path / "r2").exists()
    broken = tmp_path / "audit.json"
    broken.write_text("{not json")
    bad = run_cli("run", "-m", "majority", "-t", str(files["bench"]), "-o", str(tmp_path / "r3"), "-q",
                  "--exclude-contaminated", str(broken))
    assert bad.returncode == 2 and "audit.json: malformed JSON" in bad.stderr
    missing = run_cli("run", "-m", "majority", "-t", str(files["bench"]), "-o", str(tmp_path / "r4"), "-q",
                      "--exclude", str(tmp_path / "none.txt"))
    assert missing.returncode == 2 and "none.txt: file not found" in missing.stderr


# The official release: the training file against every benchmark task.
def _image_sets(path: Path) -> list[frozenset[str]]:
    return [frozenset(item["images"]) for item in json.loads(path.read_text())]


@pytest.fixture(scope="module")
def official(shared_data: Path) -> dict[str, dict]:
    train = shared_data / "med-mim" / "Med_MIM_train_inherent_Comparison.json"
    result = run_cli("audit", "contamination", "--train", str(train), "--tasks", "all", "--data-dir",
                     str(shared_data), "--format", "json")
    assert result.returncode == 0, result.stderr
    return {t["task"]: t for t in json.loads(result.stdout)["tasks"]}


def test_official_comparison_image_sets_match_an_independent_count(shared_data: Path, official: dict[str, dict]) -> None:
    folder = shared_data / "med-mim"
    train_sets = set(_image_sets(folder / "Med_MIM_train_inherent_Comparison.json"))
    bench = _image_sets(folder / "Med_MIM_benchmark_Held_in_Comparison.json")
    expected = sum(s in train_sets for s in bench)
    assert expected == 210  # DATA.md: 210 of the 344 held-in Comparison items
    comparison = official["held-in-comparison"]
    assert comparison["n_items"] == 344 and comparison["counts"]["image_set"] == expected
    assert comparison["images"]["here"] == 0  # credentialed images: compared by path only
    train_images = {i for s in train_sets for i in s}
    assert comparison["counts"]["any_image"] == sum(bool(s & train_images) for s in bench)


def test_a_training_folder_leaves_out_the_audited_benchmark_files(shared_data: Path) -> None:
    result = run_cli("audit", "contamination", "--train", str(shared_data / "med-mim"), "--tasks", "held-in-comparison",
                     "--data-dir", str(shared_data), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = sorted(Path(f["path"]).name for f in report["train_files"])
    assert "Med_MIM_benchmark_Held_in_Comparison.json" not in names  # not audited against itself
    assert "Med_MIM_train_inherent_Comparison.json" in names and len(names) == 6  # the other five benchmark files too
    assert report["tasks"][0]["counts"]["image_set"] >= 210


def test_official_held_out_tasks_share_no_image_with_the_training_file(official: dict[str, dict]) -> None:
    for task in ("held-out-rad", "held-out-odir"):
        assert official[task]["counts"]["any_image"] == 0 and official[task]["counts"]["image_set"] == 0
    assert official["held-out-rad"]["images"]["here"] > 0 or official["held-out-rad"]["images"]["absent"] > 0
