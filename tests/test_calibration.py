"""Calibration of the statistical verdicts: small seeded simulations through the real interval and verdict code.

The fast versions of ``benchmarks/bench_calibration.py`` (its table is in ``benchmarks/CALIBRATION.md``): a truly
broken budget is PASS at most at the stated error rate (2.5 %: the upper end of a two-sided 95 % interval), within
simulation error, and an unchanged model on too few samples is INCONCLUSIVE, not FAIL. Each property also has a
control: the same check on a deliberately wrong rule fails, so the check can fail.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from pytest_tfopt.budgets import parse_marker
from pytest_tfopt.measure import accuracy as acc
from pytest_tfopt.measure.latency import LatencyStats
from pytest_tfopt.measure.stats import paired_bootstrap, quantile_ranks, tango_interval

REPS = 300
STATED = 0.025  # the one-sided error rate of either end of a two-sided 95 % interval


def most(rate: float, reps: int = REPS) -> float:
    """The highest rate a true ``rate`` reaches in ``reps`` repetitions, within 3 binomial standard errors."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / reps)


def share(verdicts: list[bool | None], which: bool | None) -> float:
    """The fraction of ``verdicts`` that are ``which`` (True PASS, False FAIL, None INCONCLUSIVE; numpy bools too)."""
    return sum((v is None) if which is None else (v is not None and bool(v) is which) for v in verdicts) / len(verdicts)


# ---- latency -------------------------------------------------------------------------------------------------
def lognormal_ns(rng: np.random.Generator, reps: int, n: int, sigma: float, phi: float) -> np.ndarray:
    """``reps`` series of ``n`` lognormal timings (median 1 ms, log-sd ``sigma``), AR(1) ``phi`` on the log scale."""
    eps = rng.standard_normal((reps, n))
    z = eps.copy()
    for t in range(1, n):  # stationary: every z[:, t] is N(0, 1)
        z[:, t] = phi * z[:, t - 1] + math.sqrt(1 - phi * phi) * eps[:, t]
    return np.rint(np.exp(sigma * z) * 1e6).astype(np.int64)


def true_percentile_ms(p: int, sigma: float) -> float:
    return math.exp(sigma * NormalDist().inv_cdf(p / 100))


def latency_verdicts(p: int, n: int, phi: float, factor: float, seed: int, sigma: float = 0.5,
                     interval: str = "stats") -> list[bool | None]:
    """Verdicts of ``max_latency_ms(factor * true p-th percentile, percentile=p)`` on simulated measurements.

    ``interval="stats"``: the real ``LatencyStats.interval``; ``"iid"``: the order-statistic ranks of ``n``
    independent runs (no autocorrelation correction), a wrong rule for AR(1) timings, for the controls.
    """
    rng = np.random.default_rng(seed)
    budget = parse_marker("max_latency_ms", (factor * true_percentile_ms(p, sigma),), {"percentile": p})
    lower, upper = quantile_ranks(n, p / 100)
    verdicts = []
    for row in lognormal_ns(rng, REPS, n, sigma, phi):
        stats = LatencyStats.from_ns(row.tolist(), 1)
        if interval == "stats":
            lo, hi = stats.interval(p)
        else:
            ordered = np.sort(row) / 1e6
            lo, hi = ordered[lower - 1], (ordered[upper - 1] if upper else math.inf)
        verdicts.append(budget.judge("sim on sim", stats.percentile(p), (lo, hi)).passed)
    return verdicts


@pytest.mark.parametrize("phi", [0.0, 0.8], ids=["iid", "ar1"])
@pytest.mark.parametrize(("p", "n"), [(95, 50), (95, 400), (99, 400), (50, 50)])
@pytest.mark.parametrize("factor", [0.9, 1.0], ids=["budget-10%", "budget-at-truth"])
def test_a_broken_latency_budget_is_rarely_pass(p, n, phi, factor):
    """A budget 10 % below the true percentile (broken), or at it, is PASS at most 2.5 % (+ simulation error)."""
    verdicts = latency_verdicts(p, n, phi, factor, seed=p * 1000 + n + int(10 * phi) + int(100 * factor))
    assert share(verdicts, True) <= most(STATED)


def test_the_latency_check_can_fail():
    """Controls: ignoring the autocorrelation, or deciding on the point value, breaks the same check."""
    iid_ranks = latency_verdicts(95, 400, 0.8, 1.0, seed=1, interval="iid")
    assert share(iid_ranks, True) > most(STATED)
    point = parse_marker("max_latency_ms", (true_percentile_ms(50, 0.5),), {"percentile": 50})
    rng = np.random.default_rng(2)
    verdicts = [point.judge("sim", LatencyStats.from_ns(row.tolist(), 1).percentile(50)).passed
                for row in lognormal_ns(rng, REPS, 50, 0.5, 0.0)]
    assert share(verdicts, True) > most(STATED)


def test_an_unbounded_percentile_is_never_pass():
    """Below the runs p99 needs (368 independent ones), even a generous budget cannot PASS."""
    verdicts = latency_verdicts(99, 100, 0.0, 2.0, seed=3)
    assert share(verdicts, True) == 0 and share(verdicts, None) > 0.9


# ---- accuracy --------------------------------------------------------------------------------------------------
BUDGET = 0.01
TOP1 = acc.resolve("top1")


def paired_counts(rng: np.random.Generator, n: int, discordance: float, drop: float) -> np.ndarray:
    """``REPS`` rows of (both right, fp32 right only, variant right only, both wrong) counts; fp32 ~95 % right."""
    p_b, p_c = (discordance + drop) / 2, (discordance - drop) / 2
    fp32 = min(0.95, 1 - p_c - 0.02)
    return rng.multinomial(n, [fp32 - p_b, p_b, p_c, 1 - fp32 - p_c], size=REPS)


def tango_verdicts(n: int, discordance: float, drop: float, seed: int, limit: float = BUDGET,
                   with_interval: bool = True) -> list[bool | None]:
    """Verdicts of ``max_accuracy_drop(limit, confidence=0.95)`` (Tango, the top-1 default) on simulated runs."""
    budget = parse_marker("max_accuracy_drop", (limit,), {"confidence": 0.95})
    assert budget.method_for(TOP1) == "mcnemar"
    verdicts = []
    for both, b, c, _ in paired_counts(np.random.default_rng(seed), n, discordance, drop):
        value, ref = (both + c) / n, (both + b) / n
        if with_interval:
            lo, hi = tango_interval(int(b), int(c), n, 0.95)
            verdicts.append(budget.judge("sim", TOP1, value, ref, (lo, hi, ""), n, int(b + c)).passed)
        else:
            verdicts.append(budget.judge("sim", TOP1, value, ref).passed)
    return verdicts


@pytest.mark.parametrize(("n", "discordance"), [(100, 0.02), (300, 0.05), (1000, 0.02), (1000, 0.05)])
@pytest.mark.parametrize("drop", [0.02, 0.01], ids=["twice-the-budget", "at-the-budget"])
def test_a_broken_accuracy_budget_is_rarely_pass(n, discordance, drop):
    """True drop 2x the budget (or exactly at it): PASS at most 2.5 % (+ simulation error) with Tango's interval."""
    verdicts = tango_verdicts(n, discordance, drop, seed=n + int(1000 * discordance) + int(10_000 * drop))
    assert share(verdicts, True) <= most(STATED)


@pytest.mark.parametrize(("n", "discordance", "drop"), [(100, 0.02, 0.01), (300, 0.05, 0.02)])
def test_the_bootstrap_rarely_passes_a_broken_budget_either(n, discordance, drop):
    """``method="bootstrap"``: with few differing samples its interval collapses; the guard keeps it from PASS.

    (n=100, 2 % discordance, true drop at the budget passed 21 % before the guard.) 100 runs: it is slow.
    """
    budget = parse_marker("max_accuracy_drop", (BUDGET,), {"confidence": 0.95, "method": "bootstrap"})
    rng = np.random.default_rng(n)
    verdicts = []
    for both, b, c, wrong in paired_counts(rng, n, discordance, drop)[:100]:
        theirs = np.repeat([1.0, 1.0, 0.0, 0.0], [both, b, c, wrong])  # fp32 right
        ours = np.repeat([1.0, 0.0, 1.0, 0.0], [both, b, c, wrong])  # variant right
        order = rng.permutation(n)
        theirs, ours = theirs[order], ours[order]
        lo, hi = paired_bootstrap(n, lambda i, t=theirs, o=ours: TOP1.drop(float(t[i].mean()), float(o[i].mean())))
        verdicts.append(budget.judge("sim", TOP1, float(ours.mean()), float(theirs.mean()), (lo, hi, ""), n,
                                     int(b + c)).passed)
    assert share(verdicts, True) <= most(STATED, 100)


@pytest.mark.parametrize(("n", "discordance"), [(100, 0.15), (300, 0.02), (300, 0.05)])
def test_an_unchanged_model_on_too_few_samples_is_inconclusive_not_fail(n, discordance):
    """True drop 0 against a 0.01 budget, where the data cannot decide: INCONCLUSIVE mostly, FAIL at most 2.5 %."""
    verdicts = tango_verdicts(n, discordance, 0.0, seed=7 + n + int(100 * discordance))
    assert share(verdicts, None) > 0.7
    assert share(verdicts, False) <= most(STATED)


def test_the_accuracy_check_can_fail():
    """Control: deciding on the point drop (no interval) passes a model exactly at the budget about half the time."""
    verdicts = tango_verdicts(1000, 0.05, 0.01, seed=11, with_interval=False)
    assert share(verdicts, True) > most(STATED)
