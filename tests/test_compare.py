"""``medmim-eval compare``: the regression gate between a baseline and a candidate run directory.

Run directories are real ``medmim-eval run`` outputs on the synthetic suite; candidates with
planted changes are made by rewriting records of such a run the way a worse checkpoint would have
answered (and deleting ``results.json``, which compare never needs).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_cli

from medmim_eval.cli.compare_cmd import to_markdown
from medmim_eval.compare import compare_runs
from medmim_eval.compare_stats import CompareSettings, compare_cell, mcnemar_exact_p, paired_delta_ci
from medmim_eval.stats import BootstrapSettings

TASKS = "synth-temporal:closed,synth-reasoning:closed"
MARKDOWN_HEADER = "| Model | Task | Kind | n | Base | Cand | Δ | 95% CI | p | Flips −/+ | Agree | Verdict |"


@pytest.fixture(scope="module")
def runs_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Cache and config folders shared by this module's runs (the synthetic suite is built once)."""
    home = tmp_path_factory.mktemp("compare-home")
    return {"MEDMIM_CACHE_DIR": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data")}


def _run(out: Path, env: dict[str, str], *extra: str, model: str = "random,seed=1") -> Path:
    result = run_cli("run", "-m", model, "-t", TASKS, "-o", str(out), "-q", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def baseline_run(runs_home: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module fixtures run outside conftest's per-test isolation: drop the user's MEDMIM_* settings here too.
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MEDMIM_")]:
            patch.delenv(name)
        return _run(tmp_path_factory.mktemp("baseline") / "run", runs_home)


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    (target / "results.json").unlink()
    return target


def read_records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def write_records(run: Path, records: list[dict[str, Any]]) -> None:
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def answer(record: dict[str, Any], right: bool) -> None:
    """Rewrite a closed record as if the model had answered right or wrong."""
    letter = record["gold"] if right else ("A" if record["gold"] != "A" else "B")
    record.update(output=letter, extracted=letter, correct=right, scores={"accuracy": 100.0 if right else 0.0})


def plant(run: Path, task: str, to_wrong: int = 0, to_right: int = 0) -> tuple[set[str], set[str]]:
    """Turn the first ``to_wrong`` right answers of ``task`` wrong and ``to_right`` wrong ones right."""
    records = read_records(run)
    made_wrong: set[str] = set()
    made_right: set[str] = set()
    for record in records:
        if record["task"] != task:
            continue
        if record["correct"] and len(made_wrong) < to_wrong:
            answer(record, right=False)
            made_wrong.add(record["key"])
        elif not record["correct"] and len(made_right) < to_right:
            answer(record, right=True)
            made_right.add(record["key"])
    assert (len(made_wrong), len(made_right)) == (to_wrong, to_right)
    write_records(run, records)
    return made_wrong, made_right


def compare_json(*args: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli("compare", *args, "--json")
    return result.returncode, json.loads(result.stdout), result.stderr


def cell(report: dict[str, Any], task: str, kind: str = "closed") -> dict[str, Any]:
    return next(c for c in report["cells"] if c["task"] == task and c["kind"] == kind)


# --- the gate on real runs -------------------------------------------------------------------

def test_identical_runs_pass_with_no_flips(baseline_run: Path, runs_home: dict[str, str], tmp_path: Path) -> None:
    # The same checkpoint evaluated again under another name: paired automatically, nothing changed.
    candidate = _run(tmp_path / "candidate", runs_home, model="random,seed=1,label=candidate")
    code, report, stderr = compare_json(str(baseline_run), str(candidate))
    assert code == 0, stderr
    assert report["status"] == "pass" and report["flips"] == [] and report["problems"] == []
    assert report["pairs"] == [{"baseline": "random", "candidate": "candidate"}]
    assert {(c["task"], c["kind"]) for c in report["cells"]} == {
        ("synth-temporal", "closed"), ("synth-reasoning", "closed"), ("overall", "closed")}
    assert all(c["delta"] == 0 and c["p_value"] == 1.0 and c["verdict"] == "ok" for c in report["cells"])
    assert cell(report, "overall")["n"] == cell(report, "synth-temporal")["n"] + cell(report, "synth-reasoning")["n"]


def test_planted_drop_fails_the_gate_listing_exactly_the_planted_flips(baseline_run: Path, tmp_path: Path) -> None:
    candidate = copy_run(baseline_run, tmp_path / "candidate")
    planted, _ = plant(candidate, "synth-temporal", to_wrong=8)
    code, report, _ = compare_json(str(baseline_run), str(candidate))
    assert code == 1 and report["status"] == "regression"
    assert {f["key"] for f in report["flips"] if f["direction"] == "right->wrong"} == planted
    assert [f for f in report["flips"] if f["direction"] == "wrong->right"] == []
    assert all(f["item_id"] and f["baseline_answer"] == f["gold"] != f["candidate_answer"] for f in report["flips"])
    temporal = cell(report, "synth-temporal")
    assert temporal["verdict"] == "regression" and (temporal["right_to_wrong"], temporal["wrong_to_right"]) == (8, 0)
    assert temporal["delta"] == pytest.approx(-800 / temporal["n"])
    assert temporal["p_value"] == pytest.approx(2 / 2**8) and temporal["ci_high"] < 0
    assert cell(report, "synth-reasoning")["verdict"] == "ok"
    assert cell(report, "overall")["regression"]

    table = run_cli("compare", str(baseline_run), str(candidate))
    assert table.returncode == 1 and "REGRESSION" in table.stdout
    assert all(key in table.stdout for key in planted)


def test_a_drop_within_max_drop_passes(baseline_run: Path, tmp_path: Path) -> None:
    candidate = copy_run(baseline_run, tmp_path / "candidate")
    plant(candidate, "synth-temporal", to_wrong=8)  # 6.7 points on 120 items, 3.3 overall
    code, report, _ = compare_json(str(baseline_run), str(candidate), "--max-drop", "7")
    assert code == 0 and report["settings"]["max_drop"] == 7.0
    assert cell(report, "synth-temporal")["verdict"] == "ok" and len(report["flips"]) == 8


def test_balanced_flips_are_listed_but_do_not_fail(baseline_run: Path, tmp_path: Path) -> None:
    candidate = copy_run(baseline_run, tmp_path / "candidate")
    worse, better = plant(candidate, "synth-reasoning", to_wrong=3, to_right=3)
    code, report, _ = compare_json(str(baseline_run), str(candidate))
    assert code == 0
    reasoning = cell(report, "synth-reasoning")
    # Every flip changed the extracted answer; a right->wrong rewrite may land on another wrong letter too.
    base = {r["key"]: r for r in read_records(baseline_run) if r["task"] == "synth-reasoning"}
    cand = {r["key"]: r for r in read_records(candidate) if r["task"] == "synth-reasoning"}
    same = sum(base[k]["extracted"] == cand[k]["extracted"] for k in base)
    assert same <= len(base) - 6 and reasoning["agreement"] == pytest.approx(100 * same / len(base))
    assert cell(report, "synth-temporal")["agreement"] == 100.0 == cell(report, "synth-temporal")["text_agreement"]
    same_text = sum(" ".join(base[k]["output"].split()) == " ".join(cand[k]["output"].split()) for k in base)
    assert reasoning["text_agreement"] == pytest.approx(100 * same_text / len(base))
    directions = {f["key"]: f["direction"] for f in report["flips"]}
    assert directions == {**{k: "right->wrong" for k in worse}, **{k: "wrong->right" for k in better}}
    assert cell(report, "synth-reasoning")["p_value"] == 1.0


def test_items_sharing_an_image_set_are_resampled_as_one_cluster(baseline_run: Path, tmp_path: Path) -> None:
    shared = copy_run(baseline_run, tmp_path / "baseline")
    records = read_records(shared)
    for i, record in enumerate(records):
        if record["task"] == "synth-temporal":
            record["image_set"] = f"set-{i % 4}"
    write_records(shared, records)
    candidate = shutil.copytree(shared, tmp_path / "candidate")
    plant(candidate, "synth-temporal", to_wrong=8)
    _, report, _ = compare_json(str(shared), str(candidate))
    assert cell(report, "synth-temporal")["n_clusters"] == 4
    assert cell(report, "synth-reasoning")["n_clusters"] == cell(report, "synth-reasoning")["n"]


def test_different_metric_definitions_are_not_comparable_unless_forced(baseline_run: Path, tmp_path: Path) -> None:
    candidate = copy_run(baseline_run, tmp_path / "candidate")
    manifest = json.loads((candidate / "manifest.json").read_text())
    manifest["metrics"]["extraction_rule_version"] = "0-older"
    (candidate / "manifest.json").write_text(json.dumps(manifest))

    refused = run_cli("compare", str(baseline_run), str(candidate))
    assert refused.returncode == 2 and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("not comparable (metric-definitions)")
    assert "extraction_rule_version" in lines[0] and "'0-older'" in lines[0] and "--force" in lines[0]

    code, report, stderr = compare_json(str(baseline_run), str(candidate), "--force")
    assert code == 0 and report["forced"] and report["problems"][0]["code"] == "metric-definitions"
    assert "warning: forced past: not comparable (metric-definitions)" in stderr


def test_package_versions_alone_do_not_block(baseline_run: Path, tmp_path: Path) -> None:
    candidate = copy_run(baseline_run, tmp_path / "candidate")
    manifest = json.loads((candidate / "manifest.json").read_text())
    manifest["metrics"]["versions"] = {"sacrebleu": "0.0.1-test"}
    (candidate / "manifest.json").write_text(json.dumps(manifest))
    code, report, _ = compare_json(str(baseline_run), str(candidate))
    assert code == 0 and any("versions differ" in n and "0.0.1-test" in n for n in report["notes"])


def test_open_metric_definitions_do_not_block_a_closed_only_comparison(baseline_run: Path, tmp_path: Path) -> None:
    candidate = copy_run(baseline_run, tmp_path / "candidate")
    manifest = json.loads((candidate / "manifest.json").read_text())
    manifest["metrics"]["open"] = {"open_score": "some other definition"}
    (candidate / "manifest.json").write_text(json.dumps(manifest))
    assert compare_json(str(baseline_run), str(candidate))[0] == 0


def test_different_sample_sets_are_not_comparable(baseline_run: Path, runs_home: dict[str, str], tmp_path: Path) -> None:
    candidate = _run(tmp_path / "candidate", runs_home, "--limit", "50")
    refused = run_cli("compare", str(baseline_run), str(candidate))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert sorted(line.split("'")[1] for line in lines) == ["synth-reasoning", "synth-temporal"]
    assert all(line.startswith("not comparable (sample-set)") and "only in the baseline" in line for line in lines)

    code, report, _ = compare_json(str(baseline_run), str(candidate), "--force")
    assert code == 0 and report["forced"]
    assert cell(report, "synth-temporal")["n"] == 50 and cell(report, "overall")["n"] == 100


def test_a_run_with_errored_records_is_not_comparable(baseline_run: Path, tmp_path: Path) -> None:
    candidate = copy_run(baseline_run, tmp_path / "candidate")
    records = read_records(candidate)
    failed = dict(records[0], output=None, extracted=None, correct=None, scores={},
                  error={"type": "TimeoutError", "message": "no answer in 60 s", "attempts": 3})
    write_records(candidate, records + [failed])  # a retry that failed again: the later line wins

    refused = run_cli("compare", str(baseline_run), str(candidate))
    assert refused.returncode == 2
    assert refused.stderr.startswith("not comparable (errored-records): the candidate run has 1 errored record(s)")
    assert records[0]["key"] in refused.stderr and "TimeoutError" in refused.stderr

    code, report, _ = compare_json(str(baseline_run), str(candidate), "--force")
    task = cell(report, records[0]["task"])
    assert code == 0 and task["n"] == sum(r["task"] == records[0]["task"] for r in records) - 1


def test_models_are_paired_explicitly_or_the_error_names_what_exists(baseline_run: Path, runs_home: dict[str, str],
                                                                    tmp_path: Path) -> None:
    candidate = _run(tmp_path / "candidate", runs_home, model="random,seed=1,label=cand-a,random,seed=1,label=cand-b")
    ambiguous = run_cli("compare", str(baseline_run), str(candidate))
    assert ambiguous.returncode == 2 and "--model BASELINE_ID=CANDIDATE_ID" in ambiguous.stderr
    code, report, _ = compare_json(str(baseline_run), str(candidate), "--model", "random=cand-b")
    assert code == 0 and report["pairs"] == [{"baseline": "random", "candidate": "cand-b"}]
    unknown = run_cli("compare", str(baseline_run), str(candidate), "--model", "nope=cand-b")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: --model nope=cand-b: the baseline run has no model 'nope' (it has: random)"


def test_a_missing_folder_is_one_error_line(tmp_path: Path) -> None:
    result = run_cli("compare", str(tmp_path / "absent"), str(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith("error: baseline run directory")
    assert "Traceback" not in result.stderr


def test_json_parses_and_markdown_carries_the_table(baseline_run: Path, tmp_path: Path) -> None:
    candidate = copy_run(baseline_run, tmp_path / "candidate")
    planted, _ = plant(candidate, "synth-temporal", to_wrong=8)
    files = tmp_path / "gate.json", tmp_path / "gate.md"
    markdown = run_cli("compare", str(baseline_run), str(candidate), "--markdown", "--seed", "7",
                       "--write-json", str(files[0]), "--write-markdown", str(files[1]))
    assert markdown.returncode == 1
    assert MARKDOWN_HEADER in markdown.stdout and "**regression**" in markdown.stdout
    assert all(f"`{key}`" in markdown.stdout for key in planted)
    assert files[1].read_text() == markdown.stdout
    report = json.loads(files[0].read_text())
    assert report["exit_code"] == 1 and report["settings"]["bootstrap"]["seed"] == 7
    assert report["baseline"]["run_id"] == json.loads((baseline_run / "manifest.json").read_text())["run_id"]


def test_compare_works_where_torch_cannot_import(baseline_run: Path, tmp_path: Path) -> None:
    poisoned = tmp_path / "poisoned"
    for name in ("torch", "transformers", "vllm"):
        (poisoned / name).mkdir(parents=True)
        (poisoned / name / "__init__.py").write_text(f"raise ImportError('{name} must not be imported')\n")
    result = run_cli("compare", str(baseline_run), str(baseline_run), pythonpath=[poisoned], subprocess_=True)
    assert result.returncode == 0, result.stderr


# --- statistics ------------------------------------------------------------------------------

@pytest.mark.parametrize(("b", "c", "p"), [
    (0, 6, 0.03125),      # 2 * 1/64
    (6, 0, 0.03125),
    (1, 1, 1.0),          # 2 * 3/4, capped
    (0, 0, 1.0),          # no discordant pair
    (2, 8, 0.109375),     # 2 * (1 + 10 + 45) / 1024
    (3, 12, 0.03515625),  # 2 * (1 + 15 + 105 + 455) / 32768
    (5, 5, 1.0),
])
def test_mcnemar_exact_p_matches_hand_computed_values(b: int, c: int, p: float) -> None:
    assert mcnemar_exact_p(b, c) == pytest.approx(p, abs=1e-12)


def test_mcnemar_handles_large_counts_and_rejects_negative_ones() -> None:
    assert 0 < mcnemar_exact_p(1000, 1100) < 0.05 < mcnemar_exact_p(1000, 1050)
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 3)


def _simulate(rng: np.random.Generator, n_clusters: int = 150, size: int = 3) -> tuple[list[float], list[float], list[int]]:
    """Clustered paired answers with a true delta of -4 points.

    Per cluster: base answers right with p=0.6 each; with p=0.1 the candidate turns all of the
    cluster's right answers wrong, with p=0.05 all its wrong answers right (flips are correlated
    within a cluster). E[delta] = 100 * (-0.1 * 0.6 + 0.05 * 0.4) = -4.
    """
    base, cand, clusters = [], [], []
    for cluster in range(n_clusters):
        worse, better = rng.random() < 0.1, rng.random() < 0.05
        for _ in range(size):
            right = rng.random() < 0.6
            base.append(100.0 * right)
            cand.append(100.0 * ((right and not worse) or (not right and better)))
            clusters.append(cluster)
    return base, cand, clusters


def test_paired_bootstrap_ci_covers_the_true_delta() -> None:
    true_delta = -4.0
    rng = np.random.default_rng(12345)
    covered = covered_naively = 0
    reps = 200
    for rep in range(reps):
        base, cand, clusters = _simulate(rng)
        low, high = paired_delta_ci(base, cand, clusters, BootstrapSettings(n_resamples=500, seed=rep))  # type: ignore[misc]
        covered += low <= true_delta <= high
        naive_low, naive_high = paired_delta_ci(base, cand, list(range(len(base))),  # type: ignore[misc]
                                                BootstrapSettings(n_resamples=500, seed=rep))
        covered_naively += naive_low <= true_delta <= naive_high
    assert 0.9 <= covered / reps <= 0.99
    assert covered_naively / reps < 0.9  # items resampled as if independent: too narrow here


def test_paired_bootstrap_ci_is_reproducible_and_seeded() -> None:
    base, cand, clusters = _simulate(np.random.default_rng(1))
    first = paired_delta_ci(base, cand, clusters, BootstrapSettings(seed=3))
    assert first == paired_delta_ci(base, cand, clusters, BootstrapSettings(seed=3))
    assert first != paired_delta_ci(base, cand, clusters, BootstrapSettings(seed=4))


def test_open_cells_regress_only_when_the_interval_is_below_zero() -> None:
    rng = np.random.default_rng(0)
    base = list(rng.uniform(20, 60, size=200))
    clusters = list(range(200))
    clear = compare_cell("m", "m", "t", "open", base, [b - 5 + rng.normal(0, 2) for b in base], clusters)
    assert clear.verdict == "regression" and clear.p_value is None and clear.ci_high is not None and clear.ci_high < 0
    noisy = compare_cell("m", "m", "t", "open", base[:10], [b - 5 + rng.normal(0, 40) for b in base[:10]], clusters[:10])
    assert noisy.delta < -1 and noisy.ci_high is not None and noisy.ci_high > 0 and noisy.verdict == "drop, n.s."
    small = compare_cell("m", "m", "t", "open", base, [b - 0.5 for b in base], clusters)
    assert small.ci_high is not None and small.ci_high < 0 and small.verdict == "ok"  # significant, within max-drop
    strict = compare_cell("m", "m", "t", "open", base, [b - 0.5 for b in base], clusters, CompareSettings(max_drop=0))
    assert strict.verdict == "regression"


def test_a_drop_of_exactly_max_drop_is_not_a_regression() -> None:
    # 600 items, 6 right->wrong flips (McNemar p = 0.03125): delta is -1 point, up to float noise.
    base = [100.0] * 300 + [0.0] * 300
    cand = [0.0] * 6 + base[6:]
    at_threshold = compare_cell("m", "m", "t", "closed", base, cand, list(range(600)), CompareSettings(max_drop=1.0))
    assert at_threshold.delta == pytest.approx(-1.0) and at_threshold.p_value == 0.03125
    assert at_threshold.verdict == "ok"
    below = compare_cell("m", "m", "t", "closed", base, cand, list(range(600)), CompareSettings(max_drop=0.99))
    assert below.verdict == "regression"


def test_comparison_data_renders_without_a_terminal(baseline_run: Path) -> None:
    comparison = compare_runs(baseline_run, baseline_run, CompareSettings(alpha=0.1))
    assert comparison.exit_code == 0 and comparison.flips == []
    text = to_markdown(comparison)
    assert MARKDOWN_HEADER.replace("95% CI", "90% CI") in text and "**PASS" in text
