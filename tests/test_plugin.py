"""The plugin as a user meets it: options, ini keys, fixtures, ids, skips, errors and the summary."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

SIMPLE = """
def test_it(optimized_model):
    assert optimized_model.size_bytes > 0
"""


def test_ids_carry_variant_and_backend_and_ini_variants_are_the_default(suite):
    result = suite(SIMPLE, "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_it[[]dynamic-tflite[]] PASSED*", "*test_it[[]float16-tflite[]] PASSED*",
                                 "*test_it[[]int8-tflite[]] PASSED*"])


def test_marker_chooses_variants_and_option_overrides_it(suite):
    source = """
import pytest

@pytest.mark.tfopt_variants("int8_io", "fp32")
def test_it(optimized_model):
    assert optimized_model.variant in ("int8_io", "fp32", "float16")
"""
    suite(source, "-v").stdout.fnmatch_lines(["*test_it[[]int8_io-tflite[]] PASSED*", "*test_it[[]fp32-tflite[]] PASSED*"])
    result = suite(source, "-v", "--tfopt-variants=float16")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_it[[]float16-tflite[]] PASSED*"])


def test_fixtures_reference_factory_and_datasets(suite):
    result = suite(
        """
import pytest
from pytest_tfopt import Dataset

@pytest.mark.tfopt_variants("int8")
def test_it(optimized_model, reference_model, tfopt_variant, calibration_dataset, eval_dataset, tfopt_backend):
    assert reference_model.variant == "fp32" and reference_model.backend == "tflite"
    assert optimized_model.backend == tfopt_backend.name == "tflite"
    assert tfopt_variant("float16").variant == "float16"
    assert isinstance(calibration_dataset, Dataset) and len(calibration_dataset) == 200
    assert len(eval_dataset) == 450 and eval_dataset.y is not None
    stats = optimized_model.latency()
    assert stats.n > 0 and stats.p50_ms <= stats.p99_ms
    assert 0.9 < optimized_model.evaluate() <= 1.0
"""
    )
    result.assert_outcomes(passed=1)


def test_fixtures_overridden_in_conftest_with_objects(pytester, shared_cache, preloaded_runtimes, model_path, data_path):
    pytester.makeconftest(
        f"""
import numpy as np
import pytest
import tf_keras
from pytest_tfopt import Dataset

@pytest.fixture(scope="session")
def tfopt_model():
    return tf_keras.models.load_model({str(model_path)!r}, compile=False)

@pytest.fixture(scope="session")
def tfopt_dataset():
    with np.load({str(data_path)!r}) as d:
        return Dataset.from_arrays(d["x_train"], d["y_train"], x_test=d["x_test"][:100], y_test=d["y_test"][:100])
"""
    )
    pytester.makepyfile(
        """
import pytest

@pytest.mark.tfopt_variants("dynamic")
@pytest.mark.max_accuracy_drop(0.02)
def test_it(optimized_model, eval_dataset):
    assert len(eval_dataset) == 100
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--tfopt-cache-dir={shared_cache}", "--tfopt-threads=1")
    result.assert_outcomes(passed=1)


def test_missing_backend_skips_with_reason_and_fails_under_strict(suite):
    result = suite(SIMPLE, "--tfopt-backend=tensorrt", "--tfopt-variants=int8", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*backend 'tensorrt' is not available on this machine: *tensorrt*"])
    result = suite(SIMPLE, "--tfopt-backend=tensorrt", "--tfopt-variants=int8", "--tfopt-strict")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*backend 'tensorrt' is not available on this machine*(--tfopt-strict)*"])


def test_several_backends_parametrize(suite):
    result = suite(SIMPLE, "--tfopt-backend=tflite,tensorrt", "--tfopt-variants=int8", "-v")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*test_it[[]int8-tflite[]] PASSED*", "*test_it[[]int8-tensorrt[]] SKIPPED*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tfopt-backend=coreml"], "*unknown backend 'coreml': valid backends are onnxruntime, openvino, serving, tensorrt, tf, tflite, xla*"),
        (["--tfopt-variants=int8,int9"], "*unknown variant 'int9': valid variants are *int8*"),
        (["--tfopt-threads=0"], "*--tfopt-threads=0: use 1 or more threads*"),
    ],
)
def test_bad_options_are_usage_errors(suite, args, message):
    result = suite(SIMPLE, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_unknown_variant_in_marker_names_the_test(suite):
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8", "float61")
def test_typo(optimized_model):
    pass
"""
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_suite.py::test_typo[[]float61-tflite[]]: unknown variant 'float61'*"])


def _single_line_failure(result, message: str) -> None:
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()
    assert "site-packages" not in result.stdout.str()


def test_missing_model_path_is_one_clear_line(pytester, shared_cache):
    pytester.makeini("[pytest]\ntfopt_model = nowhere/model.keras\n")
    pytester.makepyfile(SIMPLE)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--tfopt-cache-dir={shared_cache}", "--tfopt-variants=int8")
    result.assert_outcomes(errors=1)
    _single_line_failure(result, "*model '*nowhere/model.keras' does not exist: check tfopt_model / the path*")


def test_no_model_configured(pytester, shared_cache):
    pytester.makepyfile(SIMPLE)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--tfopt-cache-dir={shared_cache}", "--tfopt-variants=int8")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no model configured: set ini tfopt_model = PATH or override the tfopt_model fixture*"])


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".tflite"])
def test_corrupt_model_file_is_one_clear_line(pytester, shared_cache, preloaded_runtimes, suffix, model_path, data_path):
    bad = pytester.path / f"broken{suffix}"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    pytester.makeini(f"[pytest]\ntfopt_model = broken{suffix}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(SIMPLE)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--tfopt-cache-dir={shared_cache}", "--tfopt-variants=int8")
    result.assert_outcomes(errors=1)
    _single_line_failure(result, f"*model file '*broken{suffix}' is damaged or unreadable (*): re-save it*")


def test_data_that_does_not_fit_and_nan_calibration(pytester, tmp_path, preloaded_runtimes, model_path, data_path):
    with np.load(data_path) as d:
        arrays = {k: d[k] for k in d.files}
    flat = {**arrays, "x_train": arrays["x_train"].reshape(-1, 64), "x_test": arrays["x_test"].reshape(-1, 64)}
    np.savez(pytester.path / "flat.npz", **flat)
    nan = dict(arrays)
    nan["x_train"] = arrays["x_train"].copy()
    nan["x_train"][:, 0, 0, 0] = np.nan
    np.savez(pytester.path / "nan.npz", **nan)
    pytester.makepyfile(SIMPLE)
    cache = tmp_path / "cache"
    for data, message in [
        ("flat.npz", "*calibration data samples have shape (64,) but digits_cnn.h5 expects (8, 8, 1): reshape the data*"),
        ("nan.npz", "*calibration data (calibration) has NaN/Inf in 200 of 200 samples (first: index 0): drop or impute*"),
    ]:
        pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data}\n")
        result = pytester.runpytest("-p", "no:cacheprovider", f"--tfopt-cache-dir={cache}", "--tfopt-variants=int8")
        result.assert_outcomes(failed=0, errors=1)
        _single_line_failure(result, message)
    assert not cache.exists() or [p.name for p in cache.iterdir() if p.suffix != ".lock"] == []


def test_summary_counts_built_and_reused_and_rebuild(pytester, tmp_path, preloaded_runtimes, model_path, data_path):
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(SIMPLE)
    args = ["-p", "no:cacheprovider", f"--tfopt-cache-dir={tmp_path / 'c'}", "--tfopt-variants=dynamic", "--tfopt-threads=1"]
    pytester.runpytest(*args).stdout.fnmatch_lines(["*tfopt summary*", "*test_it[[]dynamic-tflite[]]*dynamic*tflite*",
                                                    "artifacts: 2 built (*s), 0 reused; cache: *"])
    pytester.runpytest(*args).stdout.fnmatch_lines(["artifacts: 0 built (0.0 s), 2 reused; cache: *"])
    rebuilt = pytester.runpytest(*args, "--tfopt-rebuild")
    rebuilt.stdout.fnmatch_lines(["artifacts: 2 built (*s), 0 reused; cache: *"])
    assert rebuilt.ret == 0


def test_cache_dir_defaults_inside_pytest_cache(pytester, preloaded_runtimes, model_path, data_path):
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(SIMPLE)
    result = pytester.runpytest("--tfopt-variants=dynamic", "--tfopt-threads=1")
    result.assert_outcomes(passed=1)
    assert list((pytester.path / ".pytest_cache" / "d" / "tfopt").glob("*.tflite"))


def test_help_lists_options_and_importing_does_not_load_tensorflow():
    code = (
        "import sys, pytest_tfopt, pytest_tfopt.plugin, pytest_tfopt.workbench;"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    core = "import sys, pytest_tfopt; assert 'pytest' not in sys.modules and '_pytest' not in sys.modules"
    subprocess.run([sys.executable, "-c", core], check=True)
    out = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--tfopt-backend", "--tfopt-variants", "--tfopt-cache-dir", "--tfopt-rebuild", "--tfopt-threads",
                   "--tfopt-strict", "tfopt_model", "tfopt_dataset", "tfopt_variants", "tfopt_calibration_size"):
        assert option in out
