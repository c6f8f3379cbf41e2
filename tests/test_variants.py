"""Core: every post-training quantization variant builds, runs on LiteRT and is cached."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pytest_tfopt import Dataset, DatasetError, UsageError, Workbench
from pytest_tfopt.backends.tflite import TFLiteRunner

VARIANTS = ["fp32", "dynamic", "float16", "int8", "int8_io", "int16x8"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_builds_runs_and_keeps_accuracy(bench, variant):
    model = bench.runnable(variant)
    reference = bench.reference()
    accuracy = model.evaluate()
    assert accuracy >= 0.95
    assert abs(reference.evaluate() - accuracy) <= 0.02
    out = model.predict(bench.eval_dataset.x[:7])
    assert out.shape == (7, 10) and out.dtype == np.float32
    meta = model.artifact.metadata
    assert meta["variant"] == variant
    assert meta["source_hash"] == bench.source.hash
    assert "tensorflow-cpu" in meta["versions"] or "tensorflow" in meta["versions"]
    if variant in ("int8", "int8_io", "int16x8"):
        assert meta["calibration_hash"] == bench.calibration().hash
        assert meta["calibration_size"] == 200
    else:
        assert meta["calibration_hash"] is None


def test_quantized_variants_are_smaller(bench):
    fp32 = bench.reference().size_bytes
    assert bench.runnable("float16").size_bytes < 0.65 * fp32
    for variant in ("dynamic", "int8", "int8_io"):
        assert bench.runnable(variant).size_bytes < 0.5 * fp32
    assert 0 < bench.runnable("int8").gzip_size_bytes < bench.runnable("int8").size_bytes


def test_int8_io_runner_takes_and_gives_floats(bench):
    from ai_edge_litert.interpreter import Interpreter

    model = bench.runnable("int8_io")
    interp = Interpreter(model_content=model.artifact.content)
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    x = bench.eval_dataset.x[:50]
    probs = model.predict(x)
    assert probs.dtype == np.float32
    assert np.all(probs >= -0.01) and np.allclose(probs.sum(axis=1), 1.0, atol=0.05)
    agree = (probs.argmax(1) == bench.runnable("int8").predict(x).argmax(1)).mean()
    assert agree >= 0.95


def test_predict_batches_match_per_sample_results(bench):
    model = bench.runnable("fp32")
    x = bench.eval_dataset.x[:37]
    batched = model.predict(x, batch_size=16)  # 16 + 16 + 5 (padded)
    single = np.concatenate([model.predict(x[i]) for i in range(len(x))])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_latency_stats_fields(bench):
    stats = bench.runnable("int8").latency(batch_size=4)
    assert stats.batch_size == 4 and stats.n >= 50
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms
    assert stats.mean_ms > 0 and stats.stdev_ms >= 0


def test_custom_metric_and_direction(bench):
    from pytest_tfopt import metric

    errors = metric(lambda y, p: float(np.mean(p.argmax(1) != y)), higher_is_better=False, name="error")
    model = bench.runnable("int8")
    assert model.evaluate(metric=errors) == pytest.approx(1 - model.evaluate())


def test_rerun_with_nothing_changed_builds_nothing(bench, shared_cache):
    bench.runnable("int8")
    again = Workbench(bench.source.path, bench.dataset, cache_dir=shared_cache, threads=1)
    rerun = again.runnable("int8")
    assert again.cache.stats.built == 0 and again.cache.stats.reused == 1
    assert rerun.artifact.content == bench.runnable("int8").artifact.content


def test_new_calibration_data_is_a_new_artifact(bench, shared_cache):
    again = Workbench(bench.source.path, bench.dataset, cache_dir=shared_cache, threads=1, calibration_size=50)
    other = again.runnable("int8")
    assert other.artifact.metadata["calibration_size"] == 50
    assert other.artifact.metadata["cache_key"] != bench.runnable("int8").artifact.metadata["cache_key"]


def test_damaged_cache_entry_is_detected_and_rebuilt(bench, tmp_path):
    wb = Workbench(bench.source.path, bench.dataset, cache_dir=tmp_path, threads=1)
    first = wb.build("dynamic")
    original = first.content
    with open(first.path, "r+b") as fh:  # flip bytes in the cached file
        fh.seek(100)
        fh.write(b"\0" * 16)
    wb2 = Workbench(bench.source.path, bench.dataset, cache_dir=tmp_path, threads=1)
    with pytest.warns(UserWarning, match="does not match its recorded hash"):
        rebuilt = wb2.build("dynamic")
    assert wb2.cache.stats.built == 1
    assert rebuilt.content == original  # the converter is deterministic for this recipe
    with open(first.path, "rb") as fh:
        assert fh.read() == original


def test_rebuild_ignores_the_cache(bench, shared_cache):
    wb = Workbench(bench.source.path, bench.dataset, cache_dir=shared_cache, threads=1, rebuild=True)
    wb.build("float16")
    wb.build("float16")
    assert wb.cache.stats.built == 1 and wb.cache.stats.reused == 1


def test_failed_build_leaves_no_artifact(bench, tmp_path):
    x = bench.dataset.train.x.copy()
    x[3, 0, 0, 0] = np.nan
    data = Dataset.from_arrays(x, bench.dataset.train.y, x_test=bench.eval_dataset.x, y_test=bench.eval_dataset.y)
    wb = Workbench(bench.source.path, data, cache_dir=tmp_path, threads=1, calibration_size=10_000)
    with pytest.raises(DatasetError, match=r"calibration data .* has NaN/Inf in 1 of 1347 samples .*drop or impute"):
        wb.build("int8")
    leftovers = [f for f in os.listdir(tmp_path) if not f.endswith(".lock")]
    assert leftovers == []


def test_data_that_does_not_fit_the_model_is_a_clear_error(bench, tmp_path):
    flat = Dataset.from_arrays(bench.dataset.train.x.reshape(-1, 64), bench.dataset.train.y)
    wb = Workbench(bench.source.path, flat, cache_dir=tmp_path, threads=1)
    with pytest.raises(DatasetError, match=r"calibration data samples have shape \(64,\) but .* expects \(8, 8, 1\).*reshape"):
        wb.build("int8")
    assert [f for f in os.listdir(tmp_path) if not f.endswith(".lock")] == []


def test_empty_calibration_set_is_a_clear_error(bench, tmp_path):
    with pytest.raises(DatasetError, match="empty"):
        Dataset.from_arrays(np.zeros((0, 8, 8, 1), np.float32), np.zeros((0,), np.int64),
                            x_test=bench.eval_dataset.x, y_test=bench.eval_dataset.y)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("int9", "unknown variant 'int9': valid variants are bf16, clustered, *dynamic, float16, fp32, *int16x8, int8, int8_io, *pruned"),
        ("int8(bits=4)", "variant 'int8' has no parameter 'bits': valid parameters are calibration_size"),
        ("int8(", "is not NAME or NAME(key=value, ...)"),
    ],
)
def test_bad_variant_names_are_usage_errors(bench, variant, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.").replace(" *", ".*")):
        bench.runnable(variant)


def test_cache_entries_are_json_and_bytes_not_pickles(bench, shared_cache):
    bench.runnable("int8")
    for name in os.listdir(shared_cache):
        if name.endswith(".json"):
            with open(shared_cache / name) as fh:
                entry = json.load(fh)
            assert set(entry) == {"key", "suffix", "sha256", "metadata"}
    assert not [n for n in os.listdir(shared_cache) if n.endswith((".pkl", ".pickle"))]


def test_runner_records_xnnpack_delegate(bench):
    runner = TFLiteRunner(bench.runnable("int8").artifact.content, threads=1)
    assert runner.info["delegate"] in ("XNNPACK", "builtin")
    assert runner.info["threads"] == 1


def test_parsing_a_literal_with_an_invalid_escape_emits_no_warning():
    """``ast.parse`` warns about ``'\\['`` in a user's literal; that warning is not the user's business."""
    import warnings

    from pytest_tfopt.variants import parse_variant

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_variant("int8(x='\\[')").params == (("x", "\\["),)
