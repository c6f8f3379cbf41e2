"""The tensorrt backend: its GPU-free stages run here, the engine tests need an NVIDIA GPU.

ONNX for TensorRT (fp32, FP16 graph, explicit symmetric Q/DQ int8) is built from the shipped
digits CNN and run on ONNX Runtime's CPU provider against the TFLite fp32 reference; engine
cache keys, GPU detection, route choice and skip messages are checked with the machine's
probes replaced. Engine building and running are skipped, with what is missing, off-GPU.
"""

from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import pytest

from pytest_tfopt import BackendUnavailable, Workbench
from pytest_tfopt.backends import onnx as onnx_backend
from pytest_tfopt.backends import onnx_convert
from pytest_tfopt.backends import tensorrt as trt_backend
from pytest_tfopt.backends.tensorrt import Gpu, TensorRTBackend, engine_cache_key, onnx_for_tensorrt
from pytest_tfopt.backends.tensorrt import export as trt_export
from pytest_tfopt.backends.tensorrt import machine as trt_machine

OPSET = 17
MACHINE_REASON = TensorRTBackend().unavailable_reason()
needs_gpu = pytest.mark.skipif(MACHINE_REASON is not None, reason=str(MACHINE_REASON))


@pytest.fixture(scope="module")
def wb(shared_cache, model_path, data_path) -> Workbench:
    return Workbench(model_path, data_path, cache_dir=shared_cache, threads=1)


@pytest.fixture(scope="module")
def graphs(wb):
    """precision → ONNX-for-TensorRT bytes (built once per module)."""
    built: dict[str, bytes] = {}

    def get(precision: str) -> bytes:
        if precision not in built:
            built[precision] = onnx_for_tensorrt(wb.source, precision, wb.calibration(), OPSET)
        return built[precision]

    return get


def run_cpu(content: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(-1) == y).mean())


# ---- ONNX for TensorRT -------------------------------------------------------------------------
def test_fp32_graph_matches_tflite_reference(wb, graphs):
    reference = wb.reference("tflite").predictions()
    out = run_cpu(graphs("fp32"), wb.eval_dataset.x)
    diff = float(np.abs(out - reference).max())
    assert diff < 1e-4, f"max abs diff {diff} vs tflite fp32"
    assert trt_backend.onnx_precision(graphs("fp32")) == "fp32"


def test_float16_graph_is_fp16_inside_with_fp32_io(wb, graphs):
    import onnx

    content = graphs("float16")
    proto = onnx.load_from_string(content)
    floats = [t for t in proto.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert floats and all(t.data_type == onnx.TensorProto.FLOAT16 for t in floats)
    # fp32 at the boundary (decision: every runner feeds/returns fp32), FP16 inside via Cast
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "Cast" in {n.op_type for n in proto.graph.node}
    assert trt_backend.onnx_precision(content) == "float16"
    fp32 = run_cpu(graphs("fp32"), wb.eval_dataset.x)
    fp16 = run_cpu(content, wb.eval_dataset.x)
    # FP16 keeps ~3 decimal digits: softmax outputs agree to a few 1e-3
    assert float(np.abs(fp16 - fp32).max()) < 1e-2
    assert abs(accuracy(fp16, wb.eval_dataset.y) - accuracy(fp32, wb.eval_dataset.y)) <= 0.005


def test_int8_graph_has_symmetric_qdq_on_weights_and_activations(wb, graphs):
    import onnx
    from onnx import numpy_helper

    content = graphs("int8")
    proto = onnx.load_from_string(content)
    inits = {t.name: t for t in proto.graph.initializer}
    quantize = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert quantize and dequantize
    on_weights = [n for n in quantize if n.input[0] in inits]
    on_activations = [n for n in quantize if n.input[0] not in inits]
    assert len(on_weights) == 4, "every Conv/MatMul weight gets its own Q/DQ pair (AddQDQPairToWeight)"
    assert on_activations, "activations are quantized too"
    for node in quantize + dequantize:
        zero_point = numpy_helper.to_array(inits[node.input[2]])
        assert zero_point.dtype == np.int8 and not zero_point.any(), f"{node.name}: zero point {zero_point}"
    for node in on_weights:  # per-channel weight scales
        assert numpy_helper.to_array(inits[node.input[1]]).size > 1
    assert not any(n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
                   and inits[n.input[0]].data_type == onnx.TensorProto.INT32 for n in dequantize), "biases stay float"
    assert trt_backend.onnx_precision(content) == "int8"
    fp32 = run_cpu(graphs("fp32"), wb.eval_dataset.x)
    int8 = run_cpu(content, wb.eval_dataset.x)
    assert abs(accuracy(int8, wb.eval_dataset.y) - accuracy(fp32, wb.eval_dataset.y)) <= 0.02


def test_calibration_feeding_visits_every_sample_once_per_pass(wb, monkeypatch):
    calibration = wb.calibration()
    reader = onnx_convert.one_input_reader("input", calibration, np.float32)
    for _ in range(2):  # ORT rewinds readers between passes
        seen = []
        while (batch := reader.get_next()) is not None:
            seen.append(batch["input"])
        np.testing.assert_array_equal(np.concatenate(seen), calibration.x)
        reader.rewind()

    fed: list[np.ndarray] = []

    def counting(name, data, dtype):
        inner = onnx_convert.one_input_reader(name, data, dtype)
        get_next = inner.get_next

        def get_next_counted():
            batch = get_next()
            if batch is not None:
                fed.append(batch[name])
            return batch

        inner.get_next = get_next_counted
        return inner

    monkeypatch.setattr(trt_export, "one_input_reader", counting)  # where int8_calibration_reader looks it up
    settings: dict[str, str] = {}
    trt_backend.qdq_int8(onnx_backend.to_onnx(wb.source, OPSET), calibration, settings)
    rows = sorted(hashlib.sha1(r.tobytes()).hexdigest() for r in np.concatenate(fed))
    assert rows == sorted(hashlib.sha1(r.astype(np.float32).tobytes()).hexdigest() for r in calibration.x)
    assert settings["calibration"] == f"{len(calibration)} samples"


def test_int8_without_calibration_is_a_dataset_error(wb):
    from pytest_tfopt.errors import DatasetError

    with pytest.raises(DatasetError, match="calibration"):
        onnx_for_tensorrt(wb.source, "int8", None, OPSET)


# ---- engine cache keys, parser errors, options ------------------------------------------------
def test_engine_cache_key_changes_with_each_input_and_is_stable_otherwise():
    base = dict(onnx_bytes=b"onnx-graph", precision="int8", trt_version="10.13.0", gpu_name="NVIDIA L4",
                compute_capability="8.9", workspace_bytes=1 << 30, max_batch=64)
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base) and len(key) == 32
    changed = dict(onnx_bytes=b"onnx-graph2", precision="float16", trt_version="11.4.1", gpu_name="NVIDIA A10G",
                   compute_capability="8.6", workspace_bytes=2 << 30, max_batch=32)
    keys = {engine_cache_key(**{**base, field: value}) for field, value in changed.items()}
    assert len(keys) == len(changed) and key not in keys


class FakeParserError:
    def __init__(self, node, name, op, desc):
        self._v = {"node": node, "node_name": name, "node_operator": op, "desc": desc}

    def __getattr__(self, attr):
        return lambda: self._v[attr]


def test_parser_errors_become_one_line_naming_node_op_and_backend():
    errors = [FakeParserError(7, "digits_cnn/conv1/Conv2D", "Conv", "Assertion failed: weights are not constant\nmore"),
              FakeParserError(9, "x", "MatMul", "other")]
    msg = trt_backend.describe_parser_errors(errors, "int8")
    assert "\n" not in msg and msg.startswith("backend 'tensorrt'")
    assert "node 7 'digits_cnn/conv1/Conv2D' (Conv)" in msg and "weights are not constant" in msg
    assert "(+1 more)" in msg and "int8" in msg and "onnxruntime" in msg
    assert "without saying why" in trt_backend.describe_parser_errors([], "fp32")


@pytest.mark.parametrize(("precision", "fp16", "int8"), [("fp32", False, False), ("float16", True, False), ("int8", False, True)])
def test_ort_tensorrt_provider_options_follow_the_precision(precision, fp16, int8):
    options = trt_backend.ort_provider_options(precision, "/cache/k", 1 << 30)
    assert options["trt_fp16_enable"] is fp16 and options["trt_int8_enable"] is int8
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == "/cache/k"
    assert options["trt_max_workspace_size"] == 1 << 30


def test_unsupported_precisions_name_the_remedy():
    backend = TensorRTBackend()
    for precision in ("fp32", "float16", "int8"):
        assert backend.unsupported_reason(precision) is None
    msg = backend.unsupported_reason("dynamic")
    assert "variant 'dynamic' is not available on backend 'tensorrt'" in msg
    assert "fp32, float16, int8" in msg and "onnxruntime or tflite" in msg
    assert "QuantizationDebugger" in backend.unsupported_reason("int8", {"max_drop": 0.01})
    with pytest.raises(BackendUnavailable, match="'int16x8' is not available"):
        onnx_for_tensorrt(None, "int16x8", None, OPSET)


# ---- the machine: GPU detection, routes, skip reasons ------------------------------------------
def fake_machine(monkeypatch, *, gpu=True, tensorrt=False, cuda=False, ort_ep=False):
    # the probes live in tensorrt.machine, where TensorRTBackend looks them up
    monkeypatch.setattr(trt_machine, "probe_gpu",
                        lambda: (Gpu("NVIDIA L4", "8.9"), "") if gpu else (None, "no NVIDIA GPU is visible (test)"))
    real = trt_machine.has_module
    monkeypatch.setattr(trt_machine, "has_module", lambda name: tensorrt if name == "tensorrt" else real(name))
    monkeypatch.setattr(trt_machine, "has_cuda_python", lambda: cuda)
    monkeypatch.setattr(trt_machine, "ort_has_tensorrt_ep", lambda: ort_ep)
    monkeypatch.setattr(trt_machine, "tensorrt_version", lambda: "10.13.0" if tensorrt else "")
    return TensorRTBackend()


def test_routes_and_what_is_missing(monkeypatch):
    backend = fake_machine(monkeypatch, tensorrt=True, cuda=True, ort_ep=True)
    assert backend.unavailable_reason() is None
    assert backend.route == trt_backend.ROUTE_TENSORRT and backend.artifact_suffix == ".engine"
    backend = fake_machine(monkeypatch, ort_ep=True)
    assert backend.unavailable_reason() is None
    assert backend.route == trt_backend.ROUTE_ORT and backend.artifact_suffix == ".onnx"
    msg = fake_machine(monkeypatch, tensorrt=True).unavailable_reason()
    assert "'cuda-python' is not installed (pip install cuda-python)" in msg and "pip install tensorrt" not in msg
    msg = fake_machine(monkeypatch, gpu=False, tensorrt=True, cuda=True).unavailable_reason()
    assert msg == "backend 'tensorrt' is not available on this machine: no NVIDIA GPU is visible (test)"
    msg = fake_machine(monkeypatch).unavailable_reason()
    for part in ("pip install tensorrt", "pip install cuda-python", "pip install onnxruntime-gpu"):
        assert part in msg


def test_versions_carry_the_engine_key_material(monkeypatch):
    monkeypatch.setenv("TFOPT_TRT_WORKSPACE_MB", "512")
    versions = fake_machine(monkeypatch, tensorrt=True, cuda=True).versions()
    assert versions["tensorrt"] == "10.13.0" and versions["tensorrt-route"] == trt_backend.ROUTE_TENSORRT
    assert versions["gpu"] == "NVIDIA L4" and versions["compute-capability"] == "8.9"
    assert versions["onnx-opset"] == "17" and versions["trt-workspace-bytes"] == str(512 << 20)
    assert versions["trt-max-batch"] == "64"


def test_gpu_probe_reads_nvidia_smi_and_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(trt_machine, "has_cuda_python", lambda: False)  # probe_gpu looks it up there
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA A10G, 8.6'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert trt_backend.probe_gpu() == (Gpu("NVIDIA A10G", "8.6"), "")
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2\nexit 9\n")
    gpu, why = trt_backend.probe_gpu()
    assert gpu is None and "nvidia-smi failed: NVIDIA-SMI has failed" in why
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert "CUDA_VISIBLE_DEVICES='-1'" in trt_backend.probe_gpu()[1]


@pytest.mark.skipif(MACHINE_REASON is None, reason="this machine can run TensorRT")
def test_unavailable_reason_here_names_the_gpu_and_the_tensorrt_package():
    assert MACHINE_REASON.startswith("backend 'tensorrt' is not available on this machine: ")
    assert "no NVIDIA GPU is visible" in MACHINE_REASON
    assert "'tensorrt' is not installed (pip install tensorrt)" in MACHINE_REASON
    assert "\n" not in MACHINE_REASON


SIMPLE = """
def test_it(optimized_model):
    assert optimized_model.size_bytes > 0
"""


@pytest.mark.skipif(MACHINE_REASON is None, reason="this machine can run TensorRT")
def test_plugin_skips_with_the_reason_and_fails_under_strict(suite):
    result = suite(SIMPLE, "--tfopt-backend=tensorrt", "--tfopt-variants=fp32,float16,int8", "-rs")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*SKIPPED*backend 'tensorrt' is not available on this machine: no NVIDIA GPU*"])
    result = suite(SIMPLE, "--tfopt-backend=tensorrt", "--tfopt-variants=fp32,float16,int8", "--tfopt-strict")
    result.assert_outcomes(errors=3)  # the tfopt_backend fixture fails, so pytest reports setup errors
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*backend 'tensorrt' is not available on this machine*(--tfopt-strict)*"])


# ---- on a GPU ----------------------------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize(("precision", "atol", "max_drop"), [("fp32", 1e-4, 0.0), ("float16", 1e-2, 0.005),
                                                             ("int8", None, 0.02)])
def test_engine_matches_the_tflite_reference(wb, precision, atol, max_drop):
    reference = wb.reference("tflite")
    model = wb.runnable(precision, "tensorrt")
    out = model.predictions()
    if atol is not None:
        assert float(np.abs(out - reference.predictions()).max()) < atol
    assert abs(model.evaluate() - reference.evaluate()) <= max_drop
    info = model.info
    assert info["gpu"] and info["compute_capability"] and info["precision"] == precision
    assert info["route"] in (trt_backend.ROUTE_TENSORRT, trt_backend.ROUTE_ORT)
    x = wb.eval_dataset.x[:23]
    np.testing.assert_allclose(model.predict(x, batch_size=7), model.predict(x), atol=1e-5)
    assert model.predict(x[0]).shape == (1, 10)
    stats = model.latency(batch_size=4)
    assert stats.n > 0 and 0 < stats.p50_ms <= stats.p95_ms
    assert model.artifact.metadata["engine_cache_key"]
