"""Text-only shortcut baselines, the per-cell best shortcut, ``leaderboard --shortcuts`` and the
benchmark card, on files the tests write and on the official release."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from medmim_eval.medmim_format import load_medmim_file
from medmim_eval.shortcuts import best_shortcut, shortcut_answers, shortcut_correct, shortcut_scores

# (question, options, gold letter); golds are B, B, C, A so the majority letter is B.
ITEMS = [
    ("Which finding is seen?", ["a cyst", "a large calcified mass in the left lobe", "no"], "B"),
    ("Which change happened?", ["none", "a new effusion at the right base", "same"], "B"),
    ("Where is the lesion?", ["up", "down", "in the lower lobe of the right lung"], "C"),
    ("Which scan is the FLAIR scan?", ["x", "the FLAIR scan is the second scan", "the T1 image"], "A"),
]


def _write_task(folder: Path, items: list[tuple[str, list[str], str]] = ITEMS, *, ids: list[str] | None = None,
                images: list[list[str]] | None = None, sources: list[str] | None = None) -> Path:
    """A closed-question Med-MIM file with real PNG images beside it."""
    from PIL import Image

    data = []
    for i, (question, options, gold) in enumerate(items):
        names = images[i] if images else [f"img{i}a.png", f"img{i}b.png"]
        for name in names:
            if not (folder / name).exists():
                Image.new("L", (8, 8), 40 * i).save(folder / name)
        lettered = "".join(f"\n{chr(65 + k)}: {text}" for k, text in enumerate(options))
        data.append({"id": ids[i] if ids else f"q{i}", "images": names, "source": sources[i] if sources else "T",
                     "conversation": [{"role": "user", "content": "<image>" * len(names) + question + lettered + "\n"},
                                      {"role": "assistant", "content": f"{gold}: {options[ord(gold) - 65]}"}]})
    path = folder / "shortcut_task.json"
    path.write_text(json.dumps(data))
    return path


def _samples(path: Path) -> list:
    return load_medmim_file(path, task="t", ability="custom", image_root=lambda _tag: path.parent)


def test_each_rule_scores_what_its_definition_says(tmp_path: Path) -> None:
    scores = shortcut_scores(shortcut_correct(_samples(_write_task(tmp_path))))
    assert scores["longest-option"] == 75.0    # items 1-3
    assert scores["shortest-option"] == 25.0   # item 4 ("x")
    assert scores["question-overlap"] == 25.0  # item 3 (shares "the")
    assert scores["majority"] == 50.0          # B on items 1 and 2
    assert best_shortcut(scores) == ("longest-option", 75.0)


def test_question_overlap_picks_the_option_sharing_most_question_words(tmp_path: Path) -> None:
    answers = shortcut_answers(_samples(_write_task(tmp_path)))
    # Items 1 and 2 share no word with any option (tie -> A); item 3 shares "the" with C only;
    # item 4 shares "the flair scan is" with B, only "the" with C.
    assert [a["question-overlap"] for a in answers.values()] == ["A", "A", "C", "B"]


def test_ties_go_to_the_earliest_letter(tmp_path: Path) -> None:
    items = [("Same?", ["bb", "aa", "cc"], "C"), ("Same?", ["ccc", "aaa", "bbb"], "A")]
    answers = list(shortcut_answers(_samples(_write_task(tmp_path, items))).values())
    assert [a["longest-option"] for a in answers] == ["A", "A"]
    assert [a["shortest-option"] for a in answers] == ["A", "A"]
    assert [a["question-overlap"] for a in answers] == ["A", "A"]
    # Golds C and A once each: equal counts rank in letter order, so A first.
    assert [a["majority"] for a in answers] == ["A", "A"]


def test_a_file_whose_longest_option_is_always_right_gives_the_rule_100(tmp_path: Path) -> None:
    items = [(q, opts, "ABC"[max(range(3), key=lambda k: len(opts[k]))]) for q, opts, _ in ITEMS]
    path = _write_task(tmp_path, items)
    out = tmp_path / "run"
    result = run_cli("run", "-m", "longest-option,shortest-option,random", "-t", str(path), "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    cells = {c["model"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert cells["longest-option"]["score"] == 100.0
    assert cells["shortest-option"]["score"] == 0.0
    for cell in cells.values():
        assert cell["shortcut_rule"] == "longest-option" and cell["shortcut"] == 100.0
        assert cell["shortcut_normalised"] is None  # nothing can beat a perfect shortcut
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["shortcuts"]["rules"] == ["longest-option", "shortest-option", "question-overlap",
                                                         "majority"]


def test_results_carry_the_best_shortcut_and_the_shortcut_normalised_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("run", "-m", "majority,question-overlap", "-t", str(_write_task(tmp_path)), "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    cells = {c["model"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert cells["majority"]["score"] == 50.0 and cells["question-overlap"]["score"] == 25.0
    assert cells["majority"]["shortcuts"] == {"longest-option": 75.0, "shortest-option": 25.0,
                                              "question-overlap": 25.0, "majority": 50.0}
    assert cells["majority"]["shortcut"] == 75.0
    assert cells["majority"]["shortcut_normalised"] == pytest.approx(100 * (50 - 75) / 25)


def test_leaderboard_shortcuts_shows_the_rules_then_each_models_margin(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_cli("run", "-m", "majority,longest-option", "-t", str(_write_task(tmp_path)), "-o", str(out),
                   "-q").returncode == 0
    board = run_cli("leaderboard", str(out), "--shortcuts", "--format", "markdown")
    assert board.returncode == 0, board.stderr
    rules_part, margin_part = board.stdout.split("margin over the best text-only shortcut")

    def row(text: str, name: str) -> str:
        return next(line for line in text.splitlines() if line.startswith(f"| {name} |"))

    assert "**75.00**" in row(rules_part, "longest-option") and "25.00" in row(rules_part, "shortest-option")
    assert "-25.00" in row(margin_part, "majority") and "**0.00**" in row(margin_part, "longest-option")
    assert "shortcut_task C" in board.stdout and "shortcut_task O" not in board.stdout  # closed columns only
    both = run_cli("leaderboard", str(out), "--shortcuts", "--chance")
    assert both.returncode == 2 and "give one" in both.stderr


def test_benchmark_card_counts_letters_options_reuse_ids_and_sources(tmp_path: Path) -> None:
    path = _write_task(tmp_path, ITEMS + [("Same?", ["yes", "no"], "B")], ids=["q0", "q0", "q2", "q3", "q3"],
                       images=[["s.png", "t.png"], ["t.png", "s.png"], ["u.png", "v.png"], ["w.png", "x.png"],
                               ["s.png", "t.png"]], sources=["P", "P", "Q", "Q", "Q"])
    result = run_cli("audit", "benchmark", "--tasks", str(path), "--format", "json")
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)["tasks"][0]
    assert card["gold_letters"] == {"A": 1, "B": 3, "C": 1}
    assert card["option_counts"] == {"2": 1, "3": 4}
    assert card["chance"] == pytest.approx(100 * (4 / 3 + 1 / 2) / 5)
    assert card["best_letter"] == "B" and card["best_letter_share"] == 60.0
    # {s, t} is used by three items (order does not matter), the other two sets once.
    assert (card["image_sets"], card["image_sets_reused"], card["items_on_reused_image_sets"],
            card["max_items_per_image_set"]) == (3, 1, 3, 3)
    assert (card["repeated_ids"], card["items_with_repeated_ids"]) == (2, 4)
    assert card["sources"] == {"P": 2, "Q": 3}
    assert card["shortcuts"]["majority"] == 60.0 and card["shortcuts"]["longest-option"] == 60.0
    assert card["best_shortcut"] == "longest-option"  # equal scores: the earlier rule
    rich = run_cli("audit", "benchmark", "--tasks", str(path), env={"COLUMNS": "200"})
    assert rich.returncode == 0 and "longest-option" in rich.stdout and "without looking at an image" in rich.stdout


def test_audit_benchmark_needs_no_images_and_names_a_missing_task_file(tmp_path: Path) -> None:
    path = _write_task(tmp_path)
    for png in tmp_path.glob("*.png"):
        png.unlink()
    assert run_cli("audit", "benchmark", "--tasks", str(path), "--format", "json").returncode == 0
    empty = tmp_path / "empty-data"
    empty.mkdir()
    missing = run_cli("audit", "benchmark", "--tasks", "held-out-rad", "--data-dir", str(empty))
    assert missing.returncode == 2 and "held-out-rad" in missing.stderr and "data status" in missing.stderr


# The official release: facts measured by the card (the README's table), and a real run.
OFFICIAL = {  # task: (closed, gold letters, best shortcut rule)
    "held-out-rad": (293, {"A": 129, "B": 47, "C": 117}, "longest-option"),
    "held-out-odir": (300, {"A": 75, "B": 75, "C": 75, "D": 75}, "longest-option"),
    "held-in-temporal": (903, {"A": 346, "B": 361, "C": 134, "D": 62}, "longest-option"),
    "held-in-reasoning": (454, {"A": 67, "B": 61, "C": 68, "D": 53, "E": 66, "F": 63, "G": 76}, "question-overlap"),
}


@pytest.fixture(scope="module")
def official_card(shared_data: Path) -> dict[str, dict]:
    result = run_cli("audit", "benchmark", "--tasks", "all", "--data-dir", str(shared_data), "--format", "json")
    assert result.returncode == 0, result.stderr
    return {t["task"]: t for t in json.loads(result.stdout)["tasks"]}


@pytest.mark.parametrize("task", sorted(OFFICIAL))
def test_official_card_letters_and_best_shortcut(official_card: dict[str, dict], task: str) -> None:
    closed, letters, rule = OFFICIAL[task]
    card = official_card[task]
    assert card["n_closed"] == closed and card["gold_letters"] == letters and card["best_shortcut"] == rule
    assert card["best_shortcut_accuracy"] > card["chance"]


def test_mim_rad_is_largely_solved_by_the_longest_option(official_card: dict[str, dict]) -> None:
    rad = official_card["held-out-rad"]
    assert rad["shortcuts"]["longest-option"] == pytest.approx(100 * 208 / 293)
    assert rad["shortcuts"]["majority"] == pytest.approx(100 * 129 / 293)  # letter bias: A on 44% vs chance 33.3%
    assert official_card["held-in-comparison"]["image_sets_reused"] > 0


def test_a_real_run_scores_the_longest_option_as_the_card_does(shared_data: Path, official_card: dict[str, dict],
                                                               tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("run", "-m", "longest-option", "-t", "held-out-rad:closed", "-o", str(out), "-q",
                     env={"MEDMIM_DATA_DIR": str(shared_data)})
    assert result.returncode == 0, result.stderr
    cell = json.loads((out / "results.json").read_text())["cells"][0]
    assert cell["score"] == pytest.approx(official_card["held-out-rad"]["shortcuts"]["longest-option"])
    assert cell["shortcut_rule"] == "longest-option" and cell["shortcut_normalised"] == 0.0


def test_html_report_has_a_benchmark_card_of_the_reloaded_tasks(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_cli("run", "-m", "majority", "-t", str(_write_task(tmp_path)), "-o", str(out), "-q").returncode == 0
    report = run_cli("leaderboard", str(out), "--format", "html", "--data-dir", str(tmp_path))
    assert report.returncode == 0, report.stderr
    card = report.stdout.split('<section id="card">')[1].split("</section>")[0]
    assert "A:1 B:2 C:1" in card and "<td>longest-option</td>" in card  # gold letters; the best rule
    blind = run_cli("leaderboard", str(out), "--format", "html", "--max-records", "0")
    assert "no benchmark card" in blind.stdout
