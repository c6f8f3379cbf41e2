"""Distribution-free latency percentile bounds, adaptive timing, the inconclusive policy, fast McNemar."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_load_and_metrics import FAKE_CLOCK

from pytest_tfopt.measure.latency import LatencyStats, interleaved
from pytest_tfopt.measure.stats import binomial_cdf_half, mcnemar_exact, quantile_ranks, samples_for_upper_bound


def test_order_statistic_ranks_match_the_binomial_tables():
    assert quantile_ranks(100, 0.5) == (40, 61)  # the textbook 95 % ranks of a median from 100 samples
    assert samples_for_upper_bound(0.95) == 72 and samples_for_upper_bound(0.99) == 368
    assert quantile_ranks(50, 0.95)[1] is None and quantile_ranks(72, 0.95)[1] == 72
    assert quantile_ranks(367, 0.99)[1] is None and quantile_ranks(368, 0.99)[1] == 368


def test_too_few_runs_never_bound_a_high_percentile():
    stats = LatencyStats.from_ns([1_000_000 + i for i in range(50)], 1)
    assert stats.interval(95)[1] == math.inf and stats.runs_needed(95) == 72
    assert stats.interval(50)[1] < math.inf and stats.runs_needed(50) == 0


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
