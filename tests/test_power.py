"""``compare --power``: the smallest difference a paired comparison detects, checked by simulation
against the tests the gate really runs (McNemar's exact test; the cluster-robust normal test)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_compare import baseline_run, copy_run, plant, runs_home  # noqa: F401  (module fixtures)

from medmim_eval.compare_stats import mcnemar_exact_p
from medmim_eval.power import closed_mdd, detectable_for_cell, open_mdd


def _mcnemar_power(n: int, discordance: float, delta: float, sims: int, rng: np.random.Generator) -> float:
    """Share of simulated paired samples where McNemar's exact test rejects at 0.05."""
    p_gain, p_loss = (discordance + delta) / 2, (discordance - delta) / 2
    draws = rng.multinomial(n, [p_gain, p_loss, 1 - discordance], size=sims)
    return float(np.mean([mcnemar_exact_p(int(loss), int(gain)) < 0.05 for gain, loss, _ in draws]))


@pytest.mark.parametrize("n,discordance", [(300, 0.2), (120, 0.35), (600, 0.1)])
def test_closed_mdd_gives_the_stated_power_to_mcnemars_exact_test(n: int, discordance: float) -> None:
    rng = np.random.default_rng(0)
    mdd = closed_mdd(discordance, n, alpha=0.05, power=0.8)
    delta = mdd.points / 100
    at_mdd = _mcnemar_power(n, discordance, delta, 2000, rng)
    # The normal approximation is close to the exact test; a factor 2 off would land far outside.
    assert 0.7 <= at_mdd <= 0.88, (mdd, at_mdd)
    assert _mcnemar_power(n, discordance, delta / 2, 2000, rng) < 0.45


def test_open_mdd_gives_the_stated_power_to_the_paired_normal_test() -> None:
    rng = np.random.default_rng(1)
    sd, k = 20.0, 200
    clusters = list(range(k))
    observed = rng.normal(0, 1, k)
    observed = (observed - observed.mean()) / observed.std(ddof=1) * sd  # exactly the population's sd
    mdd = open_mdd(list(observed), clusters, power=0.8).points
    rejections = 0
    for _ in range(2000):
        diffs = rng.normal(mdd, sd, k)
        rejections += abs(diffs.mean()) / (diffs.std(ddof=1) / np.sqrt(k)) > 1.96
    assert 0.72 <= rejections / 2000 <= 0.88


def test_mdd_shrinks_with_more_clusters_and_grows_with_power() -> None:
    assert closed_mdd(0.2, 600).points < closed_mdd(0.2, 150).points
    assert closed_mdd(0.2, 300, power=0.9).points > closed_mdd(0.2, 300, power=0.5).points
    assert closed_mdd(0.3, 300).points > closed_mdd(0.1, 300).points


def test_items_sharing_an_image_set_count_once() -> None:
    baseline = [100.0, 0.0] * 50
    candidate = [0.0, 0.0] * 50
    per_item = detectable_for_cell("closed", baseline, candidate, list(range(100)))
    per_pair = detectable_for_cell("closed", baseline, candidate, [i // 2 for i in range(100)])
    assert per_pair.n_units == 50 and per_pair.points > per_item.points


def test_no_discordance_assumes_one_in_n_and_says_so() -> None:
    result = closed_mdd(0.0, 100)
    assert result.assumed_discordance and "none observed" in result.describe()
    assert result.points == closed_mdd(0.01, 100).points


@pytest.mark.parametrize("bad", [dict(alpha=0.0), dict(power=1.0), dict(n_units=0)])
def test_bad_settings_raise(bad: dict) -> None:
    args = dict(discordance=0.2, n_units=100, alpha=0.05, power=0.8) | bad
    with pytest.raises(ValueError):
        closed_mdd(**args)


def test_compare_power_prints_the_detectable_difference_beside_every_non_significant_cell(
        baseline_run: Path, tmp_path: Path) -> None:  # noqa: F811
    candidate = copy_run(baseline_run, tmp_path / "candidate")
    plant(candidate, "synth-reasoning", to_wrong=3, to_right=2)
    plain = run_cli("compare", str(baseline_run), str(candidate))
    assert "Detectable" not in plain.stdout
    table = run_cli("compare", str(baseline_run), str(candidate), "--power")
    assert table.returncode == 0, table.stderr
    assert "Detectable" in table.stdout and "n.s.; detectable ±" in table.stdout
    assert "is not evidence of no change" in table.stdout
    report = json.loads(run_cli("compare", str(baseline_run), str(candidate), "--power", "0.9", "--json").stdout)
    cells = {c["task"]: c for c in report["cells"]}
    reasoning = cells["synth-reasoning"]
    expected = closed_mdd(5 / reasoning["n"], reasoning["n_clusters"], power=0.9).points
    assert reasoning["detectable"] == pytest.approx(expected)
    assert report["settings"]["power"]["power"] == 0.9
    markdown = run_cli("compare", str(baseline_run), str(candidate), "--power", "--markdown").stdout
    assert "| Detectable |" in markdown
