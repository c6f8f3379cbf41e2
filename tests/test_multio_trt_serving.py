"""Several named inputs/outputs, integer inputs and free axes on backends tensorrt and serving, and graphopt.

Two small in-memory Keras 3 models: a multitask model (dict inputs ``ids`` int32 → Embedding and
``features`` float32; dict outputs ``risk`` softmax and ``progression``) and a fully convolutional
one (``Input((None, None, 3))``, list outputs ``gray`` and ``edges``).

tensorrt runs no engine here (no GPU): its ONNX graphs (fp32, FP16 inside, Q/DQ int8) are run on
ONNX Runtime's CPU provider against Keras, and its GPU-free logic (optimization profiles, engine
bindings, ORT options, the ORT route's runner on a CPU session) is checked directly. serving talks
to :class:`ColumnarStandIn`, a stdlib HTTP server written for these tests that implements TF
Serving's REST status and predict endpoints (row and columnar formats) by running the real
exported SavedModel in TensorFlow: ``tensorflow_model_server`` is not installed here.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from pytest_tfopt import BackendUnavailable, Dataset, Workbench
from pytest_tfopt.backends import default_registry as default_backends
from pytest_tfopt.backends import onnx as onnx_backend
from pytest_tfopt.backends import tensorrt as trt_backend
from pytest_tfopt.backends._archive import unpack
from pytest_tfopt.backends.serving import ServingBackend, ServingError, parse_answer, read_signature
from pytest_tfopt.backends.tensorrt import (
    Gpu,
    TensorRTBackend,
    engine_bindings,
    engine_cache_key,
    onnx_for_tensorrt,
    optimization_profile,
    outside_profile,
)
from pytest_tfopt.backends.tensorrt import export as trt_export
from pytest_tfopt.backends.tensorrt import machine as trt_machine
from pytest_tfopt.errors import ConversionError, DatasetError
from pytest_tfopt.signature import Signature, TensorInfo

OPSET = 17
N = 64
H, W = 12, 16  # the FCN's data: non-square, so height and width cannot be swapped unnoticed


# ---- models and data ------------------------------------------------------------------------
def multitask_model():
    import keras

    keras.utils.set_random_seed(0)
    ids = keras.Input((3,), dtype="int32", name="ids")
    features = keras.Input((5,), name="features")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(10, 4)(ids))
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([embedded, features]))
    return keras.Model({"ids": ids, "features": features},
                       {"risk": keras.layers.Dense(2, activation="softmax", name="risk")(hidden),
                        "progression": keras.layers.Dense(1, name="progression")(hidden)})


def fcn_model():
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((None, None, 3), name="image")
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    gray = keras.layers.Conv2D(1, 1, name="gray")(hidden)
    edges = keras.layers.Conv2D(2, 3, padding="same", name="edges")(hidden)
    return keras.Model(image, [gray, edges])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("multio-trt-serving")


def _registry():
    registry = default_backends()  # a URL makes serving available; its artifact does not depend on it
    registry.register("serving", lambda: ServingBackend(url="http://127.0.0.1:9"))
    return registry


@pytest.fixture(scope="module")
def multitask(cache):
    rng = np.random.default_rng(0)
    x = {"ids": rng.integers(0, 10, (N, 3)).astype(np.int32), "features": rng.normal(size=(N, 5)).astype(np.float32)}
    return Workbench(multitask_model(), Dataset(x), cache_dir=cache, threads=1, backends=_registry())


@pytest.fixture(scope="module")
def fcn(cache):
    x = np.random.default_rng(1).random((24, H, W, 3)).astype(np.float32)
    return Workbench(fcn_model(), Dataset(x), cache_dir=cache, threads=1, backends=_registry())


def keras_outputs(wb: Workbench, x: Any) -> dict[str, np.ndarray]:
    """The Keras model's own outputs by name: the reference every backend is held to."""
    out = wb.source.model(x, training=False)
    if not isinstance(out, dict):
        out = dict(zip(wb.source.signature.output_names, out, strict=True))
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def graphs(multitask, fcn):
    """(model, precision) → ONNX-for-TensorRT bytes, built once."""
    built: dict[tuple[str, str], bytes] = {}

    def get(model: str, precision: str) -> bytes:
        if (model, precision) not in built:
            wb = {"multitask": multitask, "fcn": fcn}[model]
            calibration = wb.calibration() if precision == "int8" else None
            built[model, precision] = onnx_for_tensorrt(wb.source, precision, calibration, OPSET)
        return built[model, precision]

    return get


def cpu_session(content: bytes):
    import onnxruntime as ort

    return ort.InferenceSession(content, providers=["CPUExecutionProvider"])


def run_cpu(content: bytes, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = cpu_session(content)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    assert sorted(a) == sorted(b)
    return {k: float(np.abs(a[k] - b[k]).max()) for k in a}


# ---- tensorrt: ONNX for TensorRT --------------------------------------------------------------
def test_trt_fp32_graph_names_every_input_and_output_and_matches_keras(multitask, graphs):
    import onnx

    proto = onnx.load_from_string(graphs("multitask", "fp32"))
    inputs = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    assert inputs == {"ids": onnx.TensorProto.INT32, "features": onnx.TensorProto.FLOAT}
    assert sorted(o.name for o in proto.graph.output) == ["progression", "risk"]
    x = multitask.eval_dataset.x
    diffs = max_diff(run_cpu(graphs("multitask", "fp32"), dict(x)), keras_outputs(multitask, x))
    assert max(diffs.values()) < 1e-5, diffs


def test_trt_float16_graph_keeps_integer_ids_and_fp32_io(multitask, graphs):
    import onnx

    content = graphs("multitask", "float16")
    proto = onnx.load_from_string(content)
    inputs = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    assert inputs == {"ids": onnx.TensorProto.INT32, "features": onnx.TensorProto.FLOAT}
    assert {o.type.tensor_type.elem_type for o in proto.graph.output} == {onnx.TensorProto.FLOAT}
    assert trt_backend.onnx_precision(content) == "float16"
    x = multitask.eval_dataset.x
    diffs = max_diff(run_cpu(content, dict(x)), keras_outputs(multitask, x))
    assert max(diffs.values()) < 2e-2, diffs


def test_trt_int8_calibration_feeds_every_input_by_name_once_per_pass(multitask, monkeypatch):
    calibration = multitask.calibration()
    fed: list[dict[str, np.ndarray]] = []

    def watched(feed):  # the real reader, recording what ORT's calibrator takes from it
        inner = onnx_backend.calibration_reader(feed)
        get_next = inner.get_next

        def get_next_recorded():
            batch = get_next()
            if batch is not None:
                fed.append(batch)
            return batch

        inner.get_next = get_next_recorded
        return inner

    monkeypatch.setattr(trt_export, "calibration_reader", watched)  # where int8_calibration_reader looks it up
    settings: dict[str, str] = {}
    content = trt_backend.qdq_int8(onnx_backend.to_onnx(multitask.source, OPSET), calibration, settings)
    assert fed and all(sorted(batch) == ["features", "ids"] for batch in fed)
    assert all(batch["ids"].dtype == np.int32 and batch["features"].dtype == np.float32 for batch in fed)
    # MinMax calibration makes one pass; every sample of both inputs is fed exactly once, rows kept together
    rows = sorted(b["ids"][i].tobytes() + b["features"][i].tobytes() for b in fed for i in range(len(b["ids"])))
    expected = sorted(calibration.x["ids"][i].tobytes() + calibration.x["features"][i].tobytes()
                      for i in range(len(calibration)))
    assert rows == expected
    assert settings["calibration"] == f"{len(calibration)} samples"
    assert trt_backend.onnx_precision(content) == "int8"


def test_trt_int8_graph_quantizes_float_tensors_only(multitask, graphs):
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(graphs("multitask", "int8"))
    inits = {t.name: t for t in proto.graph.initializer}
    quantize = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    on_weights = [n for n in quantize if n.input[0] in inits]
    on_activations = [n for n in quantize if n.input[0] not in inits]
    assert len(on_weights) == 3, "the three MatMul weights (hidden, risk, progression)"
    assert on_activations, "the Concatenate of features and embeddings feeding the MatMul is quantized"
    assert {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}["ids"] == onnx.TensorProto.INT32
    consumers_of_ids = {n.op_type for n in proto.graph.node if "ids" in n.input}
    assert consumers_of_ids and "QuantizeLinear" not in consumers_of_ids
    for node in quantize:
        assert not numpy_helper.to_array(inits[node.input[2]]).any(), "symmetric: zero points 0"
    x = multitask.eval_dataset.x
    reference = keras_outputs(multitask, x)
    int8 = run_cpu(graphs("multitask", "int8"), dict(x))
    assert float(np.abs(int8["risk"] - reference["risk"]).max()) < 0.05
    spread = float(reference["progression"].std())
    assert float(np.abs(int8["progression"] - reference["progression"]).max()) < 0.1 * spread + 1e-3


def test_trt_fcn_graphs_run_at_the_datas_height_and_width(fcn, graphs):
    import onnx

    proto = onnx.load_from_string(graphs("fcn", "fp32"))
    (image,) = proto.graph.input
    dims = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim]
    assert image.name == "image" and dims == [None, None, None, 3]
    assert sorted(o.name for o in proto.graph.output) == ["edges", "gray"]
    for shape in ((3, H, W, 3), (2, 20, 8, 3)):  # the calibration shape, and another one
        x = np.random.default_rng(2).random(shape).astype(np.float32)
        reference = keras_outputs(fcn, x)
        fp32 = run_cpu(graphs("fcn", "fp32"), {"image": x})
        assert fp32["gray"].shape == (*shape[:3], 1) and fp32["edges"].shape == (*shape[:3], 2)
        assert max(max_diff(fp32, reference).values()) < 1e-5
        int8 = run_cpu(graphs("fcn", "int8"), {"image": x})
        assert max(max_diff(int8, reference).values()) < 0.05


# ---- tensorrt: profiles, bindings, ORT route (no GPU needed) --------------------------------------
def test_optimization_profile_per_input_with_free_axes_from_the_data():
    inputs = {"image": (None, None, 3), "ids": (3,)}
    profile = optimization_profile(inputs, max_batch=8, max_axis=64, data_shapes={"image": (H, W, 3), "ids": (3,)})
    assert profile["image"] == ((1, 1, 1, 3), (8, H, W, 3), (8, 64, 64, 3))
    assert profile["ids"] == ((1, 3), (8, 3), (8, 3))
    without_data = optimization_profile(inputs, max_batch=8, max_axis=64)
    assert without_data["image"] == ((1, 1, 1, 3), (8, 64, 64, 3), (8, 64, 64, 3))
    larger = optimization_profile({"image": (None, None, 3)}, 4, 64, {"image": (100, 30, 3)})
    assert larger["image"] == ((1, 1, 1, 3), (4, 100, 30, 3), (4, 100, 64, 3)), "the max grows to fit the data"


def test_outside_profile_names_the_input_and_the_setting_to_raise():
    profile = optimization_profile({"image": (None, None, 3), "ids": (3,)}, 8, 64)
    assert outside_profile({"image": (8, 64, 1, 3), "ids": (8, 3)}, profile) is None
    too_big = outside_profile({"image": (2, 65, 8, 3), "ids": (2, 3)}, profile)
    assert "input 'image' has shape (2, 65, 8, 3)" in too_big and "TFOPT_TRT_MAX_AXIS" in too_big
    assert "(1, 1, 1, 3) to (8, 64, 64, 3)" in too_big
    batch = outside_profile({"image": (9, 8, 8, 3), "ids": (9, 3)}, profile)
    assert "TFOPT_TRT_MAX_BATCH" in batch and "\n" not in batch


def test_profile_reaches_the_ort_options_and_the_engine_key(fcn, graphs):
    backend = TensorRTBackend(max_batch=8, max_axis=64)
    profile = backend.profile(graphs("fcn", "int8"), fcn.calibration())
    assert profile == {"image": ((1, 1, 1, 3), (8, H, W, 3), (8, 64, 64, 3))}
    options = trt_backend.ort_provider_options("int8", "/cache/k", 1 << 30, profile)
    assert options["trt_profile_min_shapes"] == "image:1x1x1x3"
    assert options["trt_profile_opt_shapes"] == f"image:8x{H}x{W}x3"
    assert options["trt_profile_max_shapes"] == "image:8x64x64x3"
    assert "trt_profile_min_shapes" not in trt_backend.ort_provider_options("int8", "/cache/k", 1 << 30)
    key = dict(onnx_bytes=b"g", precision="int8", trt_version="10.13.0", gpu_name="NVIDIA L4",
               compute_capability="8.9", workspace_bytes=1 << 30, max_batch=8)
    other = optimization_profile({"image": (None, None, 3)}, 8, 128)
    assert len({engine_cache_key(**key), engine_cache_key(**key, profile=profile),
                engine_cache_key(**key, profile=other)}) == 3


def test_multitask_profile_names_both_inputs(multitask, graphs):
    profile = TensorRTBackend(max_batch=16).profile(graphs("multitask", "fp32"))
    assert profile == {"features": ((1, 5), (16, 5), (16, 5)), "ids": ((1, 3), (16, 3), (16, 3))}
    text = trt_backend.ort_provider_options("fp32", "/c", 1 << 30, profile)["trt_profile_max_shapes"]
    assert text == "features:16x5,ids:16x3"


class FakeEngine:
    """The ``ICudaEngine`` methods :func:`engine_bindings` reads (tensorrt itself needs a GPU)."""

    INPUT, OUTPUT = "INPUT", "OUTPUT"

    def __init__(self, tensors: list[tuple[str, str, tuple[int, ...], Any]], profile: dict[str, tuple]) -> None:
        self.tensors, self.profile = tensors, profile
        self.num_io_tensors = len(tensors)

    def _get(self, name: str) -> tuple:
        return next(t for t in self.tensors if t[0] == name)

    def get_tensor_name(self, i: int) -> str:
        return self.tensors[i][0]

    def get_tensor_mode(self, name: str) -> str:
        return self._get(name)[1]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._get(name)[2]

    def get_tensor_dtype(self, name: str) -> Any:
        return self._get(name)[3]

    def get_tensor_profile_shape(self, name: str, index: int) -> tuple:
        assert index == 0
        return self.profile[name]


def test_engine_bindings_map_every_tensor_by_name():
    engine = FakeEngine(
        [("risk", "OUTPUT", (-1, 2), np.float32), ("ids", "INPUT", (-1, 3), np.int32),
         ("features:0", "INPUT", (-1, 5), np.float32), ("progression", "OUTPUT", (-1, 1), np.float32)],
        {"ids": ((1, 3), (8, 3), (8, 3)), "features:0": ((1, 5), (8, 5), (8, 5))},
    )
    signature, tensors, profile = engine_bindings(engine, FakeEngine.INPUT, np.dtype)
    assert signature == Signature(
        (TensorInfo("features", (5,), "float32"), TensorInfo("ids", (3,), "int32")),
        (TensorInfo("progression", (1,), "float32"), TensorInfo("risk", (2,), "float32")),
    )
    assert tensors == {"risk": "risk", "ids": "ids", "features": "features:0", "progression": "progression"}
    assert profile == {"ids": ((1, 3), (8, 3), (8, 3)), "features": ((1, 5), (8, 5), (8, 5))}
    fcn_engine = FakeEngine([("image", "INPUT", (-1, -1, -1, 3), np.float32), ("gray", "OUTPUT", (-1, -1, -1, 1), np.float32)],
                            {"image": ((1, 1, 1, 3), (8, 12, 16, 3), (8, 64, 64, 3))})
    signature, _, _ = engine_bindings(fcn_engine, FakeEngine.INPUT, np.dtype)
    assert signature.inputs[0].shape == (None, None, 3) and signature.dynamic
    with pytest.raises(ConversionError, match="needs at least one of each"):
        engine_bindings(FakeEngine([("x", "INPUT", (-1, 3), np.float32)], {"x": ((1, 3),) * 3}), "INPUT", np.dtype)


def test_ort_route_runner_feeds_and_returns_by_name(multitask, fcn, graphs):
    # the ORT route's runner on a CPU session: only the execution provider differs from a GPU run
    runner = trt_backend.OrtTensorRTRunner(cpu_session(graphs("multitask", "fp32")), "fp32", {"threads": 1})
    assert runner.info["route"] == trt_backend.ROUTE_ORT and runner.signature.input_names == ["features", "ids"]
    x = multitask.eval_dataset.x
    out = runner.predict(x, batch_size=5)  # 13 samples: 3 batches, the last one padded
    assert isinstance(out, dict) and sorted(out) == ["progression", "risk"]
    assert max(max_diff(out, keras_outputs(multitask, x)).values()) < 1e-5
    one = runner.predict({"ids": x["ids"][0], "features": x["features"][0]})
    assert one["risk"].shape == (1, 2) and one["progression"].shape == (1, 1)
    runner.prepare(x)()
    with pytest.raises(DatasetError, match="ids"):
        runner.predict({"features": x["features"]})

    runner = trt_backend.OrtTensorRTRunner(cpu_session(graphs("fcn", "fp32")), "fp32")
    image = np.random.default_rng(3).random((2, 20, 8, 3)).astype(np.float32)
    out = runner.predict(image)
    assert out["gray"].shape == (2, 20, 8, 1) and out["edges"].shape == (2, 20, 8, 2)
    assert max(max_diff(out, keras_outputs(fcn, image)).values()) < 1e-5


def fake_gpu_machine(monkeypatch):
    """This machine as one with a GPU and onnxruntime-gpu's TensorRT EP (the ORT route builds no engine)."""
    monkeypatch.setattr(trt_machine, "probe_gpu", lambda: (Gpu("NVIDIA L4", "8.9"), ""))
    monkeypatch.setattr(trt_machine, "has_module", lambda name: name != "tensorrt")
    monkeypatch.setattr(trt_machine, "has_cuda_python", lambda: False)
    monkeypatch.setattr(trt_machine, "ort_has_tensorrt_ep", lambda: True)
    monkeypatch.setattr(trt_machine, "tensorrt_version", lambda: "10.13.0")


def test_ort_route_artifact_carries_the_profile_and_loading_needs_the_ep(fcn, monkeypatch, tmp_path):
    fake_gpu_machine(monkeypatch)
    monkeypatch.setenv("TFOPT_TRT_MAX_AXIS", "96")
    monkeypatch.setenv("TFOPT_TRT_ENGINE_CACHE", str(tmp_path / "engines"))
    artifact = fcn.build("int8", "tensorrt")
    meta = artifact.metadata
    assert artifact.suffix == ".onnx" and meta["route"] == trt_backend.ROUTE_ORT
    assert meta["profile"] == {"image": [[1, 1, 1, 3], [64, H, W, 3], [64, 96, 96, 3]]}
    assert meta["settings"]["max_axis"] == "96" and meta["versions"]["trt-max-axis"] == "96"
    with pytest.raises(BackendUnavailable, match="could not start TensorrtExecutionProvider"):
        fcn.backend("tensorrt").load(artifact, 1)  # the CPU onnxruntime wheel has no TensorRT EP


# ---- serving ------------------------------------------------------------------------------------
class ColumnarStandIn:
    """Protocol stand-in for TensorFlow Serving's REST API (the real binary is absent on this machine).

    Serves the SavedModel under ``base/<version>/`` as ``name``: status, and predict in the row
    (``instances`` → ``predictions``) and columnar (``inputs`` → ``outputs``) formats, computed by
    TensorFlow on the real exported model. Like TF Serving, a one-output signature answers a
    columnar request with a bare list. ``requests`` keeps every predict request body (parsed).
    """

    def __init__(self, base: str, name: str) -> None:
        import tensorflow as tf

        version = max((d for d in os.listdir(base) if d.isdigit()), key=int)
        self.signature = tf.saved_model.load(os.path.join(base, version)).signatures["serving_default"]
        self.name, self.version = name, version
        self.requests: list[dict[str, Any]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def predict(self, request: dict[str, Any]) -> dict[str, Any]:
        import tensorflow as tf

        specs = self.signature.structured_input_signature[1]
        if "instances" in request:
            rows = request["instances"]
            if isinstance(rows[0], dict):
                columns = {k: [r[k] for r in rows] for k in specs}
            else:
                columns = {next(iter(specs)): rows}
        else:
            columns = request["inputs"] if isinstance(request["inputs"], dict) else {next(iter(specs)): request["inputs"]}
        out = self.signature(**{k: tf.constant(np.asarray(v), dtype=specs[k].dtype) for k, v in columns.items()})
        out = {k: v.numpy().tolist() for k, v in out.items()}
        if "instances" in request:
            if len(out) == 1:
                return {"predictions": next(iter(out.values()))}
            return {"predictions": [{k: v[i] for k, v in out.items()} for i in range(len(rows))]}
        return {"outputs": next(iter(out.values())) if len(out) == 1 else out}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"/v1/models/{stand_in.name}":
                    return self._send(404, {"error": "Could not find any versions of model"})
                return self._send(200, {"model_version_status": [
                    {"version": stand_in.version, "state": "AVAILABLE", "status": {"error_code": "OK"}}]})

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != f"/v1/models/{stand_in.name}:predict":
                    return self._send(404, {"error": f"Servable not found for request: Latest({stand_in.name})"})
                stand_in.requests.append(request)
                try:
                    return self._send(200, stand_in.predict(request))
                except Exception as exc:  # TF Serving answers a bad request with 400 and the error
                    return self._send(400, {"error": str(exc).splitlines()[0]})

        return Handler

    def __enter__(self) -> ColumnarStandIn:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def served(wb: Workbench, tmp_path_factory) -> tuple[Any, str, str]:
    """The fp32 serving artifact, its model base directory, and its served name."""
    artifact = wb.build("fp32", "serving")
    name = artifact.metadata["settings"]["model_name"]
    base = tmp_path_factory.mktemp(f"serving-{name}")
    unpack(artifact.content, base)
    return artifact, str(base / name), name


@pytest.fixture(scope="module")
def multitask_served(multitask, tmp_path_factory):
    return served(multitask, tmp_path_factory)


@pytest.fixture(scope="module")
def fcn_served(fcn, tmp_path_factory):
    return served(fcn, tmp_path_factory)


def test_serving_export_signature_names_inputs_and_outputs(multitask_served):
    artifact, _, _ = multitask_served
    signature = read_signature(artifact.content)["signature"]
    assert signature == Signature(
        (TensorInfo("features", (5,), "float32"), TensorInfo("ids", (3,), "int32")),
        (TensorInfo("progression", (1,), "float32"), TensorInfo("risk", (2,), "float32")),
    )


def test_serving_multitask_columnar_round_trip_with_integer_ids(multitask, multitask_served):
    artifact, base, name = multitask_served
    x = multitask.eval_dataset.x
    with ColumnarStandIn(base, name) as server:
        runner = ServingBackend(url=server.url, timeout_s=30).load(artifact, 1)
        try:
            out = runner.predict(x, batch_size=8)  # 13 samples: 2 requests, the last one padded
            one = runner.predict({"ids": x["ids"][0], "features": x["features"][0]})
            with pytest.raises(DatasetError, match="missing features"):
                runner.predict({"ids": x["ids"]})
        finally:
            runner.close()
    assert isinstance(out, dict) and sorted(out) == ["progression", "risk"]
    assert max(max_diff(out, keras_outputs(multitask, x)).values()) < 1e-5
    assert one["risk"].shape == (1, 2) and one["progression"].shape == (1, 1)
    assert len(server.requests) == 3, "the bad input never reached the server"
    request = server.requests[0]
    assert sorted(request["inputs"]) == ["features", "ids"] and "instances" not in request
    assert all(type(v) is int for row in request["inputs"]["ids"] for v in row), "ids travel as JSON integers"
    assert len(request["inputs"]["ids"]) == 7 and isinstance(request["inputs"]["features"][0][0], float)
    assert "columnar" in runner.info["request_format"]


def test_serving_fcn_two_outputs_at_free_height_and_width(fcn, fcn_served):
    artifact, base, name = fcn_served
    image = np.random.default_rng(4).random((3, 20, 8, 3)).astype(np.float32)
    with ColumnarStandIn(base, name) as server:
        runner = ServingBackend(url=server.url, timeout_s=30).load(artifact, 1)
        try:
            out = runner.predict(image)
            invoke = runner.prepare(image[:1])
            invoke()
        finally:
            runner.close()
    assert runner.signature.input_names == ["image"] and runner.signature.inputs[0].shape == (None, None, 3)
    assert out["gray"].shape == (3, 20, 8, 1) and out["edges"].shape == (3, 20, 8, 2)
    assert max(max_diff(out, keras_outputs(fcn, image)).values()) < 1e-5
    assert np.asarray(server.requests[-1]["inputs"]["image"]).shape == (1, 20, 8, 3)


def test_serving_answers_by_name_or_as_a_bare_list():
    one = Signature((TensorInfo("a", (2,), "int32"), TensorInfo("b", (1,), "float32")),
                    (TensorInfo("score", (1,), "float32"),))
    np.testing.assert_array_equal(parse_answer(one, {"outputs": [[0.5], [1.5]]})["score"], [[0.5], [1.5]])
    np.testing.assert_array_equal(parse_answer(one, {"outputs": {"score": [[2.0]]}})["score"], [[2.0]])
    two = Signature(one.inputs, (TensorInfo("p", (1,), "float32"), TensorInfo("q", (2,), "float32")))
    out = parse_answer(two, {"outputs": {"q": [[1, 2]], "p": [[3]]}})
    assert out["q"].dtype == np.float32 and out["q"].tolist() == [[1, 2]] and out["p"].tolist() == [[3]]
    rows = parse_answer(two, {"predictions": [{"p": [1], "q": [2, 3]}, {"p": [4], "q": [5, 6]}]})
    assert rows["q"].tolist() == [[2, 3], [5, 6]] and rows["p"].tolist() == [[1], [4]]
    with pytest.raises(ValueError, match="one unnamed output"):
        parse_answer(two, {"outputs": [[1]]})
    with pytest.raises(KeyError):
        parse_answer(two, {"outputs": {"p": [[1]]}})


def test_serving_answer_missing_an_output_is_one_line(multitask, multitask_served, monkeypatch):
    artifact, base, name = multitask_served
    with ColumnarStandIn(base, name) as server:
        real = server.predict
        monkeypatch.setattr(server, "predict", lambda request: {"outputs": {"risk": real(request)["outputs"]["risk"]}})
        runner = ServingBackend(url=server.url, timeout_s=30).load(artifact, 1)
        try:
            with pytest.raises(ServingError) as info:
                runner.predict(multitask.eval_dataset.x)
        finally:
            runner.close()
    message = str(info.value)
    assert "\n" not in message and "without float 'outputs' for progression, risk" in message
    assert info.value.kind == "bad-answer"


# ---- graphopt -------------------------------------------------------------------------------------
def test_graphopt_keeps_every_input_and_output(multitask):
    optimized = multitask.runnable("graphopt")
    (stage,) = optimized.artifact.metadata["stages"]
    assert stage["max_abs_diff"] <= 1e-4 and stage["ops_after"] < stage["ops_before"]
    assert "GatherV2" in stage["op_types_after"], "the embedding lookup survives"
    assert optimized.signature.input_names == ["features", "ids"]
    assert optimized.signature.input("ids").dtype == "int32"
    x = multitask.eval_dataset.x
    diffs = max_diff(optimized.predict(x), keras_outputs(multitask, x))
    assert max(diffs.values()) < 1e-5, diffs


def test_graphopt_probes_free_axes_and_integer_inputs_without_data(multitask, fcn):
    _, recipe = fcn.variants.stage("graphopt")
    logs: list[str] = []
    for wb in (fcn, multitask):
        result, stats = recipe.apply(wb.source, None, {}, logs.append)  # no training data: random probes
        assert stats["max_abs_diff"] <= 1e-4
        assert result.signature.input_names == sorted(wb.source.signature.input_names)
        assert result.signature.output_names == sorted(wb.source.signature.output_names)
    assert result.signature.input("ids").dtype == "int32"
    assert len(logs) == 2 and all(line.startswith("graphopt: ") for line in logs)


def test_graphopt_fcn_runs_at_any_height_and_width(fcn):
    optimized = fcn.runnable("graphopt")
    image = np.random.default_rng(5).random((2, 20, 8, 3)).astype(np.float32)
    out = optimized.predict(image)
    assert out["gray"].shape == (2, 20, 8, 1) and out["edges"].shape == (2, 20, 8, 2)
    assert max(max_diff(out, keras_outputs(fcn, image)).values()) < 1e-5


def test_graphopt_names_the_output_that_changed():
    from pytest_tfopt.variants.graphopt import _largest_difference

    expected = {"risk": np.zeros((2, 2)), "progression": np.zeros((2, 1))}
    assert _largest_difference(expected, {k: v + 1e-6 for k, v in expected.items()})[2] is True
    worst, diff, close = _largest_difference(expected, {"risk": expected["risk"], "progression": expected["progression"] + 0.5})
    assert (worst, diff, close) == ("progression", 0.5, False)
    assert _largest_difference(expected, {"risk": np.zeros((2, 3)), "progression": expected["progression"]})[2] is False
