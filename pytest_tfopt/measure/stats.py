"""Confidence intervals for paired comparisons (seeded BCa bootstrap, exact McNemar, Tango's score interval) and
for timings (order statistics, effective sample size)."""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from ..errors import DatasetError

BOOTSTRAP_SEED = 0


class Interval(tuple):
    """``(low, high)`` of a bootstrap interval, with :attr:`effective`: how many samples carry the difference."""

    effective: float

    def __new__(cls, low: float, high: float, effective: float = math.inf) -> Interval:
        self = super().__new__(cls, (float(low), float(high)))
        self.effective = effective
        return self


def paired_bootstrap(n: int, statistic: Callable[[np.ndarray], float], confidence: float = 0.95,
                     resamples: int = 1000, method: str = "bca") -> Interval:
    """Two-sided interval of ``statistic(index)`` over bootstrap resamples of ``range(n)`` (paired samples).

    ``method="bca"`` (the default): Efron's bias-corrected and accelerated percentile interval (the bias from
    where the full-sample statistic falls among the resamples, the acceleration from a jackknife), which keeps
    each end near its one-sided level when the statistic's distribution is skewed or biased, as drops of AUC,
    RMSE or relative drops are; ``"percentile"``: the plain percentile interval. The result carries
    :func:`effective_samples` from the same jackknife: a guard for when few samples carry the difference.

    A resample on which the statistic is undefined (it returns NaN, e.g. an AUC drawn without one of the
    classes) is left out; when every one is, this raises a :class:`DatasetError`.
    """
    if method not in ("bca", "percentile"):
        raise ValueError(f"method {method!r}: use 'bca' or 'percentile'")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)], dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise DatasetError(f"the statistic is undefined on every bootstrap resample of {n} samples: evaluate on "
                           "more data (with both classes for AUC)")
    leave_one_out = jackknife(n, statistic)
    tail = (1 - confidence) / 2
    levels = [tail, 1 - tail]
    if method == "bca":
        levels = _bca_levels(values, statistic(np.arange(n)), leave_one_out, tail)
    lo, hi = np.quantile(values, levels)
    return Interval(float(lo), float(hi), effective_samples(leave_one_out))


def jackknife(n: int, statistic: Callable[[np.ndarray], float], groups: int = 2000) -> np.ndarray:
    """The statistic with each sample left out in turn (NaN where undefined); above ``groups`` samples, with
    each of ``groups`` interleaved blocks left out (a grouped jackknife: the cost stays ``groups`` calls)."""
    index = np.arange(n)
    if n <= groups:
        return np.array([statistic(np.delete(index, i)) for i in range(n)], dtype=np.float64)
    return np.array([statistic(index[index % groups != g]) for g in range(groups)], dtype=np.float64)


def _bca_levels(values: np.ndarray, full: float, leave_one_out: np.ndarray, tail: float) -> list[float]:
    """The BCa quantile levels of the resampled ``values`` for a two-sided interval with ``tail`` on each side."""
    normal = NormalDist()
    below = (np.sum(values < full) + 0.5 * np.sum(values == full)) / values.size
    jack = leave_one_out[~np.isnan(leave_one_out)]
    if not 0 < below < 1 or jack.size < 3 or math.isnan(full):
        return [tail, 1 - tail]  # every resample on one side: no bias estimate, the plain percentiles
    z0 = normal.inv_cdf(float(below))
    spread = jack.mean() - jack
    denominator = 6 * float(np.sum(spread**2)) ** 1.5
    accel = float(np.sum(spread**3)) / denominator if denominator > 0 else 0.0
    levels = []
    for level in (tail, 1 - tail):
        z = z0 + normal.inv_cdf(level)
        shrink = 1 - accel * z
        levels.append(normal.cdf(z0 + z / shrink) if shrink > 0 else (0.0 if level < 0.5 else 1.0))
    return levels


def effective_samples(leave_one_out: np.ndarray) -> float:
    """How many samples carry the difference the statistic measures: the participation ratio
    ``(sum |u|)^2 / sum u^2`` of the jackknife influences ``u``, measured from their median (the typical sample).

    For a top-1 drop it is the number of samples fp32 and the variant score differently (each moves the drop by
    one sample, the others by nothing); for MAE of a model whose every output moved a little it is near ``n``;
    when a handful of samples make the whole difference it is about that handful.
    """
    jack = leave_one_out[~np.isnan(leave_one_out)]
    if jack.size == 0:
        return 0.0
    u = jack - np.median(jack)
    squares = float(np.sum(u * u))
    if squares <= 0 or not math.isfinite(squares):
        return 0.0
    scale = float(np.max(np.abs(u)))
    u = u / scale  # the ratio does not depend on the scale; this keeps tiny influences from underflowing
    return float(np.sum(np.abs(u)) ** 2 / np.sum(u * u))


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


def tango_statistic(b: int, c: int, n: int, delta: float, continuity: float = 0.0) -> float:
    """Tango's (1998) score statistic for H0: p_b - p_c = ``delta`` on ``n`` pairs, ``b``/``c`` discordant.

    ``(b - c - n*delta) / sqrt(n * (2*q + delta*(1 - delta)))`` with ``q`` the maximum-likelihood
    p_c under H0 (closed form); at ``delta = 0`` it is McNemar's ``(b - c) / sqrt(b + c)``. ``continuity``:
    a correction that moves the numerator that many pairs towards 0 (0.5: half a pair, the classic one).
    """
    a_ = 2 * n
    b_ = -b - c + (2 * n - b + c) * delta
    c_ = -c * delta * (1 - delta)
    q = (math.sqrt(max(b_ * b_ - 4 * a_ * c_, 0.0)) - b_) / (2 * a_)
    variance = n * (2 * q + delta * (1 - delta))
    numerator = b - c - n * delta
    numerator = math.copysign(max(abs(numerator) - continuity, 0.0), numerator)
    if variance <= 0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def tango_interval(b: int, c: int, n: int, confidence: float = 0.95,
                   continuity: float = 0.0) -> tuple[float, float]:
    """Tango's score interval for the paired difference ``(b - c) / n``, two-sided at ``confidence``.

    The set of ``delta`` whose score statistic stays within ``±z``, found by bisection (the
    statistic falls as ``delta`` grows). Recommended for paired proportions by Fagerland,
    Lydersen & Laake (2013); with no discordant pairs the upper bound is ``z² / (n + z²)``.
    ``continuity`` (pairs; see :func:`tango_statistic`) widens it: with few discordant pairs the plain score
    interval's ends fall short of their one-sided level (benchmarks/CALIBRATION.md), half a pair corrects that.
    """
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need 0 <= b + c <= n with n > 0, got b={b}, c={c}, n={n}")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    estimate = (b - c) / n

    def bound(sign: int) -> float:
        # sign -1: the lower bound, where the statistic rises to +z; sign +1: the upper, where it falls to -z
        inside, outside = estimate, float(sign)
        if -sign * tango_statistic(b, c, n, outside, continuity) <= z:
            return outside
        for _ in range(100):
            mid = (inside + outside) / 2
            if -sign * tango_statistic(b, c, n, mid, continuity) <= z:
                inside = mid
            else:
                outside = mid
        return inside

    return bound(-1), bound(1)


# ---- autocorrelated samples ------------------------------------------------------------
def effective_sample_size(samples: np.ndarray) -> float:
    """How many independent samples a series of ``n`` timings is worth: ``n (1 - r) / (1 + r)``.

    ``r`` is the lag-1 autocorrelation of the samples' ranks (robust to outliers; bias-corrected, as the plain
    estimate runs low by about ``(1 + 4r)/n``: at n=50 it counted a strongly correlated series as worth 10
    runs where it is worth 6), clipped at 0: timings drift
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
    r += (1 + 4 * r) / n  # the estimate's small-sample bias, -(1 + 4r)/n (Kendall 1954; Marriott & Pope 1954)
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
