"""Confidence intervals for paired comparisons: seeded bootstrap, exact McNemar, Tango's score interval."""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from ..errors import DatasetError

BOOTSTRAP_SEED = 0


def paired_bootstrap(n: int, statistic: Callable[[np.ndarray], float], confidence: float = 0.95,
                     resamples: int = 1000) -> tuple[float, float]:
    """Percentile interval of ``statistic(index)`` over bootstrap resamples of ``range(n)`` (paired samples).

    A resample on which the statistic is undefined (it returns NaN, e.g. an AUC drawn without one of the
    classes) is left out; when every one is, this raises a :class:`DatasetError`.
    """
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)], dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise DatasetError(f"the statistic is undefined on every bootstrap resample of {n} samples: evaluate on "
                           "more data (with both classes for AUC)")
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


# ---- McNemar: paired correct/incorrect outcomes --------------------------------------
def binomial_cdf_half(k: int, m: int) -> float:
    """P(X <= k) for X ~ Binomial(m, 1/2) (0 for k < 0, 1 for k >= m).

    Exact integers up to 1,000 trials; beyond, summed in log space (``lgamma``), so 20,000 discordant pairs take
    milliseconds instead of the tens of seconds big-integer coefficients took (agrees to ~1e-12 relative).
    """
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    if m <= 1000:  # exact integer arithmetic while it is cheap
        return sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    return float(np.exp(_log_binomial_pmf(m, 0.5)[: k + 1]).sum())


def _log_binomial_pmf(n: int, q: float) -> np.ndarray:
    """log P(B = k), k = 0..n, for B ~ Binomial(n, q) with 0 < q < 1."""
    k = np.arange(n + 1, dtype=np.float64)
    lgamma = np.vectorize(math.lgamma, otypes=[np.float64])
    return lgamma(n + 1.0) - lgamma(k + 1) - lgamma(n - k + 1) + k * math.log(q) + (n - k) * math.log1p(-q)


def quantile_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int | None, int | None]:
    """1-based ranks ``(l, u)`` of the sorted samples bounding the ``q``-quantile, distribution-free.

    Equal tails: ``P(x_(l) > Q) <= (1-confidence)/2`` and ``P(x_(u) < Q) <= (1-confidence)/2`` for any
    continuous distribution (order statistics: the count of samples below ``Q`` is Binomial(n, q)). A rank that
    does not exist among ``n`` samples is ``None``: then no bound on that side holds at this level
    (p95 needs 72 samples for an upper bound at 97.5 %, p99 368; see :func:`samples_for_upper_bound`).
    """
    tail = (1 - confidence) / 2
    cdf = np.cumsum(np.exp(_log_binomial_pmf(n, q)))  # P(B <= k)
    below = np.flatnonzero(cdf[:n] <= tail)  # P(B <= l-1) <= tail for l = k + 1
    lower = int(below[-1]) + 1 if below.size else None
    above = np.flatnonzero(cdf[:n] >= 1 - tail)  # P(B <= u-1) >= 1 - tail for u = k + 1
    upper = int(above[0]) + 1 if above.size else None
    return lower, upper


def samples_for_upper_bound(q: float, confidence: float = 0.95) -> int:
    """The fewest samples whose maximum is an upper bound of the ``q``-quantile at one-sided ``(1+confidence)/2``."""
    tail = (1 - confidence) / 2
    return max(1, math.ceil(math.log(tail) / math.log(q)))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` and ``c`` discordant pairs, under H0 each is b with probability 1/2.

    ``min(1, 2 * P(X <= min(b, c)))`` for X ~ Binomial(b + c, 1/2); 1.0 when there are no discordant pairs.
    """
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf_half(min(b, c), m))


def tango_statistic(b: int, c: int, n: int, delta: float) -> float:
    """Tango's (1998) score statistic for H0: p_b - p_c = ``delta`` on ``n`` pairs, ``b``/``c`` discordant.

    ``(b - c - n*delta) / sqrt(n * (2*q + delta*(1 - delta)))`` with ``q`` the maximum-likelihood
    p_c under H0 (closed form); at ``delta = 0`` it is McNemar's ``(b - c) / sqrt(b + c)``.
    """
    a_ = 2 * n
    b_ = -b - c + (2 * n - b + c) * delta
    c_ = -c * delta * (1 - delta)
    q = (math.sqrt(max(b_ * b_ - 4 * a_ * c_, 0.0)) - b_) / (2 * a_)
    variance = n * (2 * q + delta * (1 - delta))
    numerator = b - c - n * delta
    if variance <= 0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def tango_interval(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Tango's score interval for the paired difference ``(b - c) / n``, two-sided at ``confidence``.

    The set of ``delta`` whose score statistic stays within ``±z``, found by bisection (the
    statistic falls as ``delta`` grows). Recommended for paired proportions by Fagerland,
    Lydersen & Laake (2013); with no discordant pairs the upper bound is ``z² / (n + z²)``.
    """
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need 0 <= b + c <= n with n > 0, got b={b}, c={c}, n={n}")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    estimate = (b - c) / n

    def bound(sign: int) -> float:
        # sign -1: the lower bound, where the statistic rises to +z; sign +1: the upper, where it falls to -z
        inside, outside = estimate, float(sign)
        if -sign * tango_statistic(b, c, n, outside) <= z:
            return outside
        for _ in range(100):
            mid = (inside + outside) / 2
            if -sign * tango_statistic(b, c, n, mid) <= z:
                inside = mid
            else:
                outside = mid
        return inside

    return bound(-1), bound(1)


# ---- autocorrelated samples ------------------------------------------------------------
def effective_sample_size(samples: np.ndarray) -> float:
    """How many independent samples a series of ``n`` timings is worth: ``n (1 - r) / (1 + r)``.

    ``r`` is the lag-1 autocorrelation of the samples' ranks (robust to outliers), clipped at 0: timings drift
    and come in bursts, and neighbouring samples then carry less information than independent ones (the
    AR(1) variance inflation of a mean or a quantile's count). Never more than ``n``; at least 1.
    """
    n = len(samples)
    if n < 3:
        return float(n)
    ranks = np.argsort(np.argsort(samples, kind="stable"), kind="stable").astype(np.float64)
    ranks -= ranks.mean()
    denominator = float(np.dot(ranks, ranks))
    r = float(np.dot(ranks[:-1], ranks[1:])) / denominator if denominator > 0 else 0.0
    r = min(max(r, 0.0), 0.99)
    return max(1.0, n * (1 - r) / (1 + r))


def quantile_ranks_dependent(n: int, n_effective: float, q: float,
                             confidence: float = 0.95) -> tuple[int | None, int | None]:
    """:func:`quantile_ranks` for ``n`` samples worth ``n_effective`` independent ones: the ranks found among
    ``n_effective`` samples, moved to the same quantile positions among ``n`` (outwards: lower rank down, upper up).

    Equal to :func:`quantile_ranks` when ``n_effective >= n``; ``None`` where no bound holds at this level.
    """
    m = int(math.floor(n_effective))
    if m >= n:
        return quantile_ranks(n, q, confidence)
    lower, upper = quantile_ranks(max(m, 1), q, confidence)
    scale = (n + 1) / (m + 1)
    low = max(1, int(math.floor(lower * scale))) if lower else None
    high = int(math.ceil(upper * scale)) if upper else None
    return low, (high if high is not None and high <= n else None)
