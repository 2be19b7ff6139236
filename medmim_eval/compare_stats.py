"""Paired statistics for comparing two runs sample by sample: McNemar's exact test, a paired
cluster bootstrap of the score difference, and the per-cell gate verdict built from them.

Pure functions over plain numbers, no scipy: the gate must stay importable without heavy packages.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Any, Hashable, Literal, Sequence

from medmim_eval.power import detectable_for_cell
from medmim_eval.stats import DEFAULT_RESAMPLES, BootstrapSettings, cluster_bootstrap_ci

DEFAULT_MAX_DROP = 1.0
POWER_CLOSED = ("minimum detectable difference of McNemar's test (normal approximation, Connor 1987) from the "
                "observed discordance rate, with the number of image-set clusters as the sample size")
POWER_OPEN = "(z(1-alpha/2) + z(power)) x cluster-robust standard error of the mean paired difference"
DEFAULT_ALPHA = 0.05
# Deltas are means of 0/100 values; keep float noise from turning "exactly -1.0" into a regression.
_EPSILON = 1e-9

Verdict = Literal["regression", "drop, n.s.", "improved", "ok"]


@dataclass(frozen=True)
class CompareSettings:
    """How the gate decides.

    ``max_drop`` is in points on the 0-100 scale (>= 0): a cell regresses when its delta is below
    ``-max_drop`` *and* the drop is significant at ``alpha``. The bootstrap interval is computed at
    level ``1 - alpha`` (95% by default) from ``n_resamples`` resamples drawn with ``seed``.
    ``force`` compares what pairs even when the runs are not comparable.
    """

    max_drop: float = DEFAULT_MAX_DROP
    alpha: float = DEFAULT_ALPHA
    seed: int = 0
    n_resamples: int = DEFAULT_RESAMPLES
    force: bool = False
    power: float | None = None

    def bootstrap(self) -> BootstrapSettings:
        return BootstrapSettings(n_resamples=self.n_resamples, level=1 - self.alpha, seed=self.seed)

    def describe(self) -> dict[str, Any]:
        bootstrap = self.bootstrap().describe()
        bootstrap["method"] = "paired " + str(bootstrap["method"])
        described = {"max_drop": self.max_drop, "alpha": self.alpha, "force": self.force, "bootstrap": bootstrap,
                     "closed_test": "McNemar exact (two-sided binomial on discordant pairs)",
                     "open_test": "paired bootstrap interval entirely below 0"}
        if self.power is not None:
            described["power"] = {"power": self.power, "closed": POWER_CLOSED, "open": POWER_OPEN}
        return described


@dataclass(frozen=True)
class CellComparison:
    """One model pair x task x kind (task ``overall``: every closed pair of the model pair).

    Scores and ``delta`` (candidate - baseline) are in points on 0-100; ``ci_low``/``ci_high``
    bound the paired bootstrap interval of ``delta`` (``None`` below two items); ``p_value`` and
    the discordant counts exist for closed cells only.
    """

    baseline_model: str
    candidate_model: str
    task: str
    kind: str
    n: int
    n_clusters: int
    baseline: float
    candidate: float
    delta: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    right_to_wrong: int | None
    wrong_to_right: int | None
    verdict: Verdict
    detectable: float | None = None
    detectable_basis: str | None = None
    significant: bool = False
    agreement: float | None = None
    text_agreement: float | None = None

    @property
    def regression(self) -> bool:
        return self.verdict == "regression"


def mcnemar_exact_p(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    Under the null hypothesis (both models equally accurate) each of the ``n = b + c`` discordant
    pairs goes either way with probability 1/2, so ``min(b, c)`` follows Binomial(n, 1/2). The
    p-value is twice the lower tail, capped at 1; with no discordant pair it is 1.

    Args:
        right_to_wrong: pairs the baseline got right and the candidate wrong (``b``).
        wrong_to_right: pairs the baseline got wrong and the candidate right (``c``).

    Raises:
        ValueError: for a negative count.
    """
    if right_to_wrong < 0 or wrong_to_right < 0:
        raise ValueError("discordant pair counts cannot be negative")
    n = right_to_wrong + wrong_to_right
    if n == 0:
        return 1.0
    smaller = min(right_to_wrong, wrong_to_right)
    # Exact integers up to the final division: no float underflow for large n.
    tail = sum(comb(n, i) for i in range(smaller + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_delta_ci(
    baseline: Sequence[float],
    candidate: Sequence[float],
    clusters: Sequence[Hashable],
    settings: BootstrapSettings = BootstrapSettings(),
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``mean(candidate) - mean(baseline)`` over paired items.

    Item ``i`` of ``baseline`` and of ``candidate`` is the same sample answered by the two models;
    the interval resamples whole clusters (items sharing an image set) of the per-item differences,
    so both the pairing and the within-cluster correlation are kept.

    Returns:
        ``(low, high)`` at ``settings.level``, or ``None`` for fewer than two items.

    Raises:
        ValueError: when the three sequences differ in length.
    """
    if not len(baseline) == len(candidate) == len(clusters):
        raise ValueError("baseline, candidate and clusters differ in length")
    differences = [c - b for b, c in zip(baseline, candidate)]
    return cluster_bootstrap_ci(differences, clusters, settings)


def compare_cell(
    baseline_model: str,
    candidate_model: str,
    task: str,
    kind: str,
    baseline: Sequence[float],
    candidate: Sequence[float],
    clusters: Sequence[Hashable],
    settings: CompareSettings = CompareSettings(),
) -> CellComparison:
    """Scores, delta, interval, test and verdict of one cell of paired per-item scores (0-100).

    For ``kind == "closed"`` the scores must be 0 (wrong) or 100 (right); significance is McNemar's
    ``p < alpha``. Otherwise significance is the bootstrap interval lying entirely on one side of 0.
    Verdicts: ``regression`` (drop beyond ``max_drop``, significant), ``drop, n.s.`` (beyond the
    threshold, not significant), ``improved`` (gain beyond ``max_drop``, significant), ``ok``.

    Raises:
        ValueError: no items, or sequences of different lengths.
    """
    if not baseline:
        raise ValueError("a cell needs at least one paired item")
    interval = paired_delta_ci(baseline, candidate, clusters, settings.bootstrap())
    n = len(baseline)
    base_score, cand_score = sum(baseline) / n, sum(candidate) / n
    delta = cand_score - base_score
    p_value = right_to_wrong = wrong_to_right = None
    if kind == "closed":
        right_to_wrong = sum(b > c for b, c in zip(baseline, candidate))
        wrong_to_right = sum(b < c for b, c in zip(baseline, candidate))
        p_value = mcnemar_exact_p(right_to_wrong, wrong_to_right)
        significant_drop = significant_gain = p_value < settings.alpha
    else:
        significant_drop = interval is not None and interval[1] < 0
        significant_gain = interval is not None and interval[0] > 0
    verdict: Verdict = "ok"
    if delta < -settings.max_drop - _EPSILON:
        verdict = "regression" if significant_drop else "drop, n.s."
    elif delta > settings.max_drop + _EPSILON and significant_gain:
        verdict = "improved"
    detectable = None
    if settings.power is not None:
        detectable = detectable_for_cell(kind, baseline, candidate, clusters, settings.alpha, settings.power)
    return CellComparison(
        baseline_model=baseline_model, candidate_model=candidate_model, task=task, kind=kind, n=n,
        n_clusters=len(set(clusters)), baseline=base_score, candidate=cand_score, delta=delta,
        ci_low=interval[0] if interval else None, ci_high=interval[1] if interval else None, p_value=p_value,
        right_to_wrong=right_to_wrong, wrong_to_right=wrong_to_right, verdict=verdict,
        significant=significant_drop or significant_gain,
        detectable=None if detectable is None else detectable.points,
        detectable_basis=None if detectable is None else detectable.describe(),
    )
