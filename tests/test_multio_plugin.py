"""Several named inputs and outputs through the plugin: per-output budgets pass and fail, usage errors, rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MULTITASK = ROOT / "models" / "diabetes_multitask.keras"
DIABETES = ROOT / "fixtures" / "diabetes.npz"


@pytest.fixture
def multitask(pytester: pytest.Pytester, shared_cache: Path, preloaded_runtimes: None):
    """A pytester project on the shipped multi-task model (inputs ids, features; outputs risk, progression)."""

    def run(source: str, *args: str, model: Path = MULTITASK, dataset: Path = DIABETES, ini: str = ""):
        pytester.makeini(f"[pytest]\ntfopt_model = {model}\ntfopt_dataset = {dataset}\n{ini}")
        pytester.makepyfile(test_suite=source)
        return pytester.runpytest("-p", "no:cacheprovider", f"--tfopt-cache-dir={shared_cache}", "--tfopt-threads=1",
                                  *args)

    return run


def test_per_output_accuracy_budgets_pass_and_fail(multitask):
    result = multitask(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_accuracy_drop(0.05, output="risk")
        @pytest.mark.max_accuracy_drop(0.05, output="progression", metric="mae")
        def test_holds(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_accuracy_drop(0.0001, output="progression", metric="mae")
        def test_regression_head_broken(optimized_model):
            pass
        """
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*max_accuracy_drop(0.0001, output='progression') broken: int8 on tflite, output 'progression': "
        "mae 0.4* vs fp32 0.4*, drop 0.00* > budget 0.0001*",
    ])
    # the triage runs on the two-input model too: every input fed its own data, the heads' layers named
    result.stdout.fnmatch_lines(["*quantization triage (QuantizationDebugger, RMSE/scale on * samples*",
                                 "*1. * (*, tensor *) *"])
    assert "triage unavailable" not in result.stdout.str()


def test_label_free_budgets_judge_every_output_and_name_the_worst(multitask):
    result = multitask(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.min_fidelity(20, metric="snr_db")
        @pytest.mark.max_output_diff(atol=0.1, reference="tflite")
        def test_loose(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.min_fidelity(80, metric="snr_db")
        def test_fidelity_broken(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_output_diff(atol=1e-6, reference="tflite")
        def test_diff_broken(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_output_diff(atol=0.03, reference="tflite", output="risk")
        def test_diff_of_one_output(optimized_model):
            pass
        """
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "*min_fidelity(80, metric='snr_db') broken: int8 on tflite, output '*' (worst of 2; others: *): "
        "snr_db vs fp32 * < budget 80",
        "*max_output_diff(atol=1e-06, rtol=0, reference='tflite') broken: int8 on tflite, output '*' vs fp32 on "
        "tflite: max |diff| *; other outputs: * max *",
    ])


def test_accuracy_without_output_on_two_labeled_outputs_is_a_usage_error(multitask):
    result = multitask(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_accuracy_drop(0.05)
        def test_which_head(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.min_fidelity(0.9, output="boxes")
        def test_unknown_output(optimized_model):
            pass
        """
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*the data set labels 2 outputs (progression, risk): pass output=\"name\" to say which one to score*",
        "*output='boxes' is not an output of the model: its outputs are progression, risk*",
    ])
    assert "Traceback" not in result.stdout.str()


def test_accuracy_on_an_output_without_labels_names_the_remedy(multitask, tmp_path):
    data = np.load(DIABETES)
    partial = tmp_path / "risk_only.npz"
    np.savez(partial, **{k: data[k] for k in data.files if "progression" not in k})
    result = multitask(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_accuracy_drop(0.05)  # only risk is labeled: it is the one scored
        def test_only_labeled_head(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_accuracy_drop(0.05, output="progression", metric="mae")
        def test_unlabeled_head(optimized_model):
            pass
        """,
        dataset=partial,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*has no labels for output 'progression' (labeled: risk): give y_test:progression "
                                 "in the .npz*min_fidelity / max_output_diff*"])


def test_a_missing_input_is_one_line_and_nothing_is_cached(multitask, tmp_path):
    data = np.load(DIABETES)
    broken = tmp_path / "no_ids.npz"
    np.savez(broken, **{k: data[k] for k in data.files if ":ids" not in k})
    cache = tmp_path / "cache"
    result = multitask(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8")
        def test_x(optimized_model):
            pass
        """,
        f"--tfopt-cache-dir={cache}",
        dataset=broken,
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*names do not match diabetes_multitask.keras's inputs (missing ids): "
                                 "diabetes_multitask.keras expects ids (3,) int32, features (7,) float32*"])
    assert "Traceback" not in result.stdout.str()
    assert not any(p.is_file() and p.suffix == ".tflite" for p in cache.rglob("*"))


def test_rows_carry_per_output_metrics(multitask, tmp_path):
    report = tmp_path / "r.json"
    result = multitask(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.min_fidelity(10, metric="snr_db")
        def test_x(optimized_model):
            pass
        """,
        f"--tfopt-report={report}",
    )
    result.assert_outcomes(passed=1)
    row = json.loads(report.read_text())["rows"][0]
    assert row["inputs"] == ["features", "ids"] and row["outputs"] == ["progression", "risk"]
    assert 0.5 < row["accuracy[risk]"] <= 1 and row["metric[risk]"] == "top1"
    assert abs(row["accuracy_drop[risk]"] - (row["reference_accuracy[risk]"] - row["accuracy[risk]"])) < 1e-12
    assert row["fidelity_snr_db[risk]"] > 10 and row["fidelity_snr_db[progression]"] > 10
    assert "accuracy[progression]" not in row  # float targets: no top-1 for the summary


FCN = ROOT / "models" / "photo_fcn.keras"
PHOTOS = ROOT / "fixtures" / "photos.npz"


def test_fully_convolutional_model_on_unlabeled_data(multitask):
    """None height/width, two outputs, no labels: calibrated at 32x32, run and judged at the test split's 48x48."""
    result = multitask(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.min_fidelity(25, metric="snr_db")
        @pytest.mark.max_output_diff(atol=0.5, reference="tflite")
        @pytest.mark.max_size_kb(64)
        @pytest.mark.max_latency_ms(500)
        @pytest.mark.min_speedup(0.05)
        def test_holds(optimized_model):
            out = optimized_model.predict(optimized_model.eval_dataset.x[:2])
            assert out["gray"].shape == (2, 48, 48, 1) and out["edges"].shape == (2, 48, 48, 1)
            assert optimized_model.info["input_shapes"] == {"image": [48, 48, 3]}

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.min_fidelity(60, metric="snr_db", output="gray")
        def test_gray_broken(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_size_kb(1)
        @pytest.mark.min_speedup(1.0)  # int8 is about 3x slower than fp32 on this model (LiteRT, 1 thread)
        def test_size_and_speed_broken(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.max_accuracy_drop(0.01, output="gray")
        def test_accuracy_without_labels(optimized_model):
            pass
        """,
        model=FCN, dataset=PHOTOS,
    )
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines([
        "*min_fidelity(60, metric='snr_db', output='gray') broken: int8 on tflite, output 'gray': snr_db vs fp32 * < budget 60*",
    ])
    result.stdout.fnmatch_lines([  # the shipped model where int8 is slower: the failure says which ops and kernels
        "*min_speedup(1, reference='fp32') broken: int8 on tflite: 0.*x * over fp32*",
        "per-op profile (LiteRT op by op*",
        "*CONV_2D * 4 x * ms * 4 x * ms *[[]XNNPACK[]]*",
        "*diagnosis: 4 CONV_2D ops take * ms more in int8 than in fp32*most of the difference*",
    ])
    result.stdout.fnmatch_lines(["*test_size_and_speed_broken*min_speedup FAIL, max_size_kb FAIL"])
    result.stdout.fnmatch_lines(["*has no labels: accuracy needs y*label-free markers min_fidelity / max_output_diff*"])


def test_label_free_markers_on_every_backend(multitask):
    """The unlabeled fully convolutional model with two outputs, through the plugin on tf and openvino.

    onnxruntime is left out on this model: in two full parallel runs (of ten) its fp32 session returned one of the
    outputs with an extra leading axis, (1, n, 48, 48, 1) — a clear failure, never a pass, but not reproduced in
    isolation yet (see the session note); the multi-I/O onnxruntime path is covered in test_multio_backends.py.
    """
    result = multitask(
        """
        import pytest

        @pytest.mark.tfopt_variants("fp32")
        @pytest.mark.min_fidelity(60, metric="snr_db")
        @pytest.mark.max_output_diff(atol=1e-3, reference="tflite")
        @pytest.mark.max_size_kb(256)
        @pytest.mark.max_latency_ms(500)
        @pytest.mark.min_speedup(0.01, reference="fp32")
        def test_holds(optimized_model):
            out = optimized_model.predict(optimized_model.eval_dataset.x[:2])
            assert set(out) == {"gray", "edges"} and out["gray"].shape == (2, 48, 48, 1)

        @pytest.mark.tfopt_variants("fp32")
        @pytest.mark.max_output_diff(atol=0.0, rtol=0.0, reference="tflite")
        @pytest.mark.max_size_kb(0.5)
        def test_broken(optimized_model):
            pass
        """,
        "--tfopt-backend=tf,openvino",
        model=FCN, dataset=PHOTOS,
    )
    result.assert_outcomes(passed=2, failed=2)
    for backend in ("tf", "openvino"):
        result.stdout.fnmatch_lines([f"*test_holds[[]fp32-{backend}[]]*min_fidelity PASS*"])
        result.stdout.fnmatch_lines([f"*max_size_kb(0.5) broken: fp32 on {backend}*"])
