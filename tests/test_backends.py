"""Backends behind one interface: tf (SavedModel), xla, onnxruntime, on real runtimes.

Parity is checked against the TFLite fp32 reference on the shipped digits CNN (a tf_keras
model); a small Keras 3 model and its SavedModel export check the other source kinds.
"""

from __future__ import annotations

import gc
import io
import os
import zipfile

import numpy as np
import pytest

from pytest_tfopt import BackendUnavailable, UsageError, Workbench
from pytest_tfopt.backends import default_registry as default_backends
from pytest_tfopt.backends import onnx as onnx_backend
from pytest_tfopt.backends._archive import pack, unpack
from pytest_tfopt.backends.tf import TFBackend
from pytest_tfopt.measure.latency import LatencySettings
from pytest_tfopt.variants import default_registry as default_variants
from pytest_tfopt.variants.bf16 import register as register_variants

FAST = LatencySettings(warmup_runs=3, min_time_s=0.05, min_runs=20)
FLOAT_BACKENDS = ["tf", "xla", "onnxruntime"]


@pytest.fixture(scope="module")
def wb(shared_cache, model_path, data_path) -> Workbench:
    """The digits CNN with ``bf16`` registered, sharing the session's artifact cache."""
    variants = default_variants()
    register_variants(variants)
    return Workbench(model_path, data_path, cache_dir=shared_cache, threads=1, variants=variants, latency=FAST)


@pytest.fixture(scope="module")
def tflite_fp32(wb):
    return wb.reference("tflite")


def test_backends_are_registered():
    names = default_backends().names()
    assert {"tflite", "tf", "xla", "onnxruntime"} <= set(names)


@pytest.mark.parametrize("backend", FLOAT_BACKENDS)
def test_fp32_matches_tflite_fp32(wb, tflite_fp32, backend):
    model = wb.runnable("fp32", backend)
    diff = float(np.abs(model.predictions() - tflite_fp32.predictions()).max())
    assert diff < 1e-4, f"{backend}: max abs diff {diff} vs tflite fp32"
    assert model.evaluate() == tflite_fp32.evaluate()
    stats = model.latency()
    assert stats.n >= 20 and 0 < stats.p50_ms <= stats.p95_ms
    # one sample, odd batch sizes (padded last batch) and the default batching agree
    x = wb.eval_dataset.x[:23]
    assert model.predict(x[0]).shape == (1, 10)
    np.testing.assert_allclose(model.predict(x, batch_size=7), model.predict(x), atol=1e-6)
    info = model.info
    assert info["threads"] == 1 and info["backend"] == backend
    if backend == "onnxruntime":
        assert "CPUExecutionProvider" in info["providers"]
        assert info["settings"]["opset"] == "17"
        assert model.artifact.suffix == ".onnx"
    else:
        assert info["jit_compile"] is (backend == "xla")
        assert info["signature"] == "serving_default"
        assert model.artifact.suffix == ".savedmodel.zip"


def test_savedmodel_artifact_is_a_deterministic_zip(wb):
    content = wb.runnable("fp32", "tf").artifact.content
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        names = zf.namelist()
        assert "saved_model.pb" in names and names == sorted(names)
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_archive_pack_is_deterministic_and_unpack_stays_inside(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, order in ((a, ["z.bin", "sub/y.txt", "x.txt"]), (b, ["x.txt", "z.bin", "sub/y.txt"])):
        for name in order:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(name.encode() * 10)
            os.utime(path, (1_000_000 + len(order), 2_000_000 + hash(name) % 1000))
    assert pack(a) == pack(b)
    out = tmp_path / "out"
    out.mkdir()
    unpack(pack(a), out)
    assert (out / "sub" / "y.txt").read_bytes() == b"sub/y.txt" * 10
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", b"x")
    with pytest.raises(ValueError, match="outside"):
        unpack(evil.getvalue(), out)
    assert not (tmp_path / "escape.txt").exists()


def test_tf_runner_removes_its_directory(wb):
    runner = TFBackend().load(wb.build("fp32", "tf"), threads=1)
    directory = runner._dir
    assert os.path.exists(os.path.join(directory, "saved_model.pb"))
    del runner
    gc.collect()
    assert not os.path.exists(directory)


@pytest.mark.parametrize("variant", ["int8", "dynamic", "float16"])
def test_onnxruntime_quantized_variants(wb, variant):
    import onnx

    model = wb.runnable(variant, "onnxruntime")
    reference = wb.reference("onnxruntime")
    assert abs(model.evaluate() - reference.evaluate()) <= 0.02
    assert model.size_bytes < 0.7 * reference.size_bytes
    proto = onnx.load_from_string(model.artifact.content)
    ops = {node.op_type for node in proto.graph.node}
    if variant == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert model.info["settings"]["format"] == "QDQ"
        assert model.artifact.metadata["calibration_hash"] == wb.calibration().hash
    elif variant == "dynamic":
        assert "DynamicQuantizeLinear" in ops
    else:
        types = {init.data_type for init in proto.graph.initializer}
        assert onnx.TensorProto.FLOAT16 in types
        assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert model.predict(wb.eval_dataset.x[:3]).dtype == np.float32


@pytest.mark.parametrize("backend", ["tf", "xla"])
def test_tf_backends_refuse_integer_variants(wb, backend):
    with pytest.raises(BackendUnavailable, match=rf"variant 'int8' is not available on backend '{backend}'.*use tflite"):
        wb.build("int8", backend)
    with pytest.raises(BackendUnavailable, match="variant 'float16' is not available"):
        wb.build("float16", backend)


def test_onnxruntime_refuses_what_it_cannot_build(wb):
    with pytest.raises(BackendUnavailable, match="variant 'int16x8' is not available on backend 'onnxruntime'"):
        wb.build("int16x8", "onnxruntime")
    with pytest.raises(BackendUnavailable, match="max_drop.*tflite"):
        wb.build("int8(max_drop=0.01)", "onnxruntime")


@pytest.mark.parametrize("backend", ["tf", "xla"])
def test_bf16_is_lossy_but_close(wb, backend):
    model = wb.runnable("bf16", backend)
    fp32 = wb.reference(backend)
    diff = float(np.abs(model.predictions() - fp32.predictions()).max())
    assert 0 < diff < 0.05
    assert abs(model.evaluate() - fp32.evaluate()) <= 0.02
    assert model.info["settings"]["policy"] == "mixed_bfloat16"
    assert model.predictions().dtype == np.float32


def test_bf16_on_tflite_skips_with_reason(wb):
    with pytest.raises(BackendUnavailable, match="variant 'bf16' is not available on backend 'tflite'.*tf or xla"):
        wb.build("bf16", "tflite")


def test_onnx_opset_option_and_env(wb, monkeypatch):
    import onnx

    from pytest_tfopt.backends.onnx import OnnxRuntimeBackend

    recipe = wb.variants.stage("fp32")[1]
    built = OnnxRuntimeBackend(opset=13).build(wb.source, recipe, None, {})
    assert {o.version for o in onnx.load_from_string(built.content).opset_import if o.domain in ("", "ai.onnx")} == {13}
    monkeypatch.setenv("TFOPT_ONNX_OPSET", "15")
    backend = OnnxRuntimeBackend()
    assert backend.opset == 15 and backend.versions()["onnx-opset"] == "15"  # part of the cache key
    monkeypatch.setenv("TFOPT_ONNX_OPSET", "latest")
    with pytest.raises(UsageError, match="TFOPT_ONNX_OPSET"):
        _ = backend.opset


def test_onnxruntime_missing_packages_is_a_reason(monkeypatch):
    monkeypatch.setattr(onnx_backend, "missing_packages", lambda: ["tf2onnx", "onnxruntime"])
    reason = onnx_backend.OnnxRuntimeBackend().unavailable_reason()
    assert reason == (
        "backend 'onnxruntime' needs tf2onnx, onnxruntime: pip install tf2onnx onnxruntime (or pytest-tfopt[onnx])"
    )


def test_keras3_and_saved_model_sources(tmp_path, data_path):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="pixels")
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dropout(0.3)(h)
    out = keras.layers.Dense(10)(h)
    model = keras.Model(inp, out)
    x = np.load(data_path)["x_test"][:40]
    expected = model.predict(x, verbose=0)
    variants = default_variants()
    register_variants(variants)
    cache = tmp_path / "cache"
    model.export(str(tmp_path / "sm"), verbose=False)
    for source in (model, str(tmp_path / "sm")):
        bench = Workbench(source, data_path, cache_dir=cache, threads=1, variants=variants)
        for backend in ("tf", "onnxruntime", *(["xla"] if source is model else [])):
            got = bench.runnable("fp32", backend).predict(x)
            assert np.abs(got - expected).max() < 1e-4, (bench.source.kind, backend)
        if source is model:
            bf16 = bench.runnable("bf16", "tf").predict(x)
            assert 0 < np.abs(bf16 - expected).max() < 0.05 * max(1.0, np.abs(expected).max())
        else:
            with pytest.raises(BackendUnavailable, match="bf16.*saved_model"):
                bench.build("bf16", "tf")


# ---- through the plugin -----------------------------------------------------------------------
SUITE = """
def test_x(optimized_model):
    assert optimized_model.evaluate() > 0.9
"""


@pytest.fixture
def onnx_runtimes(preloaded_runtimes):
    """Import the ONNX stack before in-process pytester runs (see ``preloaded_runtimes``)."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxruntime.quantization  # noqa: F401
    import tf2onnx  # noqa: F401


def test_plugin_runs_variants_on_each_backend(suite, onnx_runtimes):
    result = suite(SUITE, "-v", "-rs", "--tfopt-backend=tflite,tf,onnxruntime", "--tfopt-variants=fp32,int8")
    result.stdout.fnmatch_lines_random([
        "*test_x[[]int8-onnxruntime[]] PASSED*",
        "*test_x[[]fp32-tf[]] PASSED*",
        "*test_x[[]fp32-onnxruntime[]] PASSED*",
        "*test_x[[]int8-tf[]] SKIPPED*",
        "SKIPPED*variant 'int8' is not available on backend 'tf'*",
    ])
    result.assert_outcomes(passed=5, skipped=1)


def test_plugin_all_backends_include_tf_xla_onnxruntime(suite, onnx_runtimes):
    result = suite(SUITE, "-v", "--tfopt-backend=all", "--tfopt-variants=fp32")
    result.stdout.fnmatch_lines_random([f"*test_x[[]fp32-{b}[]] PASSED*" for b in ("tflite", *FLOAT_BACKENDS)])
    assert "tensorrt" not in result.stdout.str()
    assert result.ret == 0


def test_plugin_skips_onnxruntime_when_missing(suite, onnx_runtimes, monkeypatch):
    monkeypatch.setattr(onnx_backend, "missing_packages", lambda: ["tf2onnx"])
    result = suite(SUITE, "-rs", "--tfopt-backend=onnxruntime", "--tfopt-variants=fp32")
    result.stdout.fnmatch_lines(["SKIPPED*backend 'onnxruntime' needs tf2onnx: pip install tf2onnx onnxruntime*"])
    result.assert_outcomes(skipped=1)


def test_unrealizable_precision_is_refused_before_any_fine_tune(wb):
    """``pruned(...)+int8`` on backend tf skips at once: no fine-tune runs for an artifact it cannot use."""
    logged: list[str] = []
    wb_log, wb.log = wb.log, logged.append
    try:
        with pytest.raises(BackendUnavailable, match=r"variant 'int8' is not available on backend 'tf'"):
            wb.build("pruned(sparsity=0.5,epochs=1)+int8", "tf")
    finally:
        wb.log = wb_log
    assert not any("stage" in line or "epoch" in line for line in logged), logged


def test_onnxruntime_int8_uses_7_bit_weights_on_cpus_without_vnni(wb, monkeypatch):
    """Without VNNI, full-range int8 weights saturate ORT's int8 kernels: the backend picks reduce_range then.

    Measured on MobileNetV2 (benchmarks/README.md): argmax agreement with fp32 0.40 full-range, 0.93 with it.
    """
    backend = default_backends().get("onnxruntime")
    auto = not onnx_backend.cpu_has_vnni()
    model = wb.runnable("int8", "onnxruntime")
    assert model.artifact.metadata["settings"]["reduce_range"] == str(auto)
    assert backend.versions()["onnx-int8-reduce-range"] == str(auto)  # in the cache key: another CPU, another artifact
    assert model.evaluate() >= wb.reference("onnxruntime").evaluate() - 0.01
    monkeypatch.setenv("TFOPT_ONNX_REDUCE_RANGE", "1" if not auto else "0")
    assert backend.reduce_range is (not auto)
    other = wb.build("int8", "onnxruntime")
    assert other.metadata["settings"]["reduce_range"] == str(not auto) and other.content != model.artifact.content
