"""Distribution-free latency percentile bounds, adaptive timing, the inconclusive policy, fast McNemar."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_load_and_metrics import FAKE_CLOCK

from pytest_tfopt.budgets import parse_marker
from pytest_tfopt.measure.latency import LatencyStats, interleaved
from pytest_tfopt.measure.stats import binomial_cdf_half, mcnemar_exact, quantile_ranks, samples_for_upper_bound


def test_order_statistic_ranks_match_the_binomial_tables():
    assert quantile_ranks(100, 0.5) == (40, 61)  # the textbook 95 % ranks of a median from 100 samples
    assert samples_for_upper_bound(0.95) == 72 and samples_for_upper_bound(0.99) == 368
    assert quantile_ranks(50, 0.95)[1] is None and quantile_ranks(72, 0.95)[1] == 72
    assert quantile_ranks(367, 0.99)[1] is None and quantile_ranks(368, 0.99)[1] == 368


def test_too_few_runs_never_bound_a_high_percentile():
    values = np.random.default_rng(1).permutation([1_000_000 + 1000 * i for i in range(50)])  # no serial pattern
    stats = LatencyStats.from_ns(list(values), 1)
    assert stats.n_effective > 40
    assert stats.interval(95)[1] == math.inf and stats.runs_needed(95) >= 72
    assert stats.interval(50)[1] < math.inf and stats.runs_needed(50) == 0


def test_autocorrelated_runs_are_worth_fewer_independent_ones():
    drift = LatencyStats.from_ns([1_000_000 + 1000 * i for i in range(400)], 1)  # a steady drift: one long trend
    assert drift.n_effective < 10 and drift.runs_needed(50) > 400
    rng = np.random.default_rng(2)
    log = np.zeros(400)
    for i in range(1, 400):  # AR(1), phi 0.8, on the log scale: bursts of slow runs
        log[i] = 0.8 * log[i - 1] + rng.normal(0, 0.6)
    bursty = LatencyStats.from_ns(list((np.exp(0.3 * log) * 1e6).astype(np.int64)), 1)
    iid = LatencyStats.from_ns(list((rng.lognormal(0, 0.3, 400) * 1e6).astype(np.int64)), 1)
    assert bursty.n_effective < 0.3 * 400 < 0.8 * 400 < iid.n_effective
    lo_b, hi_b = bursty.interval(50)
    lo_i, hi_i = iid.interval(50)
    assert (hi_b - lo_b) / bursty.p50_ms > (hi_i - lo_i) / iid.p50_ms  # wider where the runs carry less


def test_autocorrelated_p95_bounds_still_cover():
    """AR(1) timings through the real code: the p95 upper bound misses the true p95 at most ~2.5 % (+ error)."""
    rng = np.random.default_rng(3)
    phi, sigma, n, runs = 0.8, 0.5, 200, 300
    true_p95 = math.exp(sigma * 1.6448536269514722)
    misses = 0
    for _ in range(runs):
        z = np.empty(n)
        z[0] = rng.normal()
        for i in range(1, n):
            z[i] = phi * z[i - 1] + math.sqrt(1 - phi * phi) * rng.normal()
        if LatencyStats.from_ns(list((np.exp(sigma * z) * 1e6).astype(np.int64)), 1).interval(95)[1] < true_p95:
            misses += 1
    assert misses / runs <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / runs)


def test_percentile_bounds_cover_at_their_level_on_seeded_lognormal_samples():
    """Simulation through the real code: the p95 upper bound is below the true p95 at most ~2.5 % of the time."""
    rng = np.random.default_rng(0)
    sigma, true_p95 = 0.5, math.exp(0.5 * 1.6448536269514722)
    misses = 0
    runs = 400
    for _ in range(runs):
        ns = (rng.lognormal(0.0, sigma, 100) * 1e6).astype(np.int64)
        if LatencyStats.from_ns(list(ns), 1).interval(95)[1] < true_p95:
            misses += 1
    assert misses / runs <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / runs)


def test_mcnemar_is_exact_and_fast():
    assert binomial_cdf_half(3, 10) == pytest.approx(sum(math.comb(10, i) for i in range(4)) / 2**10, rel=1e-12)
    assert mcnemar_exact(1, 0) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(2, 12) == pytest.approx(2 * sum(math.comb(14, i) for i in range(3)) / 2**14, rel=1e-12)
    assert mcnemar_exact(9_000, 11_000) < 1e-40  # 20,000 discordant pairs: no big-integer sums


def test_interleaved_rounds_alternate_which_side_goes_first():
    order = []
    interleaved(lambda: order.append("A"), lambda: order.append("B"), rounds=4, round_time_s=0.0, min_runs=1)
    timed = order[10:]  # after 5 warm-up calls of each
    assert timed == ["A", "B", "B", "A", "A", "B", "B", "A"]


@pytest.mark.parametrize(("policy", "outcome"), [("warn", "inconclusive"), ("fail", "failed"), ("pass", "passed")])
def test_the_inconclusive_policy(suite, pytester, policy, outcome):
    pytester.makeconftest(FAKE_CLOCK)  # deterministic timings: the p50's interval contains 2.0 ms
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(2.0)
def test_on_the_edge(optimized_model):
    pass
""",
        f"--tfopt-inconclusive={policy}",
    )
    assert result.parseoutcomes().get(outcome) == 1, result.stdout.str()
    if policy == "fail":
        result.stdout.fnmatch_lines(["*max_latency_ms(2, percentile=50) inconclusive*(--tfopt-inconclusive=fail)*"])


def test_an_undecided_latency_is_timed_again_with_enough_runs(bench):
    """check() re-times an undecided percentile with enough runs to bound it (p99: 368) before it decides."""
    from pytest_tfopt.budgets import MaxLatency
    from pytest_tfopt.measure.latency import LatencySettings

    model, reference = bench.runnable("int8"), bench.reference()
    few = model.latency(settings=LatencySettings(min_runs=20, min_time_s=0.0, max_time_s=5.0))
    assert few.n < 368 and few.interval(99)[1] == math.inf
    verdict = MaxLatency(1000.0, percentile=99).check(model, reference)  # any model is under a second
    assert verdict.passed is True  # decided after timing again: an unbounded p99 is never a PASS by itself
    assert model.measurements["latency_b1"].n >= 368


@pytest.mark.parametrize(("args", "cap"), [((), 20.0), (("--tfopt-latency-max-s=3",), 3.0),
                                           (("-o", "tfopt_latency_max_s=7.5"), 7.5)])
def test_the_latency_time_cap_reaches_the_models(suite, args, cap):
    result = suite(f"""
import pytest

@pytest.mark.tfopt_variants("int8")
def test_it(optimized_model):
    assert optimized_model.latency_settings.max_time_s == {cap}
""", *args)
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("value", ["0.1", "inf", "soon"])
def test_a_bad_latency_time_cap_is_a_usage_error(suite, value):
    result = suite("def test_it():\n    pass\n", f"--tfopt-latency-max-s={value}" if value != "soon" else "-o",
                   *(["tfopt_latency_max_s=soon"] if value == "soon" else []))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tfopt_latency_max_s*" if value == "soon" else "*--tfopt-latency-max-s*"])


# ---- what would decide an undecided timing verdict --------------------------------------------------------
def test_an_undecided_latency_says_how_many_runs_would_decide():
    from pytest_tfopt.budgets.verdict import deciding_count

    budget = parse_marker("max_latency_ms", (2.0,), {"percentile": 50})
    verdict = budget.judge("int8 on tflite", 2.05, (1.9, 2.2), runs=50)
    assert verdict.passed is None
    assert deciding_count(50, 1.9, 2.2, 2.05, 2.0) == pytest.approx(50 * (0.3 / 0.1) ** 2)
    assert verdict.message.endswith("; needs about 450 timed runs at this spread to decide")
    sits = budget.judge("int8 on tflite", 2.0, (1.9, 2.2), runs=50)
    assert "no number of timed runs decides it" in sits.message
    assert "needs about" not in budget.judge("int8 on tflite", 1.5, (1.4, 1.6), runs=50).message  # decided


def test_an_undecided_speedup_is_timed_again_with_the_rounds_that_would_decide(monkeypatch):
    """The decision logic on a fake measurement: 12 rounds straddle the budget, the rounds asked for decide it."""
    from types import SimpleNamespace

    from pytest_tfopt.budgets import perf
    from pytest_tfopt.measure.latency import LatencySettings, Speedup

    asked = []

    def fake_interleaved(variant, reference, rounds=12):
        asked.append(rounds)
        half = 0.3 * (12 / rounds) ** 0.5  # the interval narrows as one over the square root of the rounds
        return Speedup(1.2, 1.2 - half, 1.2 + half, rounds, 1.0, 1.0 / 1.2)

    monkeypatch.setattr(perf, "interleaved", fake_interleaved)
    model = SimpleNamespace(variant="int8", backend="tflite", measurements={}, runner=SimpleNamespace(prepare=lambda x: x),
                            latency_settings=LatencySettings(max_time_s=20), _latency_input=lambda b: None)
    reference = SimpleNamespace(variant="fp32", backend="tflite", runner=model.runner)
    verdict = parse_marker("min_speedup", (1.0,), {}).check(model, reference)
    assert asked == [12, 48] and verdict.passed is True  # 4x the rounds (more than the 27 the spread asks for)
    asked.clear()
    capped = SimpleNamespace(**{**vars(model), "latency_settings": LatencySettings(max_time_s=1)})
    undecided = parse_marker("min_speedup", (1.15,), {}).check(capped, reference)
    assert asked == [12] and undecided.passed is None  # the cap (1 s: 10 rounds) allows no more than it had
    assert "interleaved rounds at this spread to decide" in undecided.message
