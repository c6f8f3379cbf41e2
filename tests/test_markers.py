"""Every budget marker passes when its budget holds and fails, with its message, when broken."""

from __future__ import annotations

import pytest

CASES = [
    # (marker, holds, broken, message fragment of the broken case)
    ("max_accuracy_drop", "0.05", "0.001", "max_accuracy_drop(0.001) broken: int8 on tflite: top1 0.9*vs fp32 0.9*, drop 0.0* > budget 0.001"),
    ("min_accuracy_drop", "0.05", "0.001", "min_accuracy_drop(0.001) broken: int8 on tflite: top1 *"),
    ("max_size_kb", "40", "5", "max_size_kb(5) broken: int8 on tflite: 13.* KB (fp32 3*.* KB) > budget 5 KB"),
    ("min_compression_ratio", "2.0", "10", "min_compression_ratio(10) broken: int8 on tflite: ratio 2.*x (fp32 * B / int8 * B) < budget 10x"),
    ("max_latency_ms", "1000", "0.0001", "max_latency_ms(0.0001, percentile=50) broken: int8 on tflite: p50 * ms [[]*, *[]] (fp32 * ms) > budget 0.0001 ms (two-sided 95 % interval: each end a one-sided 97.5 % bound)"),
]


@pytest.mark.parametrize(("marker", "holds", "broken", "message"), CASES, ids=[c[0] for c in CASES])
def test_marker_passes_and_fails(suite, marker, holds, broken, message):
    result = suite(
        f"""
        import pytest

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.{marker}({holds})
        def test_holds(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.{marker}({broken})
        def test_broken(optimized_model):
            pass
        """,
        "--strict-markers",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_broken[[]int8-tflite[]]*", f"*{message}*"])
    result.stdout.fnmatch_lines(["*tfopt summary*", f"*test_holds[[]int8-tflite[]]*{marker} PASS*"])


def test_accuracy_drop_uses_user_metric_and_direction(suite):
    result = suite(
        """
        import numpy as np
        import pytest
        from pytest_tfopt import metric

        @metric(higher_is_better=False)
        def error_rate(y_true, y_pred):
            return float(np.mean(y_pred.argmax(1) != y_true))

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_accuracy_drop(0.001, metric=error_rate)
        def test_broken(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_accuracy_drop(0.02, metric=error_rate)
        def test_holds(optimized_model):
            pass
        """
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*max_accuracy_drop(0.001) broken: int8 on tflite: error_rate 0.0* vs fp32 0.0*"])


def test_bad_marker_argument_is_a_usage_error_naming_the_test(suite):
    result = suite(
        """
        import pytest

        @pytest.mark.max_latency_ms(2.0, percentile=42)
        def test_typo(optimized_model):
            pass
        """
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_suite.py::test_typo*percentile=42*must be one of 50, 90, 95, 99*"])


def test_max_output_diff_against_a_reference_backend(suite):
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("float16")
@pytest.mark.max_output_diff(atol=0.01, reference="tflite")
def test_close(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_output_diff(atol=1e-6, reference="tflite")
def test_far(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_output_diff(atol=1e-3, reference="tensorrt")
def test_reference_missing(optimized_model):
    pass
""",
        "-rs",
    )
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "max_output_diff(atol=1e-06, rtol=0, reference='tflite') broken: int8 on tflite vs fp32 on tflite: "
        "max |diff| *, mean *, cosine 0.99*, top-1 agreement 99.*%; * of 4500 outputs beyond atol + rtol*|ref|",
    ])
    result.stdout.fnmatch_lines(["SKIPPED*backend 'tensorrt' is not available on this machine*"])


def test_max_memory_mb_passes_and_fails(suite):
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_memory_mb(500)
def test_small(optimized_model):
    assert 0 <= optimized_model.memory().peak_mb < 500

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_memory_mb(0.0001)
def test_tiny_budget(optimized_model):
    pass
"""
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["max_memory_mb(0.0001) broken: int8 on tflite: peak * MiB added by load + run (fp32 * MiB) > budget 0.0001 MiB"])


def test_several_markers_of_one_name_all_apply_and_the_closest_level_wins(suite):
    result = suite(
        """
import pytest

pytestmark = pytest.mark.max_size_kb(0.001)  # broken, but each test below has its own max_size_kb

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_size_kb(1000)
@pytest.mark.max_latency_ms(10000, percentile=50)
@pytest.mark.max_latency_ms(1e-6, percentile=99)
def test_tail_broken(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_size_kb(1000)
@pytest.mark.max_latency_ms(10000, percentile=50)
@pytest.mark.max_latency_ms(10000, percentile=99)
def test_both_hold(optimized_model):
    pass
""",
        "--tfopt-perf=enforce",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*max_latency_ms(1e-06, percentile=99) broken*"])
    assert "max_size_kb(0.001" not in result.stdout.str()  # the module's budget is overridden, not added
