"""Leaderboard flags and exports, checked against real run directories.

CSV and JSON rows equal the cells of ``results.json``; LaTeX marks best/second with booktabs
rules; the HTML report is one self-contained file with a per-sample drill-down and embedded
thumbnails; ``--ci``, ``--chance`` and ``--by-source`` show what they promise.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.leaderboard import fmt

FAST_METRICS = ["--open-metrics", "components=bleu+rougeL"]


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A real run of two baselines on the synthetic suite, and the environment it ran in."""
    base = tmp_path_factory.mktemp("synth-run")
    env = {"MEDMIM_CACHE_DIR": str(base / "cache"), "XDG_CONFIG_HOME": str(base / "config"),
           "XDG_DATA_HOME": str(base / "data"), "HF_HUB_OFFLINE": "1"}
    out = base / "run"
    result = run_cli("run", "-m", "random,majority", "-t", "synth", "-o", str(out), "-q", *FAST_METRICS, env=env)
    assert result.returncode == 0, result.stderr
    return out, env


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _cell(results: dict, model: str, task: str, kind: str) -> dict:
    return next(c for c in results["cells"] if (c["model"], c["task"], c["kind"]) == (model, task, kind))


def _two_source_task(folder: Path) -> Path:
    """A Med-MIM JSON task whose closed items come from two source datasets (4 EMBED, 2 LUMIERE)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(6):
        names = [f"s{i}_{j}.png" for j in range(2)]
        for j, name in enumerate(names):
            Image.new("L", (32, 24), 40 * i + 20 * j).save(folder / name)
        source = "EMBED_multichoice_x" if i < 4 else "LUMIERE_multichoice_y"
        items.append({"id": f"q{i}", "images": names, "source": source, "conversation": [
            {"role": "user", "content": f"<image><image>Which scan is brighter? ({i})\nA: first\nB: second\nC: same\n"},
            {"role": "assistant", "content": "B: second"}]})
    path = folder / "two_sources.json"
    path.write_text(json.dumps(items))
    return path


def _markdown_row(text: str, model: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
    return [part.strip() for part in line.strip().strip("|").split("|")]


def _markdown_header(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("| Model |"))
    return [part.strip() for part in line.strip().strip("|").split("|")]


# ------------------------------------------------------------------------------------------ CSV/JSON

def test_csv_has_one_row_per_cell_with_the_values_of_results_json(synth_run: tuple[Path, dict]) -> None:
    run_dir, _ = synth_run
    result = run_cli("leaderboard", str(run_dir), "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    results = _results(run_dir)
    assert len(rows) == len(results["cells"]) == 16  # 2 models x 4 tasks x 2 kinds
    for row in rows:
        cell = _cell(results, row["model"], row["task"], row["kind"])
        assert int(row["n"]) == cell["n"] and int(row["n_scored"]) == cell["n_scored"]
        assert int(row["errors"]) == cell["errors"] and row["source"] == ""
        for name in ("score", "ci_low", "ci_high", "chance", "chance_normalised", "unparseable_rate"):
            expected = cell[name]
            assert (row[name] == "") if expected is None else float(row[name]) == pytest.approx(expected, abs=1e-9), name
    closed = next(r for r in rows if (r["model"], r["task"], r["kind"]) == ("random", "synth-temporal", "closed"))
    assert int(closed["n"]) == 120 and closed["chance"] != "" and closed["run"] == "run"


def test_json_rows_equal_results_cells_and_carry_the_metric_definitions(synth_run: tuple[Path, dict]) -> None:
    run_dir, _ = synth_run
    result = run_cli("leaderboard", str(run_dir), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    results = _results(run_dir)
    assert data["metric_definitions"] == results["metrics"] and data["metric_definitions_agree"] is True
    assert data["runs"][0]["metrics"] == results["metrics"] and data["runs"][0]["bootstrap"] == results["bootstrap"]
    fields = ("n", "n_scored", "score", "ci_low", "ci_high", "chance", "chance_normalised", "unparseable_rate", "errors")
    exported = {(r["model"], r["task"], r["kind"]): {f: r[f] for f in fields} for r in data["rows"]}
    expected = {(c["model"], c["task"], c["kind"]): {f: c[f] for f in fields} for c in results["cells"]}
    assert exported == expected
    assert "open =" in data["notes"][0] and set(data["columns"]) >= set(fields)


# ------------------------------------------------------------------------------------------ LaTeX

def _hand_made_run(folder: Path, cells: list[dict], metrics: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    full = [{"n": 10, "n_scored": 10, "ci_low": None, "ci_high": None, **c} for c in cells]
    payload = {"version": 1, "run_id": folder.name, "metrics": metrics or {}, "cells": full}
    (folder / "results.json").write_text(json.dumps(payload))
    return folder


def test_latex_is_booktabs_with_group_headers_best_bold_second_underlined(tmp_path: Path) -> None:
    run = _hand_made_run(tmp_path / "run", [
        {"model": "alpha", "task": "held-out-rad", "kind": "closed", "score": 50.0},
        {"model": "my_model 100%&co", "task": "held-out-rad", "kind": "closed", "score": 40.0},
        {"model": "gamma", "task": "held-out-rad", "kind": "closed", "score": 30.0},
        {"model": "gamma", "task": "held-in-temporal", "kind": "open", "score": 12.5},
    ])
    result = run_cli("leaderboard", str(run), "--format", "latex")
    assert result.returncode == 0, result.stderr
    tex = result.stdout
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert tex.count(rule) == 1, rule
    assert "\\multicolumn{8}{c}{Held-in} & \\multicolumn{4}{c}{Held-out}" in tex
    assert "\\multicolumn{2}{c}{MIM-RAD}" in tex and "\\multicolumn{2}{c}{Co-reference}" in tex
    rows = {line.split(" & ")[0]: line for line in tex.splitlines() if line.endswith("\\\\") and " & " in line}
    rad = 9  # the MIM-RAD C column: after Model and 8 held-in columns
    assert rows["alpha"].split(" & ")[rad] == "\\textbf{50.00}"
    escaped = "my\\_model 100\\%\\&co"
    assert rows[escaped].split(" & ")[rad] == "\\underline{40.00}"
    assert rows["gamma"].split(" & ")[rad] == "30.00"
    assert rows["gamma"].split(" & ")[2] == "\\textbf{12.50}" and rows["alpha"].split(" & ")[1] == "--"


# ------------------------------------------------------------------------------------------ HTML

class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False if tag == "style" else self._in_style

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data


def _parse(text: str) -> _Collector:
    parser = _Collector()
    parser.feed(text)
    parser.close()
    return parser


def _assert_self_contained(page: _Collector) -> None:
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for name in ("src", "href", "action", "data", "poster", "srcset"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "ftp:")), (tag, name, value)
        assert "url(" not in (attrs.get("style") or "")
    assert "@import" not in page.style
    for url in re.findall(r"url\(([^)]*)\)", page.style):
        assert url.strip("'\" ").startswith("data:"), url[:40]


def test_html_report_is_self_contained_with_tables_and_thumbnail_drilldown(synth_run: tuple[Path, dict], tmp_path: Path) -> None:
    from PIL import Image

    run_dir, env = synth_run
    out = tmp_path / "report.html"
    result = run_cli("leaderboard", str(run_dir), "--format", "html", "-o", str(out), "--max-records", "5", "--ci", env=env)
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    page = _parse(text)
    _assert_self_contained(page)
    tags = [t for t, _ in page.tags]
    assert tags.count("table") >= 1 + 4  # the leaderboard and one details table per task
    assert tags.count("details") == 8  # 2 models x 4 tasks
    assert text.count("Showing the first 5 of 160 records") == 8
    thumbs = [a["class"].split()[1] for t, a in page.tags if t == "span" and (a.get("class") or "").startswith("th t")]
    assert len(thumbs) >= 8 * 5 * 2  # every shown record has 2-3 thumbnails
    rules = dict(re.findall(r"\.(t\d+)\{background-image:url\(data:image/png;base64,([A-Za-z0-9+/=]+)\)\}", page.style))
    assert set(thumbs) <= set(rules)
    image = Image.open(io.BytesIO(base64.b64decode(rules[thumbs[0]])))
    assert image.format == "PNG" and max(image.size) <= 96
    assert text.count("<dt>prompt</dt><dd><pre>&lt;image&gt;") == text.count('<div class="rec') == 8 * 5
    assert "could not be reloaded" not in text
    results = _results(run_dir)
    cell = _cell(results, "random", "synth-temporal", "closed")
    assert f"[{fmt(cell['ci_low'])}, {fmt(cell['ci_high'])}]" in text


def test_html_report_lists_records_without_thumbnails_when_the_task_file_is_gone(tmp_path: Path) -> None:
    task = _two_source_task(tmp_path / "task")
    out = tmp_path / "run"
    assert run_cli("run", "-m", "random", "-t", str(task), "-o", str(out), "-q", *FAST_METRICS).returncode == 0
    task.unlink()
    report = tmp_path / "report.html"
    result = run_cli("leaderboard", str(out), "--format", "html", "-o", str(report))
    assert result.returncode == 0, result.stderr
    text = report.read_text(encoding="utf-8")
    _assert_self_contained(_parse(text))
    assert "task data could not be reloaded" in text and "no thumbnails (task not reloaded)" in text
    assert text.count('<div class="rec') == 6 and "data:image/png" not in text


def test_html_and_csv_work_where_torch_cannot_import(synth_run: tuple[Path, dict], tmp_path: Path) -> None:
    poisoned = tmp_path / "poisoned"
    for name in ("torch", "transformers", "vllm"):
        (poisoned / name).mkdir(parents=True)
        (poisoned / name / "__init__.py").write_text(f"raise ImportError('{name} must not be imported')\n")
    run_dir, env = synth_run
    for fmt_name in ("html", "csv", "json", "latex"):
        result = run_cli("leaderboard", str(run_dir), "--format", fmt_name, "-o", str(tmp_path / f"out.{fmt_name}"),
                         "--max-records", "2", pythonpath=[poisoned], env=env)
        assert result.returncode == 0, (fmt_name, result.stderr)


# ------------------------------------------------------------------------------------------ flags

def test_ci_flag_shows_each_interval(synth_run: tuple[Path, dict]) -> None:
    run_dir, _ = synth_run
    plain = run_cli("leaderboard", str(run_dir), "--format", "markdown").stdout
    with_ci = run_cli("leaderboard", str(run_dir), "--format", "markdown", "--ci").stdout
    cell = _cell(_results(run_dir), "random", "synth-reasoning", "closed")
    column = _markdown_header(with_ci).index("Reasoning C")
    shown = _markdown_row(with_ci, "random")[column]
    assert shown.endswith(f"[{fmt(cell['ci_low'])}, {fmt(cell['ci_high'])}]") and fmt(cell["score"]) in shown
    assert "[" not in _markdown_row(plain, "random")[column]
    assert "Intervals: 95% percentile bootstrap" in with_ci and "Intervals:" not in plain


def test_chance_flag_shows_chance_normalised_accuracy_for_closed_columns(synth_run: tuple[Path, dict]) -> None:
    run_dir, _ = synth_run
    text = run_cli("leaderboard", str(run_dir), "--format", "markdown", "--chance").stdout
    assert "chance-normalised" in text.splitlines()[0]
    header = _markdown_header(text)
    for model in ("random", "majority"):
        for task, label in (("synth-temporal", "Temporal"), ("synth-coreference", "Co-reference")):
            cell = _cell(_results(run_dir), model, task, "closed")
            expected = 100 * (cell["score"] - cell["chance"]) / (100 - cell["chance"])
            shown = _markdown_row(text, model)[header.index(f"{label} C")]
            assert re.sub(r"\*\*|</?u>", "", shown) == fmt(expected)
            open_cell = _cell(_results(run_dir), model, task, "open")
            assert re.sub(r"\*\*|</?u>", "", _markdown_row(text, model)[header.index(f"{label} O")]) == fmt(open_cell["score"])


def test_by_source_splits_cells_by_source_dataset(tmp_path: Path) -> None:
    task = _two_source_task(tmp_path / "task")
    out = tmp_path / "run"
    assert run_cli("run", "-m", "random,majority", "-t", str(task), "-o", str(out), "-q", *FAST_METRICS).returncode == 0
    text = run_cli("leaderboard", str(out), "--format", "markdown", "--by-source").stdout
    header = _markdown_header(text)
    assert "file:two_sources · EMBED C" in header and "file:two_sources · LUMIERE C" in header
    by_source = _results(out)["by_source"]
    for model in ("random", "majority"):
        for source in ("EMBED", "LUMIERE"):
            cell = next(c for c in by_source if (c["model"], c["source"], c["kind"]) == (model, source, "closed"))
            shown = _markdown_row(text, model)[header.index(f"file:two_sources · {source} C")]
            assert re.sub(r"\*\*|</?u>", "", shown) == fmt(cell["score"])
    csv_text = run_cli("leaderboard", str(out), "--format", "csv", "--by-source").stdout
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert sorted((r["model"], r["source"], r["n"]) for r in rows) == [
        ("majority", "EMBED", "4"), ("majority", "LUMIERE", "2"), ("random", "EMBED", "4"), ("random", "LUMIERE", "2")]
    older = _results(out)
    older["by_source"] = []  # results.json of a harness that did not write per-source cells yet
    (out / "results.json").write_text(json.dumps(older))
    assert run_cli("leaderboard", str(out), "--format", "csv", "--by-source").stdout == csv_text
    (out / "results.json").unlink()  # recomputed from samples.jsonl with aggregate_by_source
    again = run_cli("leaderboard", str(out), "--format", "csv", "--by-source")
    assert again.returncode == 0 and again.stdout == csv_text
    unsplit = list(csv.DictReader(io.StringIO(run_cli("leaderboard", str(out), "--format", "csv").stdout)))
    assert sorted((r["model"], r["n"]) for r in unsplit) == [("majority", "6"), ("random", "6")]


# ------------------------------------------------------------------------------------------ footer

BERT_METRICS = {"extraction_rule_version": "2", "open": {
    "open_score": "mean of bertscore_recall, bleu, rougeL_recall (each 0-100)",
    "components": ["bertscore_recall", "bleu", "rougeL_recall"],
    "bertscore_recall": {"package": "bert-score", "model": "roberta-large", "layer": 17, "idf": False},
    "versions": {"bert-score": "0.3.13", "sacrebleu": "2.6.0"}}}


def test_footer_names_the_metric_definition(tmp_path: Path) -> None:
    run = _hand_made_run(tmp_path / "a", [{"model": "m", "task": "held-out-rad", "kind": "open", "score": 20.0}], BERT_METRICS)
    text = run_cli("leaderboard", str(run), "--format", "markdown").stdout
    assert "open = mean of bertscore_recall, bleu, rougeL_recall (each 0-100)" in text
    assert "answer-extraction rule v2" in text and "model=roberta-large" in text and "bert-score 0.3.13" in text
    assert "WARNING" not in text


def test_footer_warns_when_runs_used_different_metric_definitions(tmp_path: Path) -> None:
    other = json.loads(json.dumps(BERT_METRICS))
    other["open"]["bertscore_recall"]["model"] = "minilm"
    a = _hand_made_run(tmp_path / "a", [{"model": "m1", "task": "held-out-rad", "kind": "open", "score": 20.0}], BERT_METRICS)
    b = _hand_made_run(tmp_path / "b", [{"model": "m2", "task": "held-out-rad", "kind": "open", "score": 30.0}], other)
    same = _hand_made_run(tmp_path / "c", [{"model": "m3", "task": "held-out-rad", "kind": "open", "score": 25.0}], BERT_METRICS)
    differ = run_cli("leaderboard", str(a), str(b), "--format", "markdown").stdout
    assert "WARNING: these runs used different metric definitions" in differ
    assert "model=roberta-large" in differ and "model=minilm" in differ
    assert "WARNING" not in run_cli("leaderboard", str(a), str(same), "--format", "markdown").stdout
    data = json.loads(run_cli("leaderboard", str(a), str(b), "--format", "json").stdout)
    assert data["metric_definitions_agree"] is False and data["metric_definitions"] is None


def test_metric_summary_survives_any_definition_shape() -> None:
    from medmim_eval.exports.metric_notes import describe_metrics

    assert describe_metrics({}) == "not recorded"
    assert "open = not recorded" in describe_metrics({"extraction_rule_version": "1"})
    assert "open = mean of two" in describe_metrics({"open": "mean of two"})
    odd = describe_metrics({"open": {"open_score": {"description": "weighted"}, "components": "bleu",
                                     "extra": {"nested": {"a": 1}}, "versions": ["x 1"]}, "closed": {"rule": 3}})
    assert "weighted" in odd and "components: bleu" in odd and "nested=a=1" in odd and "closed = rule=3" in odd
    assert os.linesep not in odd
