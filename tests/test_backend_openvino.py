"""Backend openvino: OpenVINO IR on the CPU plugin, checked against tf and tflite fp32 on the digits CNN.

Tolerance: fp32 on openvino agrees with fp32 on tf and on tflite within ``FP32_ATOL`` (1e-4) and
with the same accuracy. bf16 and float16 run only where the CPU plugin supports them
(``OPTIMIZATION_CAPABILITIES``); elsewhere they are refused with the reason, which the tests
check instead. int8 needs NNCF.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

pytest.importorskip("openvino")

from pytest_tfopt import BackendUnavailable, ConversionError, Dataset, Workbench  # noqa: E402
from pytest_tfopt.backends import default_registry as default_backends  # noqa: E402
from pytest_tfopt.backends import openvino as ov_backend  # noqa: E402
from pytest_tfopt.backends._archive import unpack  # noqa: E402
from pytest_tfopt.measure.latency import LatencySettings  # noqa: E402

try:  # imported before any in-process pytester run, which would drop it from sys.modules afterwards
    import nncf  # noqa: F401

    HAS_NNCF = True
except ImportError:
    HAS_NNCF = False

FAST = LatencySettings(warmup_runs=3, min_time_s=0.05, min_runs=20)
FP32_ATOL = 1e-4  # fp32 vs tf / tflite fp32, max abs output difference (measured about 2e-7)
HALF = {"bf16": "bf16", "float16": "f16"}


@pytest.fixture(scope="module")
def wb(shared_cache, model_path, data_path) -> Workbench:
    return Workbench(model_path, data_path, cache_dir=shared_cache, threads=1, latency=FAST)


@pytest.fixture(scope="module")
def tf_fp32(wb):
    return wb.reference("tf")


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max())


def _refusal(wb, variant: str) -> str | None:
    return wb.backend("openvino").unsupported_reason(variant, {})


def _ir(content: bytes) -> tuple[list[str], str]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        return zf.namelist(), zf.read("model.xml").decode()


def test_registered_with_versions():
    backend = default_backends().get("openvino")
    assert backend.unavailable_reason() is None
    versions = backend.versions()
    assert versions["openvino"].startswith("20")
    assert ("nncf" in versions) is HAS_NNCF


def test_missing_openvino_names_the_pip_command(monkeypatch):
    real = ov_backend.importlib.util.find_spec
    monkeypatch.setattr(ov_backend.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert ov_backend.OpenVINOBackend().unavailable_reason() == (
        "backend 'openvino' needs openvino: pip install openvino (or pytest-tfopt[openvino])"
    )


@pytest.mark.parametrize("reference", ["tf", "tflite"])
def test_fp32_matches_fp32_on_tf_and_tflite(wb, reference):
    model = wb.runnable("fp32", "openvino")
    ref = wb.reference(reference)
    diff = _max_diff(model.predictions(), ref.predictions())
    assert diff < FP32_ATOL, f"openvino fp32: max abs diff {diff} vs {reference} fp32"
    assert model.evaluate() == ref.evaluate()
    x = wb.eval_dataset.x[:23]
    assert model.predict(x[0]).shape == (1, 10)
    np.testing.assert_allclose(model.predict(x, batch_size=7), model.predict(x), atol=1e-6)
    assert model.predict(x).dtype == np.float32
    stats = model.latency()
    assert stats.n >= 20 and 0 < stats.p50_ms <= stats.p95_ms
    info = model.info
    assert info["backend"] == "openvino" and info["device"] == "CPU" and info["device_name"]
    assert info["threads"] == 1  # INFERENCE_NUM_THREADS, read back from the compiled model
    assert info["inference_precision"] == "f32"  # explicit: the CPU default is bf16 where the CPU has it
    assert info["runtime"].startswith("openvino 20") and info["performance_hint"] == "LATENCY"
    assert info["settings"]["inference_precision_hint"] == "f32"
    assert info["settings"]["source_format"] == "SavedModel"
    assert model.artifact.suffix == ".openvino.zip"


def test_threads_are_applied(wb):
    runner = wb.backend("openvino").load(wb.build("fp32", "openvino"), threads=2)
    assert runner.info["threads"] == 2


def test_same_build_same_bytes(wb):
    """Two conversions in one process (OpenVINO's node-name counter has moved on) give the same zip."""
    backend, recipe = wb.backend("openvino"), wb.variants.stage("fp32")[1]
    first = backend.build(wb.source, recipe, None, {}).content
    second = backend.build(wb.source, recipe, None, {}).content
    assert first == second == wb.build("fp32", "openvino").content
    names, xml = _ir(first)
    assert names == ["model.bin", "model.xml"]
    assert "conversion_parameters" not in xml and "/tmp" not in xml  # no temporary path in the IR
    assert '<inference_precision value="f32"' in xml


def test_precision_is_part_of_what_is_built(wb, monkeypatch):
    """bf16 is the fp32 IR with another compile-time hint inside; a CPU that ignores the hint is refused."""
    backend = ov_backend.OpenVINOBackend()
    has_bf16 = "BF16" in ov_backend.cpu_capabilities(backend.core)[0]
    monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda core: (["FP32", "INT8", "BF16", "FP16"], "any CPU"))
    recipe = wb.variants.stage("bf16")[1]
    bf16 = backend.build(wb.source, recipe, None, {})
    fp32 = wb.build("fp32", "openvino")
    assert bf16.content != fp32.content
    assert bf16.metadata["settings"]["inference_precision_hint"] == "bf16"
    assert _ir(bf16.content)[1].replace('"bf16"', '"f32"') == _ir(fp32.content)[1]
    if has_bf16:
        assert backend.load(bf16, threads=1).info["inference_precision"] == "bf16"
    else:
        with pytest.raises(BackendUnavailable, match="asked the CPU plugin for bf16 inference precision but it runs f32"):
            backend.load(bf16, threads=1)


@pytest.mark.parametrize("variant", ["bf16", "float16"])
def test_half_precision_differs_from_fp32_yet_keeps_accuracy(wb, tf_fp32, variant):
    reason = _refusal(wb, variant)
    if reason:
        pytest.skip(reason)
    model = wb.runnable(variant, "openvino")
    diff = _max_diff(model.predictions(), tf_fp32.predictions())
    assert 1e-5 < diff < 0.05, f"{variant}: max abs diff {diff} vs tf fp32"
    assert abs(model.evaluate() - tf_fp32.evaluate()) <= 0.02
    assert model.info["inference_precision"] == HALF[variant]


@pytest.mark.parametrize("variant", ["bf16", "float16"])
def test_half_precision_is_refused_where_the_cpu_would_run_f32(wb, variant):
    """Where the CPU plugin lacks the precision it silently compiles f32: the variant must skip, not lie."""
    import openvino as ov

    backend = wb.backend("openvino")
    capabilities, device_name = ov_backend.cpu_capabilities(backend.core)
    if ov_backend.CAPABILITIES[variant] in capabilities:
        pytest.skip(f"this CPU ({device_name}) runs {variant}")
    with pytest.raises(BackendUnavailable, match=rf"variant '{variant}' is not available on backend 'openvino' on "
                       rf"this CPU .*no {ov_backend.CAPABILITIES[variant]}.*silently run f32; run {variant} on backend"):
        wb.build(variant, "openvino")
    # the reason is true: the plugin accepts the hint and reads back f32
    model = backend.core.read_model(*_ir_parts(wb.build("fp32", "openvino").content))
    compiled = backend.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": HALF[variant]})
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32


def _ir_parts(content: bytes):
    import openvino as ov

    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        return zf.read("model.xml").decode(), ov.Tensor(np.frombuffer(zf.read("model.bin"), np.uint8).copy())


def test_int8_with_nncf_keeps_accuracy(wb, tf_fp32):
    if not HAS_NNCF:
        assert _refusal(wb, "int8") == (
            "variant 'int8' on backend 'openvino' needs NNCF for post-training quantization: pip install nncf "
            "(or pytest-tfopt[openvino])"
        )
        pytest.skip("nncf is not installed: pip install nncf")
    model = wb.runnable("int8", "openvino")
    fp32 = wb.reference("openvino")
    assert abs(model.evaluate() - fp32.evaluate()) <= 0.02
    diff = _max_diff(model.predictions(), tf_fp32.predictions())
    assert 1e-5 < diff < 1.0, f"int8: max abs diff {diff} vs tf fp32"
    assert model.size_bytes < 0.6 * fp32.size_bytes
    assert "FakeQuantize" in _ir(model.artifact.content)[1]
    settings = model.info["settings"]
    assert settings["quantizer"] == "nncf.quantize" and settings["inference_precision_hint"] == "f32"
    assert model.artifact.metadata["calibration_hash"] == wb.calibration().hash
    assert model.info["converter"] == "openvino.convert_model + nncf.quantize"


def test_int8_without_nncf_skips_with_the_install_command(wb, monkeypatch):
    monkeypatch.setattr(ov_backend, "nncf_available", lambda: False)
    with pytest.raises(BackendUnavailable, match=r"variant 'int8' on backend 'openvino' needs NNCF.*: pip install nncf \(or pytest-tfopt"):
        wb.build("int8", "openvino")


@pytest.mark.parametrize("variant", ["int16x8", "dynamic"])
def test_refuses_what_it_cannot_realize(wb, variant):
    with pytest.raises(BackendUnavailable, match=rf"variant '{variant}' is not available on backend 'openvino'.*use tflite"):
        wb.build(variant, "openvino")


# ---- int8(max_drop=...): NNCF's accuracy control ------------------------------------------------
needs_nncf = pytest.mark.skipif(not HAS_NNCF, reason="nncf is not installed: pip install nncf")


def _dead_unit_bench(cache, labelled: bool = True) -> Workbench:
    """tf_keras features(8) -> split: relu([x, -x, dead unit]) -> sensitive: softmax(3), whose weight row for the
    dead unit (always 0) is 1e4. Its per-channel int8 weight scale is then ~79 and every useful weight (|w| ~ 1)
    rounds to 0, so plain int8 falls to about chance while fp32 is exact (labels are fp32's classes)."""
    import tf_keras

    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 3)).astype(np.float32)
    dense = tf_keras.layers.Dense
    model = tf_keras.Sequential([tf_keras.Input((8,), name="features"), dense(17, activation="relu", name="split"),
                                 dense(3, activation="softmax", name="sensitive")], name="dead_unit")
    model.layers[0].set_weights([np.hstack([np.eye(8), -np.eye(8), np.zeros((8, 1))]), np.r_[np.zeros(16), -1.0]])
    model.layers[1].set_weights([np.vstack([w, -w, np.full((1, 3), 1e4)]), np.zeros(3)])
    x = rng.normal(size=(600, 8)).astype(np.float32)
    y = (x @ w).argmax(1) if labelled else None
    data = Dataset.from_arrays(x[:400], None if y is None else y[:400], x_test=x[400:],
                               y_test=None if y is None else y[400:])
    return Workbench(model, data, cache_dir=cache, threads=1)


@pytest.fixture(scope="module")
def dead_unit(tmp_path_factory, preloaded_runtimes) -> Workbench:
    return _dead_unit_bench(tmp_path_factory.mktemp("dead-unit"))


@needs_nncf
def test_max_drop_met_by_plain_int8_is_plain_int8(wb):
    model = wb.runnable("int8(max_drop=0.5)", "openvino")
    selective = model.artifact.metadata["selective"]
    assert selective["met"] is True and selective["chosen_round"] == 0 and selective["float_layers"] == []
    assert [r["round"] for r in selective["rounds"]] == [0] and selective["metric"] == "top1"
    assert selective["validation"] == "calibration samples (200, training split)"
    assert selective["quantized_ops"] >= 4  # two convolutions and two matrix products
    plain = wb.build("int8", "openvino")
    assert model.artifact.content == plain.content and model.info["settings"] == plain.metadata["settings"]
    assert model.info["converter"] == "openvino.convert_model + nncf.quantize"


@needs_nncf
def test_max_drop_keeps_the_sensitive_layer_float(dead_unit):
    """Measured: plain int8 0.43 on the test split, int8(max_drop=0.05) 0.97 (fp32 1.0); floating ``sensitive``
    alone leaves a drop of 0.04 on the calibration samples (the quantized input moves samples near a boundary)."""
    plain, reference = dead_unit.runnable("int8", "openvino"), dead_unit.reference("openvino").evaluate()
    model = dead_unit.runnable("int8(max_drop=0.05)", "openvino")

    selective = model.artifact.metadata["selective"]
    assert selective["met"] is True and selective["drop"] <= 0.05 and selective["chosen_round"] == 1
    assert selective["rounds"][0]["drop"] > 0.3 and selective["reference_top1"] == 1.0
    assert selective["quantized_ops"] == 2
    (only,) = selective["float_layers"]
    assert only["layer"] == "dead_unit/sensitive/MatMul" and only["op"] == "MatMul"
    assert "quantize_with_accuracy_control" in only["why"]
    settings = model.info["settings"]
    assert settings["quantizer"] == "nncf.quantize_with_accuracy_control" and settings["max_drop"] == "0.05"
    assert settings["float_ops"] == repr([only["node"]])
    assert model.info["converter"] == "openvino.convert_model + nncf.quantize_with_accuracy_control"
    # the name is the artifact's own; that op reads float data there, the other matrix product stays int8
    ir = dead_unit.backend("openvino").core.read_model(*_ir_parts(model.artifact.content))
    assert only["node"] in {op.get_friendly_name() for op in ir.get_ops()}
    assert list(ov_backend.quantized_ops(ir).values()) == ["MatMul"] and only["node"] not in ov_backend.quantized_ops(ir)
    # better on the evaluation split too, which the search never saw
    assert reference - model.evaluate() < 0.1 < 0.3 < reference - plain.evaluate()


@needs_nncf
def test_max_drop_without_labels_judges_agreement_with_fp32(tmp_path, preloaded_runtimes):
    model = _dead_unit_bench(tmp_path, labelled=False).runnable("int8(max_drop=0.05)", "openvino")
    selective = model.artifact.metadata["selective"]
    assert selective["metric"] == "top1 agreement with fp32" and selective["reference_top1"] == 1.0
    assert selective["met"] is True and selective["float_layers"]


def test_max_drop_refuses_several_outputs(tmp_path, model_path, data_path):
    bench = Workbench(str(model_path.parent / "diabetes_multitask.keras"), str(data_path.parent / "diabetes.npz"),
                      cache_dir=tmp_path, threads=1)
    with pytest.raises(ConversionError, match=r"int8\(max_drop=\.\.\.\) on .*\(2 outputs\) is not supported on "
                       r"backend 'openvino'.*use plain int8 with per-output budgets"):
        bench.build("int8(max_drop=0.01)", "openvino")


def test_max_drop_is_refused_where_no_search_exists():
    backends = default_backends()
    reason = backends.get("onnxruntime").unsupported_reason("int8", {"max_drop": 0.01})
    assert "not available on backend 'onnxruntime'" in reason and "NNCF's accuracy control (openvino)" in reason
    openvino = backends.get("openvino")
    assert openvino.unsupported_reason("int8", {"max_drop": 0.01}) == openvino.unsupported_reason("int8", {})


def test_tflite_and_saved_model_sources(wb, tf_fp32, tmp_path, shared_cache, data_path):
    tflite = tmp_path / "digits.tflite"
    tflite.write_bytes(wb.build("fp32", "tflite").content)
    saved_model = tmp_path / "digits_savedmodel"
    saved_model.mkdir()
    unpack(wb.build("fp32", "tf").content, saved_model)
    for source, fmt in ((tflite, "tflite"), (saved_model, "SavedModel")):
        bench = Workbench(str(source), data_path, cache_dir=shared_cache, threads=1)
        model = bench.runnable("fp32", "openvino")
        assert model.info["settings"]["source_format"] == fmt
        diff = _max_diff(model.predictions(), tf_fp32.predictions())
        assert diff < FP32_ATOL, f"{fmt} source: max abs diff {diff} vs tf fp32"


def _saved_model(tmp_path, name: str, batch: int | None, fn) -> str:
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(fn, input_signature=[tf.TensorSpec((batch, 4, 4), tf.float32, name="input")])
    path = str(tmp_path / name)
    tf.saved_model.save(module, path, signatures={"serving_default": module.f.get_concrete_function()})
    return path


def test_static_batch_is_made_dynamic(tmp_path, shared_cache):
    weights = np.arange(16, dtype=np.float32).reshape(4, 4) / 16
    path = _saved_model(tmp_path, "static", 3, lambda x: {"y": x @ weights})
    model = Workbench(path, cache_dir=shared_cache, threads=1).runnable("fp32", "openvino")
    assert model.info["batch"] == "dynamic"
    x = np.random.default_rng(0).random((7, 4, 4), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x, batch_size=5), x @ weights, atol=1e-5)


def test_op_it_cannot_convert_is_named(tmp_path, shared_cache):
    import tensorflow as tf

    path = _saved_model(tmp_path, "svd", None, lambda x: {"u": tf.linalg.svd(x)[1]})
    with pytest.raises(ConversionError, match=r"backend 'openvino' could not convert svd: no conversion rule for op Svd"):
        Workbench(path, cache_dir=shared_cache, threads=1).build("fp32", "openvino")


# ---- through the plugin -----------------------------------------------------------------------
PARITY_SUITE = """
import pytest

@pytest.mark.tfopt_variants("fp32")
@pytest.mark.max_output_diff(atol=1e-4, reference="tf")
def test_fp32_close(optimized_model):
    pass

@pytest.mark.tfopt_variants("{variant}")
@pytest.mark.max_output_diff(atol={tight}, reference="tf")
def test_tight(optimized_model):
    pass

@pytest.mark.tfopt_variants("{variant}")
@pytest.mark.max_output_diff(atol={loose}, reference="tf")
def test_loose(optimized_model):
    pass
"""
LOOSE = {"bf16": 0.05, "float16": 0.05, "int8": 1.0}


@pytest.fixture
def ov_ready(wb, preloaded_runtimes):
    """Build fp32 on tf and every realizable precision here first: the runs below load from the cache.

    (pytester drops modules imported during an in-process run, and OpenVINO's extension cannot be
    imported twice in one process.)
    """
    wb.reference("tf")
    for variant in LOOSE:
        if not _refusal(wb, variant):
            wb.build(variant, "openvino")


@pytest.mark.parametrize("variant", ["bf16", "float16", "int8"])
def test_max_output_diff_on_openvino(suite, wb, ov_ready, variant):
    result = suite(PARITY_SUITE.format(variant=variant, tight=1e-6, loose=LOOSE[variant]),
                   "-rs", "--tfopt-backend=openvino")
    reason = _refusal(wb, variant)
    if reason:
        result.assert_outcomes(passed=1, skipped=2)
        result.stdout.fnmatch_lines([f"SKIPPED*{reason[:60]}*"])
        return
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        f"max_output_diff(atol=1e-06, rtol=0, reference='tf') broken: {variant} on openvino vs fp32 on tf: "
        "max |diff| *, mean *, cosine *, top-1 agreement *; * of 4500 outputs beyond atol + rtol*|ref|",
    ])
