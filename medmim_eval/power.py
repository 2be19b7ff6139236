"""How large a difference a paired comparison could have detected: the minimum detectable
difference (MDD) of a cell at a given significance level and power.

A "no significant change" from ``compare`` is not evidence of no difference when the cell is small;
the MDD says what the test could see. Pure functions over plain numbers, no scipy.

Closed cells (0/100 per item, McNemar's test): the normal approximation of the paired test on the
discordant pairs (Connor 1987). With ``d`` the observed discordance rate (share of pairs where the
two models disagree on right/wrong) and ``n`` the number of independent units, a difference ``Δ``
(in proportions) is detected with power ``1 - β`` when
``n = (z_{1-α/2} √d + z_{1-β} √(d - Δ²))² / Δ²``; the MDD is the ``Δ`` solving it. Items sharing
an image set are not independent, so ``n`` is the number of image-set clusters (conservative).
With no discordant pair observed, ``d`` is taken as ``1 / n`` (the smallest non-zero rate the cell
could show) and the result says so.

Open cells (per-item scores on 0-100, paired bootstrap): ``(z_{1-α/2} + z_{1-β}) × SE`` with SE the
cluster-robust standard error of the mean paired difference.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from math import sqrt
from statistics import NormalDist
from typing import Hashable, Sequence

DEFAULT_POWER = 0.8


@dataclass(frozen=True)
class Detectable:
    """The minimum detectable |difference| of a cell, in points on 0-100, and how it was derived."""

    points: float
    power: float
    alpha: float
    n_units: int
    discordance: float | None = None
    assumed_discordance: bool = False

    def describe(self) -> str:
        basis = f"{self.n_units} clusters"
        if self.discordance is not None:
            rate = f"{100 * self.discordance:.1f}%"
            basis += f", discordance {rate}" + (" (none observed; 1/n assumed)" if self.assumed_discordance else "")
        return f"±{self.points:.1f} at power {self.power:g}, alpha {self.alpha:g} ({basis})"


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def _check(alpha: float, power: float, n_units: int) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must lie strictly between 0 and 1, got {power}")
    if n_units < 1:
        raise ValueError("a cell needs at least one unit to compute a detectable difference")


def closed_mdd(discordance: float, n_units: int, alpha: float = 0.05, power: float = DEFAULT_POWER) -> Detectable:
    """MDD of McNemar's paired test from the discordance rate and the number of independent units.

    Raises:
        ValueError: alpha or power outside (0, 1), no unit, or a rate outside [0, 1].
    """
    _check(alpha, power, n_units)
    if not 0 <= discordance <= 1:
        raise ValueError(f"a discordance rate lies in [0, 1], got {discordance}")
    assumed = discordance == 0
    d = 1 / n_units if assumed else discordance
    za, zb = _z(1 - alpha / 2), _z(power)

    def needed_n(delta: float) -> float:
        return (za * sqrt(d) + zb * sqrt(max(d - delta * delta, 0.0))) ** 2 / (delta * delta)

    # needed_n falls as delta grows; find the delta where it equals n_units by bisection on (0, 1].
    low, high = 1e-9, 1.0
    if needed_n(high) > n_units:
        delta = high
    else:
        for _ in range(200):
            mid = (low + high) / 2
            if needed_n(mid) > n_units:
                low = mid
            else:
                high = mid
        delta = high
    return Detectable(points=100 * delta, power=power, alpha=alpha, n_units=n_units, discordance=discordance,
                      assumed_discordance=assumed)


def open_mdd(differences: Sequence[float], clusters: Sequence[Hashable], alpha: float = 0.05,
             power: float = DEFAULT_POWER) -> Detectable:
    """MDD of the paired comparison of open scores from the per-item differences (points) and clusters.

    Raises:
        ValueError: alpha or power outside (0, 1), no item, or sequences of different lengths.
    """
    if len(differences) != len(clusters):
        raise ValueError("differences and clusters differ in length")
    totals: dict[Hashable, float] = defaultdict(float)
    sizes: dict[Hashable, int] = defaultdict(int)
    for value, cluster in zip(differences, clusters):
        totals[cluster] += value
        sizes[cluster] += 1
    k = len(totals)
    _check(alpha, power, k)
    n = len(differences)
    mean = sum(differences) / n
    if k < 2:
        se = float("inf")
    else:
        # Cluster-robust (sandwich) variance of the mean of per-item differences.
        residuals = [totals[c] - sizes[c] * mean for c in totals]
        se = sqrt(k / (k - 1) * sum(r * r for r in residuals)) / n
    points = (_z(1 - alpha / 2) + _z(power)) * se
    return Detectable(points=points, power=power, alpha=alpha, n_units=k)


def detectable_for_cell(kind: str, baseline: Sequence[float], candidate: Sequence[float],
                        clusters: Sequence[Hashable], alpha: float = 0.05,
                        power: float = DEFAULT_POWER) -> Detectable:
    """The MDD of one compare cell of paired per-item scores (0-100)."""
    if kind == "closed":
        discordant = sum((b > 0) != (c > 0) for b, c in zip(baseline, candidate))
        return closed_mdd(discordant / len(baseline), len(set(clusters)), alpha, power)
    return open_mdd([c - b for b, c in zip(baseline, candidate)], clusters, alpha, power)
