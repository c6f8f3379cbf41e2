"""Measurements that cannot change are reused across runs (issue #15 item 2), measured only when asked
(item 3), and top-k accuracy streams when the outputs are too large to keep (item 4).

The artifacts are built once per module (digits CNN, fp32 and int8); each test copies that cache, so the
records one test writes are not seen by the next. "No evaluation ran" is proven by counting the calls of the
real LiteRT runner's ``predict``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from pytest_tfopt import Workbench
from pytest_tfopt.dataset import Dataset
from pytest_tfopt.measure import reuse
from pytest_tfopt.measure.reuse import MeasurementStore
from pytest_tfopt.results import result_row


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory: pytest.TempPathFactory, model_path: Path, data_path: Path) -> Path:
    """A cache holding fp32 and int8 of the digits CNN (no measurement records)."""
    root = tmp_path_factory.mktemp("reuse") / "cache"
    bench = Workbench(model_path, data_path, cache_dir=root, threads=1)
    for variant in ("fp32", "int8"):
        bench.build(variant)
    return root


@pytest.fixture
def cache(built_cache: Path, tmp_path: Path) -> Path:
    """This test's own copy of the built cache."""
    root = tmp_path / "cache"
    shutil.copytree(built_cache, root)
    return root


def bench(cache: Path, model_path: Path, data: object, **kwargs: object) -> Workbench:
    return Workbench(model_path, data, cache_dir=cache, reuse=True, **{"threads": 1, **kwargs})


def counted(model: object) -> list[int]:
    """Count the runner's ``predict`` calls (every evaluation goes through it)."""
    calls: list[int] = []
    real = model.runner.predict

    def predict(x, batch_size=None):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(x, batch_size)

    model.runner.predict = predict
    return calls


def measure_all(model: object) -> tuple[float, np.ndarray, np.ndarray, int]:
    return model.evaluate(), model.correct(), np.array(model.output()), model.gzip_size_bytes


def test_a_second_run_reuses_accuracy_outputs_and_gzip_without_evaluating(cache, model_path, data_path):
    first = bench(cache, model_path, data_path)
    model = first.runnable("int8")
    calls = counted(model)
    measured = measure_all(model)
    assert calls and first.measurement_store.stats.reused == 0
    assert first.measurement_store.stats.measured == 4  # outputs, accuracy, correctness, gzip
    assert model.reused == set()

    second = bench(cache, model_path, data_path)
    again = second.runnable("int8")
    calls = counted(again)
    reused = measure_all(again)
    assert calls == []  # nothing ran: every value came from the records
    assert second.measurement_store.stats.reused == 4 and second.measurement_store.stats.measured == 0
    assert reused[0] == measured[0] and reused[3] == measured[3]
    np.testing.assert_array_equal(reused[1], measured[1])
    np.testing.assert_array_equal(reused[2], measured[2])
    assert again.reused == {"accuracy", "gzip_size_bytes"}
    row = result_row("t::x", again, None, [], "passed")
    assert row["reused"] == ["accuracy", "gzip_size_bytes"] and row["accuracy"] == measured[0]


def test_remeasure_reads_no_record_but_writes_them(cache, model_path, data_path):
    bench(cache, model_path, data_path).runnable("int8").evaluate()
    forced = bench(cache, model_path, data_path, remeasure=True)
    model = forced.runnable("int8")
    calls = counted(model)
    model.evaluate()
    assert calls and forced.measurement_store.stats.reused == 0 and model.reused == set()
    assert "reused" not in result_row("t::x", model, None, [], "passed")


@pytest.mark.parametrize("change", ["threads", "data"])
def test_other_threads_or_one_other_data_byte_measure_again(cache, model_path, data_path, change):
    bench(cache, model_path, data_path).runnable("int8").evaluate()
    data: object = data_path
    if change == "data":  # one value of the last test sample (the training split, so calibration, unchanged)
        whole = Dataset.coerce(str(data_path))
        x = np.array(whole.test.x)
        x.reshape(-1)[-1] += 1
        data = Dataset.from_arrays(whole.train.x, whole.train.y, x, whole.test.y)
    other = bench(cache, model_path, data, threads=2 if change == "threads" else 1)
    model = other.runnable("int8")
    calls = counted(model)
    model.evaluate()
    assert calls and other.measurement_store.stats.reused == 0


def test_every_input_of_a_measurement_is_in_its_record_name():
    scope = MeasurementStore.scope("a" * 64, "tflite", {"tensorflow": "2.21.0"}, "litert 2.3.0", 1)
    what = {"data": "d" * 64, "output": "output_0", "metric": "top1"}
    name = MeasurementStore.name("accuracy", scope, what)
    assert name.startswith("accuracy-") and len(name) == len("accuracy-") + 32
    changed = [
        MeasurementStore.name("accuracy", {**scope, "artifact": "a" * 63 + "b"}, what),  # model file or recipe
        MeasurementStore.name("accuracy", {**scope, "versions": {"tensorflow": "2.21.1"}}, what),  # backend version
        MeasurementStore.name("accuracy", {**scope, "runtime": "litert 2.3.1"}, what),
        MeasurementStore.name("accuracy", {**scope, "threads": 2}, what),
        MeasurementStore.name("accuracy", {**scope, "hardware": "0" * 12}, what),
        MeasurementStore.name("accuracy", scope, {**what, "data": "d" * 63 + "e"}),
        MeasurementStore.name("accuracy", scope, {**what, "metric": "top5"}),
        MeasurementStore.name("correct", scope, what),
    ]
    assert len(set(changed)) == len(changed) and name not in changed


def test_one_byte_of_the_model_file_or_recipe_changes_the_artifact_key(cache, model_path, data_path, tmp_path):
    """The artifact (its sha256) is what a measurement depends on: a changed recipe gives other bytes."""
    wb = bench(cache, model_path, data_path)
    int8, fp32 = wb.runnable("int8"), wb.runnable("fp32")
    assert int8.sha256 != fp32.sha256
    copy = tmp_path / "digits.h5"
    copy.write_bytes(model_path.read_bytes() + b"\0")
    moved = bench(cache, copy, data_path)
    assert moved._record_name() != wb._record_name()  # the file's identity record: loaded and hashed again


def test_a_damaged_record_is_ignored_with_a_warning_and_measured_again(cache, model_path, data_path):
    value = bench(cache, model_path, data_path).runnable("int8").evaluate()
    (record,) = (cache / "records").glob("accuracy-*.json")
    entry = json.loads(record.read_text())
    entry["doc"]["value"] = "garbage"
    record.write_text(json.dumps(entry))
    wb = bench(cache, model_path, data_path)
    model = wb.runnable("int8")
    with pytest.warns(UserWarning, match=r"measurement record accuracy-\w+ is damaged .*measuring again"):
        assert model.evaluate() == value
    assert "accuracy" not in model.reused  # measured, not reused
    record.write_text("{not json")
    model = bench(cache, model_path, data_path).runnable("int8")
    with pytest.warns(UserWarning, match=r"record accuracy-\w+ is damaged"):
        assert model.evaluate() == value
    entry = json.loads(record.read_text())  # stored again, whole
    assert entry["doc"]["value"] == value


def test_stored_arrays_are_checked_on_the_way_back():
    bits = reuse.encode_bools(np.array([True, False, True]))
    assert reuse.decode_bools(bits).tolist() == [True, False, True]
    for bad in ({**bits, "n": 99}, {**bits, "bits": "!!"}, {"n": 3}):
        with pytest.raises((ValueError, KeyError)):
            reuse.decode_bools(bad)
    arr = reuse.encode_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert reuse.decode_array(arr).shape == (2, 3)
    for bad in ({**arr, "shape": [4, 3]}, {**arr, "dtype": "object"}):
        with pytest.raises(ValueError):
            reuse.decode_array(bad)
    assert reuse.encode_outputs(np.zeros(reuse.MAX_OUTPUT_BYTES // 4 + 1, np.float32)) is None  # too large to keep


def test_top_k_accuracy_streams_when_the_outputs_are_too_large_to_keep(cache, model_path, data_path, monkeypatch):
    whole = Workbench(model_path, data_path, cache_dir=cache, threads=1).runnable("int8")
    expected, expected_correct = whole.evaluate(), whole.correct()
    monkeypatch.setattr(reuse, "MAX_OUTPUT_BYTES", 1000)  # the 450 x 10 float outputs no longer fit
    model = Workbench(model_path, data_path, cache_dir=cache, threads=1).runnable("int8")
    calls = counted(model)
    assert model.evaluate() == pytest.approx(expected, abs=1e-12)
    np.testing.assert_array_equal(model.correct(), expected_correct)
    assert model._predictions == {}  # no full output tensor was kept
    assert len(calls) == 2 * 2  # 450 samples in chunks of 256, once for accuracy, once for correctness


def test_gzip_size_is_computed_only_when_asked(cache, model_path, data_path):
    model = Workbench(model_path, data_path, cache_dir=cache, threads=1).runnable("int8")
    model.begin_test("t::quiet")
    row = result_row("t::quiet", model, None, [], "passed", asked=())
    assert row["gzip_size_bytes"] is None and "gzip_size_bytes" not in model.measurements
    row = result_row("t::report", model, None, [], "passed")  # asked=None: everything, as before
    assert row["gzip_size_bytes"] == model.artifact.gzip_size_bytes


def test_the_memory_probe_is_reused(cache, model_path, data_path):
    first = bench(cache, model_path, data_path).runnable("int8").memory()
    again = bench(cache, model_path, data_path).runnable("int8")
    assert again.memory() == first and again.reused == {"memory_peak_mb"}


BROKEN = """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.min_fidelity(0.999999, metric="cosine")
@pytest.mark.max_accuracy_drop(0.5)
def test_int8(optimized_model):
    pass
"""


def test_a_budget_broken_by_a_reused_value_still_fails(pytester, preloaded_runtimes, model_path, data_path,
                                                        built_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(test_suite=BROKEN)
    args = ["-p", "no:cacheprovider", f"--tfopt-cache-dir={cache}", "--tfopt-threads=1",
            f"--tfopt-report={tmp_path / 'report.json'}", f"--tfopt-report={tmp_path / 'report.md'}",
            f"--tfopt-report={tmp_path / 'report.html'}"]
    cold = pytester.runpytest(*args)
    assert "↺" not in (tmp_path / "report.md").read_text() + (tmp_path / "report.html").read_text()
    cold.assert_outcomes(failed=1)
    cold.stdout.fnmatch_lines(["measurements: 0 reused, * measured"])
    warm = pytester.runpytest(*args)
    warm.assert_outcomes(failed=1)
    warm.stdout.fnmatch_lines(["*min_fidelity*", "measurements: * reused, 0 measured"])
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert "accuracy" in rows[0]["reused"] and rows[0]["outcome"] == "failed"
    markdown = (tmp_path / "report.md").read_text()  # the reused values are marked in the reports people read
    accuracy = f"{rows[0]['accuracy']:.4f} ↺"
    assert accuracy in markdown and "↺ reused: measured by an earlier run" in markdown
    page = (tmp_path / "report.html").read_text()
    assert f'{rows[0]["accuracy"]:.4f} <span class="reused"' in page and "reused: measured by an earlier run" in page
    forced = pytester.runpytest(*args, "--tfopt-remeasure")
    forced.assert_outcomes(failed=1)
    forced.stdout.fnmatch_lines(["measurements: 0 reused, * measured (--tfopt-remeasure)"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "reused" not in json.loads((tmp_path / "report.json").read_text())["rows"][0]


def test_workers_counts_are_summed_in_the_controller(pytester, model_path, data_path, built_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(test_suite=BROKEN.replace("min_fidelity(0.999999", "min_fidelity(0.5"))
    args = ["-n", "2", "-p", "no:cacheprovider", f"--tfopt-cache-dir={cache}", "--tfopt-threads=1"]
    pytester.runpytest_subprocess(*args).stdout.fnmatch_lines(["measurements: 0 reused, [1-9]* measured"])
    warm = pytester.runpytest_subprocess(*args)
    warm.assert_outcomes(passed=1)
    warm.stdout.fnmatch_lines(["measurements: [1-9]* reused, 0 measured"])
