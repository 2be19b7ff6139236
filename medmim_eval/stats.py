"""Uncertainty: percentile bootstrap intervals that resample clusters of items sharing an image set.

The official files reuse image sets across items; treating those items as independent would make
intervals too narrow. Resampling whole clusters keeps their correlation. An interval depends on the
items as a set, never on their order (a resumed run writes its records in another order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class BootstrapSettings:
    n_resamples: int = DEFAULT_RESAMPLES
    level: float = LEVEL
    seed: int = 0

    def describe(self) -> dict[str, object]:
        return {"method": "percentile bootstrap over clusters of items sharing an image set",
                "n_resamples": self.n_resamples, "level": self.level, "seed": self.seed}


def cluster_bootstrap_ci(
    values: Sequence[float], clusters: Sequence[Hashable], settings: BootstrapSettings = BootstrapSettings()
) -> tuple[float, float] | None:
    """Interval for the mean of ``values``, resampling whole clusters with replacement.

    Each resample draws as many clusters as there are and takes the mean over all their items
    (a ratio estimator, so clusters of different sizes are weighted by their item counts).
    The result does not depend on the order of the items: clusters are numbered in the order of
    their ``repr`` and each cluster's values are summed in sorted order. Returns ``None`` for
    fewer than two items.
    """
    if len(values) != len(clusters):
        raise ValueError("values and clusters differ in length")
    if len(values) < 2:
        return None
    index = {c: i for i, c in enumerate(sorted(set(clusters), key=repr))}
    ids = np.fromiter((index[c] for c in clusters), dtype=np.int64, count=len(clusters))
    items = np.asarray(values, dtype=float)
    order = np.lexsort((items, ids))  # float sums in a fixed order: the same bits whatever the input order
    sums = np.bincount(ids[order], weights=items[order], minlength=len(index))
    counts = np.bincount(ids, minlength=len(index)).astype(float)
    rng = np.random.default_rng(settings.seed)
    draws = rng.integers(0, len(sums), size=(settings.n_resamples, len(sums)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1 - settings.level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def chance_level(option_counts: Sequence[int]) -> float | None:
    """Expected accuracy (0-100) of uniform guessing: the mean of 100/k over items."""
    counts = [k for k in option_counts if k]
    if not counts:
        return None
    return 100.0 * sum(1 / k for k in counts) / len(counts)


def chance_normalised(accuracy: float | None, chance: float | None) -> float | None:
    """``100 * (acc - chance) / (100 - chance)``: 0 at chance, 100 when perfect."""
    if accuracy is None or chance is None or chance >= 100:
        return None
    return 100.0 * (accuracy - chance) / (100.0 - chance)
