"""Statistically honest verdicts: paired confidence intervals, label-free fidelity, the latency noise policy."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_tfopt.measure import fidelity

LOSSY_CONFTEST = """
import numpy as np

from pytest_tfopt.variants import Recipe


def _lossy(source, calibration, params):
    weights = source.model.get_weights()
    rng = np.random.default_rng(0)
    source.model.set_weights([w + rng.normal(0, 0.5 * float(np.std(w)) + 1e-3, w.shape) for w in weights])
    try:
        return source.converter().convert()
    finally:
        source.model.set_weights(weights)


def tfopt_register_variants(registry):
    registry.register(Recipe("lossy", lambda s, c, p: __import__("pytest_tfopt").artifact.Artifact(
        _lossy(s, c, p), {"variant": "lossy"}), "fp32 with noisy weights: a variant that truly loses accuracy"))
"""


def test_accuracy_drop_with_confidence_is_three_way(suite, pytester):
    pytester.makeconftest(LOSSY_CONFTEST)
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.003, confidence=0.95)
def test_interval_straddles(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.003)
def test_point_estimate(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.03, confidence=0.95)
def test_interval_within(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.03, confidence=0.95, method="bootstrap")
def test_bootstrap_on_one_lost_sample(optimized_model):
    pass

@pytest.mark.tfopt_variants("lossy")
@pytest.mark.max_accuracy_drop(0.05, confidence=0.95)
def test_truly_lossy(optimized_model):
    pass
""", "-rA",
    )
    # the point estimate (0.0022) is within 0.003; Tango's 95 % interval straddles it: undecided, not broken
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["max_accuracy_drop(0.05, confidence=0.95) broken: lossy on tflite: top1 * vs fp32 "
                                 "0.9733, drop * (two-sided 95% interval, upper end a one-sided 97.5% bound) > budget "
                                 "0.05"])
    result.stdout.fnmatch_lines([
        "INCONCLUSIVE *test_interval_straddles*: max_accuracy_drop(0.003, confidence=0.95) inconclusive: int8 on "
        "tflite: top1 0.9711 vs fp32 0.9733, drop 0.0022 [[]-0.0*, 0.0*[]] at 95% (Tango score interval, continuity-corrected; 1 lost vs "
        "0 gained, exact McNemar p=1) (two-sided 95% interval, upper end a one-sided 97.5% bound) ~ budget 0.003; "
        "needs about * evaluation samples at this discordance to decide",
    ])
    # one lost sample, none gained: a bootstrap interval over one differing sample is no evidence
    result.stdout.fnmatch_lines(["INCONCLUSIVE *test_bootstrap_on_one_lost_sample*: *only 1 of 450 samples are "
                                 "scored differently from fp32: too few for the bootstrap (30 needed)*"])
    result.stdout.fnmatch_lines(["*1 failed, 2 passed, 2 inconclusive*"])


@pytest.mark.parametrize(("metric", "holds", "broken"), [
    ("top1_agreement", "0.95", "0.9999"),
    ("cosine", "0.99", "0.99999"),
    ("snr_db", "15", "60"),
    ("kl_divergence", "0.05", "0.0001"),
    ("max_abs_error", "0.5", "0.0001"),
])
def test_min_fidelity_passes_and_fails(suite, metric, holds, broken):
    result = suite(
        f"""
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.min_fidelity({holds}, metric="{metric}")
def test_holds(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.min_fidelity({broken}, metric="{metric}")
def test_broken(optimized_model):
    pass
"""
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"min_fidelity({broken}, metric='{metric}') broken: int8 on tflite: {metric} vs fp32 *"])


def test_fidelity_needs_no_labels(pytester, shared_cache, preloaded_runtimes, model_path, data_path):
    with np.load(data_path) as d:
        np.savez(pytester.path / "nolabels.npz", x_train=d["x_train"], x_test=d["x_test"])
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = nolabels.npz\n")
    pytester.makepyfile(
        """
import pytest

@pytest.mark.tfopt_variants("int8", "float16")
@pytest.mark.min_fidelity(0.97)
def test_agrees(optimized_model):
    pass
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--tfopt-cache-dir={shared_cache}", "--tfopt-threads=1")
    result.assert_outcomes(passed=2)


def test_fidelity_metrics_on_known_values():
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    same = ref.copy()
    other = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    assert fidelity.top1_agreement(ref, same) == 1.0 and fidelity.top1_agreement(ref, other) == 0.5
    assert fidelity.kl_divergence(ref, same) == pytest.approx(0.0, abs=1e-9)
    expected_kl = np.mean([np.sum(ref[0] * np.log(ref[0] / other[0])), 0.0])
    assert fidelity.kl_divergence(ref, other) == pytest.approx(expected_kl)
    assert fidelity.snr_db(ref, same) == float("inf")
    assert fidelity.snr_db(ref, other) == pytest.approx(10 * np.log10(np.sum(ref**2) / 0.5))
    assert fidelity.cosine(ref, same) == pytest.approx(1.0)
    assert fidelity.max_abs_error(ref, other) == pytest.approx(0.5)


def test_perf_policy_record_and_off(suite):
    source = """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(0.000001)
@pytest.mark.max_size_kb(40)
def test_fast(optimized_model):
    pass
"""
    suite(source).assert_outcomes(failed=1)
    result = suite(source, "--tfopt-perf=record")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*max_latency_ms RECORDED, max_size_kb PASS*"])
    result = suite(source, "--tfopt-perf=off")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_fast[[]int8-tflite[]]*max_size_kb PASS"])
    assert "max_latency_ms" not in result.stdout.str().split("tfopt summary")[1]


def test_bad_statistics_arguments_are_usage_errors(suite):
    result = suite(
        """
import pytest

@pytest.mark.min_fidelity(0.9, metric="psnr")
def test_it(optimized_model):
    pass
"""
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_it*unknown fidelity metric 'psnr': use one of top1_agreement, kl_divergence, snr_db, cosine, max_abs_error*"])


def test_latency_budget_inside_the_noise_band_is_inconclusive(bench):
    from pytest_tfopt.budgets import MaxLatency

    model, reference = bench.runnable("int8"), bench.reference()
    stats = model.latency()
    # on a quiet machine many timings share one nanosecond value, so a percentile's interval can be a point;
    # take the first percentile whose interval has width and put the budget inside it
    p, (lo, hi) = next((p, stats.interval(p)) for p in (50, 90, 95, 99) if stats.interval(p)[0] < stats.interval(p)[1])
    assert lo <= stats.percentile(p) <= hi
    # the budget sits inside the interval: judged on it as measured, undecided (check() would first time again
    # with more runs, which may decide it: tests/test_latency_bounds.py holds a fake clock for that)
    verdict = MaxLatency((lo + hi) / 2, percentile=p).judge("int8 on tflite", stats.percentile(p), (lo, hi))
    assert verdict.passed is None
    assert "max_latency_ms(" in verdict.message and f") inconclusive: int8 on tflite: p{p} " in verdict.message
    assert MaxLatency(hi * 2, percentile=p).check(model, reference).passed is True
    assert MaxLatency(lo / 2, percentile=p).check(model, reference).passed is False


def test_speedup_and_throughput_pass_fail(suite):
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("fp32")
@pytest.mark.min_speedup(0.5)
def test_not_much_slower_than_itself(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.min_speedup(1000)
def test_absurd_speedup(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.min_throughput(10, batch_size=8)
def test_throughput_holds(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.min_throughput(1e12, batch_size=8)
def test_throughput_broken(optimized_model):
    pass
""",
        "-rA",
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "min_speedup(1000, reference='fp32') broken: int8 on tflite: *x [[]*, *[]] over fp32 (* ms -> * ms, 12 interleaved rounds) < budget 1000x (two-sided 95 % interval: each end a one-sided 97.5 % bound)",
    ])
    result.stdout.fnmatch_lines(["min_throughput(1e+12, batch_size=8) broken: int8 on tflite: * samples/s [[]*[]] (fp32 *) < budget 1e+12 (two-sided 95 % interval: each end a one-sided 97.5 % bound)"])
