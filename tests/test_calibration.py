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
from pytest_tfopt.budgets.quality import TANGO_CONTINUITY
from pytest_tfopt.measure import accuracy as acc
from pytest_tfopt.measure.latency import LatencyStats
from pytest_tfopt.measure.stats import effective_samples, jackknife, paired_bootstrap, quantile_ranks, tango_interval

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
            lo, hi = tango_interval(int(b), int(c), n, 0.95, TANGO_CONTINUITY)
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


def exact_tail(n: int, discordance: float, drop: float, continuity: float) -> float:
    """P(FAIL) of a budget placed exactly at the true drop (Tango), summed over every (b, c) with its probability."""
    from scipy.stats import multinomial

    p_b, p_c = (discordance + drop) / 2, (discordance - drop) / 2
    budget = parse_marker("max_accuracy_drop", (drop,), {"confidence": 0.95})
    total = 0.0
    for b in range(0, 40):
        for c in range(0, 40):
            prob = float(multinomial.pmf([b, c, n - b - c], n, [p_b, p_c, 1 - p_b - p_c]))
            lo, hi = tango_interval(b, c, n, 0.95, continuity)
            if budget.judge("sim", TOP1, 0.9, 0.9 + (b - c) / n, (lo, hi, ""), n, b + c).passed is False:
                total += prob
    return total


def test_tango_with_few_discordant_pairs_keeps_its_lower_end_exactly():
    """n=300, 2 % discordance, true drop at the budget: the plain score interval FAILS a holding budget 4.4 % of
    the time (exact); continuity-corrected by half a pair (the budget's default) at most 2.5 %."""
    assert exact_tail(300, 0.02, 0.01, 0.0) > STATED + 0.01  # the control: the plain interval misses
    assert exact_tail(300, 0.02, 0.01, TANGO_CONTINUITY) <= STATED


def test_effective_samples_counts_the_samples_that_carry_the_difference():
    n = 400
    rng = np.random.default_rng(3)
    theirs, ours = np.ones(n), np.ones(n)
    ours[rng.choice(n, 12, replace=False)] = 0.0  # 12 samples lost: a top-1 drop carried by 12 samples
    top1 = jackknife(n, lambda i: TOP1.drop(float(theirs[i].mean()), float(ours[i].mean())))
    assert effective_samples(top1) == pytest.approx(12, abs=0.5)
    errors = np.abs(rng.normal(0, 1, n))
    everywhere = errors + rng.normal(0.05, 0.01, n)  # every output moved a little: the whole data set carries it
    assert effective_samples(jackknife(n, lambda i: float(everywhere[i].mean() - errors[i].mean()))) > 0.5 * n
    few = errors.copy()
    few[:3] += 5.0  # three outliers make the whole difference
    assert effective_samples(jackknife(n, lambda i: float(few[i].mean() - errors[i].mean()))) < 5


def test_the_bootstrap_of_a_continuous_metric_does_not_pass_on_a_handful_of_samples():
    """MAE drop carried by 3 samples of 400: the BCa interval may sit within the budget, the guard says INCONCLUSIVE."""
    n = 400
    y = np.zeros((n, 1))
    fp32 = np.full((n, 1), 0.1)
    variant = fp32.copy()
    variant[:3] += 0.3
    mae = acc.resolve("mae")
    budget = parse_marker("max_accuracy_drop", (0.01,), {"confidence": 0.95})
    found = paired_bootstrap(n, lambda i: mae.drop(mae(y[i], fp32[i]), mae(y[i], variant[i])))
    assert found[1] <= 0.01 and found.effective < 10
    verdict = budget.judge("sim", mae, mae(y, variant), mae(y, fp32), (*found, ""), n, found.effective)
    assert verdict.passed is None and "only about 3 of 400 samples carry the difference" in verdict.message
    spread = fp32 + 0.3 * 3 / n + np.random.default_rng(1).normal(0, 0.001, (n, 1))  # the same drop over every sample
    wide = paired_bootstrap(n, lambda i: mae.drop(mae(y[i], fp32[i]), mae(y[i], spread[i])))
    assert wide.effective > 100
    assert budget.judge("sim", mae, mae(y, spread), mae(y, fp32), (*wide, ""), n, wide.effective).passed is True


def test_bca_moves_the_interval_with_the_skew():
    """The mean of a right-skewed sample: BCa's ends sit to the right of the plain percentile ends (Efron 1987)."""
    x = np.random.default_rng(5).lognormal(0, 1, 60)
    plain = paired_bootstrap(len(x), lambda i: float(x[i].mean()), method="percentile")
    bca = paired_bootstrap(len(x), lambda i: float(x[i].mean()))
    assert bca[0] > plain[0] and bca[1] > plain[1]
