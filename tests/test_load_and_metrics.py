"""Latency modes, latency under load, top-k/AUC metrics, McNemar, tensor memory, INCONCLUSIVE outcomes."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pytest_tfopt.budgets import parse_marker
from pytest_tfopt.budgets.quality import TANGO_CONTINUITY
from pytest_tfopt.errors import DatasetError, UsageError
from pytest_tfopt.measure import accuracy as acc
from pytest_tfopt.measure import concurrency
from pytest_tfopt.measure.latency import LatencySettings, LatencyStats
from pytest_tfopt.measure.stats import binomial_cdf_half, mcnemar_exact, tango_interval, tango_statistic

Z95 = 1.959963984540054  # the standard normal 0.975 quantile
# every stream stops at max_runs, before the time and count rules could: the counts are exact
EXACT = LatencySettings(warmup_runs=2, min_time_s=0.0, min_runs=10**6, max_runs=25, max_time_s=10**6)


# ---- McNemar and Tango: closed forms and published values -----------------------------
def test_exact_mcnemar_on_known_binomial_tails():
    assert binomial_cdf_half(2, 10) == 56 / 1024  # (1 + 10 + 45) / 2**10
    assert mcnemar_exact(8, 1) == 2 * (1 + 9) / 2**9  # 0.0390625
    assert mcnemar_exact(1, 8) == mcnemar_exact(8, 1)
    assert mcnemar_exact(5, 0) == 2 / 2**5  # 0.0625: five discordant pairs cannot reach 5 %
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # Fagerland, Lydersen & Laake's Cavo et al. (2012) example, 6 vs 16 discordant pairs: P = 0.052479
    assert mcnemar_exact(6, 16) == pytest.approx(0.052479, abs=5e-7)


def test_tango_interval_on_closed_forms_and_a_published_example():
    # at delta = 0 Tango's statistic is McNemar's (b - c) / sqrt(b + c)
    assert tango_statistic(8, 1, 100, 0.0) == pytest.approx(7 / 3)
    # no discordant pairs: the bounds are -+ z^2 / (n + z^2)
    lo, hi = tango_interval(0, 0, 450)
    assert hi == pytest.approx(Z95**2 / (450 + Z95**2), abs=1e-9) and lo == pytest.approx(-hi, abs=1e-9)
    # the bounds are where the statistic crosses +-z
    lo, hi = tango_interval(8, 1, 100)
    assert tango_statistic(8, 1, 100, lo) == pytest.approx(Z95, abs=1e-6)
    assert tango_statistic(8, 1, 100, hi) == pytest.approx(-Z95, abs=1e-6)
    assert lo < 7 / 100 < hi
    # Cavo et al. (2012): n12 = 6, n21 = 16, N = 161 -> -0.0621 (95% CI -0.1240 to -0.0054) as published
    lo, hi = tango_interval(6, 16, 161)
    assert (round(lo, 4), round(hi, 4)) == (-0.1240, -0.0054)
    # every pair discordant against the variant: the upper bound is 1
    assert tango_interval(100, 0, 100)[1] == 1.0
    with pytest.raises(ValueError):
        tango_interval(3, 3, 5)


# ---- metrics: top-k and AUC against hand-computed values --------------------------------
def test_top_k_on_a_hand_example_and_ties_like_argmax():
    y = np.array([0, 1, 2, 1])
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.4, 0.35, 0.25]])
    assert acc.resolve("top1")(y, p) == 0.5
    assert acc.resolve("top2")(y, p) == 1.0
    assert acc.resolve("top5") is acc.resolve("top5")  # one object per k: results memoize by name
    tied = np.array([[0.5, 0.5, 0.0]])
    for label, expected in ((0, True), (1, False)):  # argmax picks class 0 of a tie
        assert acc.top_k_correct(np.array([label]), tied, 1)[0] == expected
    assert acc.top_k_correct(np.array([1]), tied, 2)[0]
    with pytest.raises(DatasetError, match="top3 on a model with 3 classes is always 1"):
        acc.resolve("top3")(y, p)


def test_auc_equals_the_pair_count():
    positive = np.array([1, 1, 0, 0, 0], bool)
    score = np.array([0.8, 0.4, 0.5, 0.1, 0.4])
    # pairs (positive, negative): 0.8 beats all 3; 0.4 loses to 0.5, beats 0.1, ties 0.4 -> (3 + 1 + 0.5) / 6
    assert acc.binary_auc(positive, score) == pytest.approx(4.5 / 6)
    assert acc.auc(positive.astype(int), score) == pytest.approx(0.75)
    assert acc.auc(positive.astype(int), np.stack([1 - score, score], axis=1)) == pytest.approx(0.75)
    # one-vs-rest macro over the same pair counts, per class
    y = np.array([0, 1, 2, 1])
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.4, 0.35, 0.25]])
    per_class = [
        3 / 3,  # class 0: 0.5 beats 0.1, 0.3, 0.4
        2 / 4,  # class 1: 0.2 loses to 0.3, 0.3; 0.35 beats both
        2 / 3,  # class 2: 0.4 beats 0.2 and 0.25, loses to 0.7
    ]
    assert acc.auc(y, p) == pytest.approx(np.mean(per_class))
    with pytest.raises(DatasetError, match="AUC needs both classes"):
        acc.binary_auc(np.ones(3, bool), np.arange(3.0))


def test_auc_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + np.eye(4)[y]
    probs = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)  # rounding makes ties
    assert acc.auc(y, probs) == pytest.approx(metrics.roc_auc_score(y, probs / probs.sum(1, keepdims=True),
                                                                     multi_class="ovr", average="macro"), rel=1e-3)
    assert acc.auc(y == 1, probs[:, 1]) == pytest.approx(metrics.roc_auc_score(y == 1, probs[:, 1]))


def test_metric_resolution_and_directions():
    def error_rate(y_true, y_pred):
        return float(np.mean(y_pred.argmax(1) != y_true))

    m = acc.resolve(error_rate, higher_is_better=False)
    assert m.drop(0.1, 0.15) == pytest.approx(0.05)  # lower is better: going up is worse
    assert acc.resolve(error_rate).higher_is_better is True
    assert acc.resolve("mae").higher_is_better is False
    with pytest.raises(UsageError, match="unknown metric 'top0': use one of top1, accuracy, top5 .any top<k>., auc, mae, rmse"):
        acc.resolve("top0")
    with pytest.raises(UsageError, match="'mae' is lower-is-better"):
        acc.resolve("mae", higher_is_better=True)


# ---- marker arguments: one-line usage errors --------------------------------------------
@pytest.mark.parametrize(("name", "args", "kwargs", "message"), [
    ("max_latency_ms", (5.0,), {"concurrency": 0}, "concurrency=0) must be a whole number of streams >= 1"),
    ("max_latency_ms", (5.0,), {"concurrency": 2.5}, "concurrency=2.5) must be a whole number"),
    ("max_latency_ms", (5.0,), {"mode": "x"}, "mode='x') must be one of 'invoke', 'end_to_end'"),
    ("max_latency_ms", (5.0,), {"preprocess": lambda x: x}, "timed only end to end: add mode=\"end_to_end\""),
    ("max_accuracy_drop", (0.01,), {"metric": "top0"}, "unknown metric 'top0': use one of top1, accuracy, top5"),
    ("max_accuracy_drop", (0.01,), {"metric": "f1"}, "unknown metric 'f1'"),
    ("max_accuracy_drop", (0.01,), {"top_k": 0}, "top_k=0) must be a whole number >= 1"),
    ("max_accuracy_drop", (0.01,), {"top_k": 5, "metric": "top1"}, "give metric=... or top_k=..., not both"),
    ("max_accuracy_drop", (0.01,), {"method": "wilson"}, "method='wilson'): use one of 'bootstrap', 'mcnemar'"),
    ("max_accuracy_drop", (0.01,), {"method": "mcnemar", "metric": "mae"}, "needs a metric that scores each sample"),
    ("max_accuracy_drop", (0.01,), {"method": "mcnemar", "relative": True}, "bounds the absolute drop"),
    ("max_accuracy_drop", (0.01,), {"higher_is_better": "yes"}, "higher_is_better=...) must be True or False"),
])
def test_bad_new_arguments_are_one_line_usage_errors(name, args, kwargs, message):
    with pytest.raises(UsageError) as info:
        parse_marker(name, args, kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_new_arguments_parse():
    budget = parse_marker("max_latency_ms", (2.0,), {"percentile": 95, "mode": "end_to_end", "concurrency": 4})
    assert (budget.mode, budget.concurrency, budget.percentile) == ("end_to_end", 4, 95)
    assert parse_marker("max_accuracy_drop", (0.01,), {"top_k": 5}).metric == "top5"
    budget = parse_marker("max_accuracy_drop", (0.01,), {"method": "mcnemar"})
    assert (budget.method, budget.confidence) == ("mcnemar", 0.95)  # a method implies a 95 % interval


# ---- latency under concurrency: closed-loop streams, on a fake clock ------------------------------
class FakeClock:
    """A fake :class:`~pytest_tfopt.measure.concurrency.Clock`: virtual ns, one timeline per thread.

    Only ``sleep`` advances a thread's time, so every stream runs as if alone on its own core (a
    runtime that releases the GIL); what a measurement reports follows from the runners' seeded
    service times, not from how the threads were scheduled.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def perf_counter_ns(self) -> int:
        return getattr(self._local, "now", 0)

    def sleep(self, secs: float) -> None:
        self._local.now = self.perf_counter_ns() + round(secs * 1e9)
        time.sleep(0)  # let the other threads run


class FakeRunner:
    """A runner whose every request takes a seeded ``low``-``high`` ms of ``clock``'s time."""

    def __init__(self, clock: FakeClock, seed: int, low: float = 1, high: float = 3) -> None:
        self.clock, self.rng, self.low_ns, self.high_ns = clock, np.random.default_rng(seed), low * 1e6, high * 1e6
        self.durations: list[int] = []  # ns, one per call (warm-up included), in order

    def _serve(self) -> None:
        ns = int(self.rng.integers(self.low_ns, self.high_ns))
        self.durations.append(ns)
        self.clock.sleep(ns / 1e9)

    def prepare(self, x):
        return self._serve

    def predict(self, x, batch_size=None):
        self._serve()
        return np.zeros((len(x), 1), np.float32)


def back_to_back(runner: FakeRunner, warmup: int) -> list[tuple[int, int]]:
    """(start, end) ns of the timed requests of a closed-loop stream: each starts when the last one ended."""
    ends = np.cumsum([0, *runner.durations]).tolist()
    return [(ends[k], ends[k + 1]) for k in range(warmup, len(runner.durations))]


def assert_spans(stats, spans: list[tuple[int, int]]) -> None:
    """``stats`` summarize exactly these requests (start, end ns), whatever their order."""
    done = sorted(spans, key=lambda span: span[1])
    assert stats.requests == len(done)
    assert stats.latencies_ms == tuple((t1 - t0) / 1e6 for t0, t1 in done)
    assert stats.latency == LatencyStats.from_ns([t1 - t0 for t0, t1 in done], stats.batch_size)
    assert stats.wall_s == (done[-1][1] - min(t0 for t0, _ in done)) / 1e9
    assert stats.throughput == stats.requests * stats.batch_size / stats.wall_s


def test_closed_loop_streams_overlap_and_every_request_counts():
    x = np.zeros((2, 3), np.float32)
    single = FakeRunner(FakeClock(), seed=0)
    one = concurrency.measure([single], x, settings=EXACT, clock=single.clock)
    clock = FakeClock()
    runners = [FakeRunner(clock, seed=i) for i in range(4)]
    four = concurrency.measure(runners, x, settings=EXACT, threads=1, clock=clock)
    assert four.concurrency == 4 and four.threads_per_stream == 1 and four.total_threads == 4
    assert four.batch_size == 2 and four.mode == "invoke" and four.rate is None
    assert four.per_stream == (EXACT.max_runs,) * 4
    assert all(len(r.durations) == EXACT.warmup_runs + EXACT.max_runs for r in runners)  # warm-up is not timed
    assert_spans(four, [span for r in runners for span in back_to_back(r, EXACT.warmup_runs)])
    assert_spans(one, back_to_back(single, EXACT.warmup_runs))
    # four streams overlap: the wall time is about one stream's, so nearly four times the throughput
    assert four.throughput > 3.5 * one.throughput
    assert "4 streams x 1 thread on" in four.describe() and "samples/s" in four.describe()
    runners = [FakeRunner(clock, seed=i) for i in (7, 8)]
    e2e = concurrency.measure(runners, x, mode="end_to_end", settings=EXACT, clock=clock)
    assert e2e.mode == "end_to_end"
    assert_spans(e2e, [span for r in runners for span in back_to_back(r, EXACT.warmup_runs)])


def test_closed_loop_stops_once_min_time_and_min_runs_are_met():
    clock = FakeClock()
    settings = LatencySettings(warmup_runs=1, min_time_s=0.05, min_runs=30, max_runs=10**6, max_time_s=10**6)
    stats = concurrency.measure([FakeRunner(clock, seed=i) for i in range(2)], np.zeros((1, 3)), settings=settings,
                                clock=clock)
    assert clock.perf_counter_ns() >= 50_000_000  # the caller's thread waited min_time_s on the clock
    assert stats.requests == sum(stats.per_stream) >= 30


@pytest.mark.parametrize("fails_at", [0, 3], ids=["in-warm-up", "while-timed"])
@pytest.mark.parametrize("rate", [None, 100.0], ids=["closed-loop", "open-loop"])
def test_load_threads_split_and_errors_surface(rate, fails_at):
    assert concurrency.threads_per_stream(4, 2) == 2 and concurrency.threads_per_stream(2, 4) == 1
    clock = FakeClock()

    class Broken(FakeRunner):
        def prepare(self, x):
            calls = iter(range(fails_at))

            def invoke():
                if next(calls, None) is None:
                    raise RuntimeError("runtime fell over")

            return invoke

    runners, x = [Broken(clock, seed=0), FakeRunner(clock, seed=1)], np.zeros((1, 3))
    with pytest.raises(RuntimeError, match="runtime fell over"):
        if rate is None:
            concurrency.measure(runners, x, settings=EXACT, clock=clock)
        else:
            concurrency.measure_open_loop(runners, x, rate, settings=EXACT, clock=clock)
    with pytest.raises(ValueError, match=r"measure\(\) needs at least one runner \(one per stream\)"):
        concurrency.measure([], x)


# ---- core-level budgets on the shipped model, straddling the measured values ------------
def test_latency_modes_are_memoized_apart_and_recorded(bench):
    model = bench.runnable("int8")
    invoke = model.latency()
    e2e = model.latency(mode="end_to_end")
    assert e2e is not invoke and model.latency(mode="end_to_end") is e2e
    assert {"latency_b1", "latency_b1_e2e"} <= set(model.measurements)
    # end to end adds the input copy/quantization and the output read/dequantization
    assert e2e.p50_ms > invoke.p50_ms
    calls = []
    pre = model.latency(mode="end_to_end", preprocess=lambda x: calls.append(1) or x * 1.0)
    assert pre is not e2e and calls
    with pytest.raises(UsageError, match="latency mode 'x'"):
        model.latency(mode="x")


def _straddle(budget_for, measured):
    """Verdicts of a budget well above and well below ``measured``."""
    return budget_for(measured * 20 + 1), budget_for(measured / 20)


def test_end_to_end_latency_budget_passes_and_fails(bench):
    model, reference = bench.runnable("int8"), bench.reference()
    p95 = model.latency(mode="end_to_end").p95_ms
    holds, broken = _straddle(lambda ms: parse_marker("max_latency_ms", (ms,), {"percentile": 95, "mode": "end_to_end"})
                              .check(model, reference), p95)
    assert holds.passed is True and broken.passed is False
    assert "max_latency_ms(" in broken.message and "mode='end_to_end') broken: int8 on tflite: p95 " in broken.message
    assert broken.detail == "end_to_end"


def test_latency_under_load_passes_fails_and_reports_throughput(bench):
    model, reference = bench.runnable("int8"), bench.reference()
    stats = model.under_load(2)
    assert stats.concurrency == 2 and stats.threads_per_stream >= 1 and stats.throughput > 0
    assert model.under_load(2) is stats and model.load(2) is stats and "load_c2_b1" in model.measurements
    holds, broken = _straddle(lambda ms: parse_marker("max_latency_ms", (ms,), {"percentile": 95, "concurrency": 2})
                              .check(model, reference), stats.latency.p95_ms)
    assert holds.passed is True and broken.passed is False
    assert "concurrency=2) broken: int8 on tflite: p95 " in broken.message
    assert "under load: 2 streams x " in broken.message and "samples/s" in broken.message
    from pytest_tfopt.results import result_row

    row = result_row("t", model, reference, [broken], "failed")
    assert row["load_c2_b1_concurrency"] == 2 and row["load_c2_b1_throughput"] == stats.throughput
    assert row["load_c2_b1_requests"] == stats.requests and row["verdicts"][0]["detail"] == "concurrency=2"


def test_top_k_and_auc_budgets_pass_and_fail(bench):
    model, reference = bench.runnable("int8"), bench.reference()
    top5 = acc.resolve("top5")
    drop = top5.drop(reference.evaluate(metric="top5"), model.evaluate(metric="top5"))
    assert model.evaluate(metric="top5") >= model.evaluate(metric="top1")
    holds = parse_marker("max_accuracy_drop", (drop + 0.01,), {"metric": "top5"}).check(model, reference)
    assert holds.passed is True and f"top5 {model.evaluate(metric='top5'):.4f}" in holds.message
    if drop > 0:  # int8 loses top-5 samples on the shipped data: a budget below the drop breaks
        assert parse_marker("max_accuracy_drop", (drop / 2,), {"top_k": 5}).check(model, reference).passed is False
    auc_drop = acc.resolve("auc").drop(reference.evaluate(metric="auc"), model.evaluate(metric="auc"))
    assert parse_marker("max_accuracy_drop", (abs(auc_drop) + 0.01,), {"metric": "auc"}).check(model, reference).passed
    if auc_drop > 0:  # int8 ranks a little worse than fp32 on the shipped data
        assert parse_marker("max_accuracy_drop", (auc_drop / 2,), {"metric": "auc"}).check(model, reference).passed is False


def test_mcnemar_budget_uses_the_tango_interval(bench):
    model, reference = bench.runnable("int8"), bench.reference()
    ours, theirs = model.correct(), reference.correct()
    b, c, n = int(np.sum(theirs & ~ours)), int(np.sum(~theirs & ours)), len(ours)
    lo, hi = tango_interval(b, c, n, 0.95, TANGO_CONTINUITY)
    holds = parse_marker("max_accuracy_drop", (hi + 0.001,), {"method": "mcnemar"}).check(model, reference)
    straddled = parse_marker("max_accuracy_drop", (hi - 0.001,), {"confidence": 0.95, "method": "mcnemar"}).check(
        model, reference)
    below = max(lo - 0.001, 0.0)
    broken = parse_marker("max_accuracy_drop", (below,), {"confidence": 0.95}).check(model, reference)
    assert holds.passed is True and straddled.passed is None
    assert broken.passed is (False if below < lo else None)  # FAIL only when the whole interval is beyond
    assert f"[{lo:.4f}, {hi:.4f}] at 95% (Tango score interval, continuity-corrected; {b} lost vs {c} gained, exact McNemar p=" in straddled.message
    assert straddled.detail == "mcnemar" and broken.detail == "mcnemar"  # Tango is the default for top-1
    assert math.isclose(straddled.measured, model.evaluate())


def test_memory_budget_reports_interpreter_tensors(bench):
    model, reference = bench.runnable("int8"), bench.reference()
    info = model.runner.memory_info()
    assert info["activation_bytes"] > 0 and info["weight_bytes"] > 0
    stats = model.memory()
    assert stats.activations_mb is not None and 0 < stats.activations_mb < stats.peak_mb + 1
    verdict = parse_marker("max_memory_mb", (stats.peak_mb + 100,), {}).check(model, reference)
    assert verdict.passed and f"interpreter tensors: activations {stats.activations_mb:.3f} MiB (arena upper bound)" in verdict.message
    assert parse_marker("max_memory_mb", (0.0001,), {}).check(model, reference).passed is False
    from pytest_tfopt.results import result_row

    row = result_row("t", model, reference, [verdict], "passed")
    assert row["memory_activations_mb"] == stats.activations_mb and row["memory_weights_mb"] == stats.weights_mb


# ---- the plugin: markers end to end -----------------------------------------------------
def test_new_marker_arguments_pass_and_fail(suite):
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(1000, percentile=95, mode="end_to_end")
def test_e2e_holds(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(1000, percentile=95, concurrency=2)
def test_load_holds(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.05, metric="top5")
def test_top5_holds(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.05, confidence=0.95, method="mcnemar")
def test_mcnemar_holds(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(0.00001, percentile=95, mode="end_to_end")
def test_e2e_broken(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(0.00001, percentile=95, concurrency=2)
def test_load_broken(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.0, confidence=0.95, method="mcnemar")
def test_mcnemar_budget_zero(optimized_model):
    pass
""",
        "--strict-markers",
    )
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(["*2 failed, 4 passed, 1 inconclusive*"])
    result.stdout.fnmatch_lines([
        "max_latency_ms(1e-05, percentile=95, mode='end_to_end') broken: int8 on tflite: p95 * ms [[]*[]] "
        "(fp32 * ms) > budget 1e-05 ms (two-sided 95 % interval: each end a one-sided 97.5 % bound)",
    ])
    result.stdout.fnmatch_lines([
        "max_latency_ms(1e-05, percentile=95, concurrency=2) broken: int8 on tflite: p95 * ms [[]*[]] under load: "
        "2 streams x 1 thread on * cores*, * requests in * s, * samples/s (fp32 * ms, * samples/s) > budget 1e-05 ms*",
    ])
    result.stdout.fnmatch_lines([  # a budget of 0 is never shown to hold; one lost sample does not break it either
        "*max_accuracy_drop(0, confidence=0.95, method='mcnemar') inconclusive: int8 on tflite: top1 0.9711 vs fp32 "
        "0.9733, drop 0.0022 [[]*[]] at 95% (Tango score interval, continuity-corrected; 1 lost vs 0 gained, exact McNemar p=1) (two-sided "
        "95% interval, upper end a one-sided 97.5% bound) ~ budget 0; needs about * evaluation samples *",
    ])
    result.stdout.fnmatch_lines([  # the summary names how each budget was measured
        "*test_e2e_holds[[]int8-tflite[]]*max_latency_ms[[]end_to_end[]] PASS",
        "*test_load_holds[[]int8-tflite[]]*max_latency_ms[[]concurrency=2[]] PASS",
        "*test_mcnemar_holds[[]int8-tflite[]]*max_accuracy_drop[[]mcnemar[]] PASS",
        "*test_top5_holds[[]int8-tflite[]]*max_accuracy_drop[[]top5[]] PASS",
    ])


@pytest.mark.parametrize(("marker", "message"), [
    ("max_latency_ms(5.0, concurrency=0)", "concurrency=0) must be a whole number of streams >= 1"),
    ("max_latency_ms(5.0, mode='x')", "mode='x') must be one of 'invoke', 'end_to_end'"),
    ("max_accuracy_drop(0.01, metric='top_five')", "unknown metric 'top_five': use one of top1, accuracy, top5*"),
])
def test_bad_new_marker_arguments_fail_collection(suite, marker, message):
    result = suite(
        f"""
import pytest

@pytest.mark.{marker}
def test_it(optimized_model):
    pass
"""
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*test_suite.py::test_it*{message}*"])


FAKE_CLOCK = """
import numpy as np
import pytest

import pytest_tfopt.measure.latency as latency


class FakeTime:
    '''perf_counter_ns that advances 1-3 ms (seeded uniform) per reading: latencies straddle 2 ms.'''

    def __init__(self):
        self.now = 0
        self.rng = np.random.default_rng(7)

    def perf_counter_ns(self):
        self.now += int(self.rng.uniform(1e6, 3e6))
        return self.now


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch):
    monkeypatch.setattr(latency, "time", FakeTime())
"""


def test_inconclusive_outcome_is_shown_with_its_reason_and_does_not_fail(suite, pytester):
    """A budget inside the measurement's 95 % interval is INCONCLUSIVE: reported, counted apart, exit code 0."""
    pytester.makeconftest(FAKE_CLOCK)  # deterministic timings: the p50's interval contains 2.0 ms
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(2.0)
def test_on_the_edge(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(100)
def test_clear(optimized_model):
    pass
""",
        "-v",
    )
    assert result.ret == pytest.ExitCode.OK  # inconclusive is not a failure
    assert result.parseoutcomes() == {"passed": 1, "inconclusive": 1}
    result.stdout.fnmatch_lines(["*test_suite.py::test_on_the_edge[[]int8-tflite[]] INCONCLUSIVE*"])
    result.stdout.fnmatch_lines(["*test_on_the_edge[[]int8-tflite[]]*max_latency_ms INCONCLUSIVE"])
    result.stdout.fnmatch_lines([
        "INCONCLUSIVE test_suite.py::test_on_the_edge[[]int8-tflite[]]: max_latency_ms(2, percentile=50) "
        "inconclusive: int8 on tflite: p50 *.* ms [[]1.*, 2.*[]] (fp32 *.* ms) ~ budget 2 ms (two-sided 95 % interval*",
    ])
    result.stdout.fnmatch_lines(["*1 passed, 1 inconclusive*"])


# ---- open loop: Poisson arrivals at a rate (MLPerf Server-like), on a fake clock ---------------------
OPEN = LatencySettings(warmup_runs=1, min_time_s=0.5, min_runs=50, max_time_s=5.0)


def poisson_arrivals(rate: float, s: LatencySettings, seed: int = 0) -> list[int]:
    """The arrival times (ns after the start) the open loop offers: seeded exponential gaps, until its stop rule."""
    gaps, arrivals, arrival = np.random.default_rng(seed), [], 0
    while True:
        arrival += int(gaps.exponential(1e9 / rate))
        n = len(arrivals)
        if arrival >= int(s.max_time_s * 1e9) or n >= s.max_runs or (arrival >= int(s.min_time_s * 1e9)
                                                                      and n >= s.min_runs):
            return arrivals
        arrivals.append(arrival)


def first_come_first_served(arrivals: list[int], runner: FakeRunner, warmup: int) -> list[tuple[int, int]]:
    """(arrival, end) ns of each request one worker serves in turn, starting once it is warm."""
    free_at, spans = sum(runner.durations[:warmup]), []
    for arrival, service in zip(arrivals, runner.durations[warmup:], strict=True):
        free_at = max(free_at, arrival) + service
        spans.append((arrival, free_at))
    return spans


def test_open_loop_counts_queueing_from_the_scheduled_arrival():
    """Service 3-5 ms: one worker keeps up with 50 requests/s, but at 400/s its queue, and so the latency, grows."""
    x = np.zeros((1, 3), np.float32)
    served = {}
    for rate in (50, 400):
        clock = FakeClock()
        runner = FakeRunner(clock, seed=rate, low=3, high=5)
        stats = served[rate] = concurrency.measure_open_loop([runner], x, rate=rate, settings=OPEN, clock=clock)
        arrivals = poisson_arrivals(rate, OPEN)
        assert stats.rate == rate and stats.concurrency == 1 and len(runner.durations) == OPEN.warmup_runs + len(arrivals)
        assert_spans(stats, first_come_first_served(arrivals, runner, OPEN.warmup_runs))
    light, heavy = served[50], served[400]
    assert light.latency.p50_ms < 5  # rarely a request waits at 20 % load
    assert heavy.latency.p95_ms > 10 * light.latency.p95_ms  # overload: latency counted from the scheduled arrival
    clock = FakeClock()
    runners = [FakeRunner(clock, seed=i, low=3, high=5) for i in range(4)]
    four = concurrency.measure_open_loop(runners, x, rate=400, settings=OPEN, clock=clock)
    assert four.requests == sum(four.per_stream) == len(poisson_arrivals(400, OPEN)) == heavy.requests
    assert sum(map(len, (r.durations for r in runners))) == 4 * OPEN.warmup_runs + four.requests
    assert min(four.latencies_ms) >= 3  # never shorter than a request's service time
    assert "4 workers serving Poisson arrivals at 400/s" in four.describe()


def test_open_loop_marker_passes_fails_and_rejects_a_bad_rate(suite):
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(1000, percentile=95, rate=200)
def test_served(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(0.00001, percentile=95, concurrency=2, rate=200)
def test_too_slow(optimized_model):
    pass
""",
        "--tfopt-report=rows.json",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "max_latency_ms(1e-05, percentile=95, concurrency=2, rate=200) broken: int8 on tflite: p95 * ms [[]*[]] "
        "under load: 2 workers serving Poisson arrivals at 200/s, x 1 thread on * cores*",
    ])
    rows = {r["test"].split("::")[-1].split("[")[0]: r for r in json.loads(Path("rows.json").read_text())["rows"]}
    assert rows["test_served"]["load_c1_b1_r200_rate"] == 200 and rows["test_served"]["load_c1_b1_r200_p95_ms"] > 0
    with pytest.raises(UsageError, match=r"rate=\.\.\.\) in requests per second must be > 0, got 0"):
        parse_marker("max_latency_ms", (5.0,), {"rate": 0})
