"""Confidence intervals for paired comparisons (seeded bootstrap)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BOOTSTRAP_SEED = 0


def paired_bootstrap(n: int, statistic: Callable[[np.ndarray], float], confidence: float = 0.95,
                     resamples: int = 1000) -> tuple[float, float]:
    """Percentile interval of ``statistic(index)`` over bootstrap resamples of ``range(n)`` (paired samples)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)])
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)
