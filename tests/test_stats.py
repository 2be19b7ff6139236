"""Bootstrap intervals: nominal coverage on simulated data; clusters widen them when correlated."""
from __future__ import annotations

import random

import pytest

from medmim_eval.stats import BootstrapSettings, chance_level, chance_normalised, cluster_bootstrap_ci


def test_coverage_is_near_nominal_for_independent_items() -> None:
    rng = random.Random(1)
    truth, trials, covered = 0.6, 200, 0
    for trial in range(trials):
        values = [100.0 if rng.random() < truth else 0.0 for _ in range(150)]
        low, high = cluster_bootstrap_ci(values, list(range(150)), BootstrapSettings(n_resamples=400, seed=trial))
        covered += low <= truth * 100 <= high
    assert 0.90 <= covered / trials <= 0.99


def _clustered(rng: random.Random, n_clusters: int, size: int) -> tuple[list[float], list[int]]:
    """Items of one cluster share a latent difficulty: strongly correlated answers."""
    values, clusters = [], []
    for c in range(n_clusters):
        p = rng.choice([0.1, 0.9])
        for _ in range(size):
            values.append(100.0 if rng.random() < p else 0.0)
            clusters.append(c)
    return values, clusters


def test_clustered_intervals_are_wider_and_cover_when_clusters_correlate() -> None:
    rng = random.Random(2)
    trials, covered_clustered, covered_naive, wider = 100, 0, 0, 0
    for trial in range(trials):
        values, clusters = _clustered(rng, 40, 6)
        settings = BootstrapSettings(n_resamples=400, seed=trial)
        c_low, c_high = cluster_bootstrap_ci(values, clusters, settings)
        n_low, n_high = cluster_bootstrap_ci(values, list(range(len(values))), settings)
        wider += (c_high - c_low) > (n_high - n_low)
        covered_clustered += c_low <= 50.0 <= c_high
        covered_naive += n_low <= 50.0 <= n_high
    assert wider >= 95
    assert covered_clustered / trials >= 0.88
    assert covered_naive < covered_clustered  # ignoring clusters under-covers


def test_seeded_and_recorded() -> None:
    values, clusters = [0.0, 100.0, 100.0, 0.0, 100.0], [1, 1, 2, 3, 3]
    a = cluster_bootstrap_ci(values, clusters, BootstrapSettings(seed=5))
    assert a == cluster_bootstrap_ci(values, clusters, BootstrapSettings(seed=5))
    assert BootstrapSettings(seed=5).describe()["seed"] == 5
    assert cluster_bootstrap_ci([1.0], [0]) is None


def test_chance_and_chance_normalised() -> None:
    assert chance_level([2, 4]) == pytest.approx(37.5)
    assert chance_normalised(37.5, 37.5) == 0.0
    assert chance_normalised(100.0, 37.5) == 100.0
    assert chance_normalised(68.75, 37.5) == pytest.approx(50.0)
    assert chance_level([]) is None
