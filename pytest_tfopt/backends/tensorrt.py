"""TensorRT backend: tf2onnx → ONNX for TensorRT → engine on an NVIDIA GPU.

TF-TRT is gone from pip TensorFlow (2.18+), so the route is the ONNX one. Stages:

1. **ONNX for TensorRT** (no GPU needed, :func:`onnx_for_tensorrt`). TensorRT 10/11 networks
   are *strongly typed*: the precision is in the graph, not in builder flags.

   * ``fp32``: the tf2onnx graph;
   * ``float16``: every float tensor and initializer inside the graph is FP16; the graph
     input and output stay FP32 with a ``Cast`` at each end (``keep_io_types=True``), so every
     runner feeds and returns fp32 host arrays and the two casts cost one tiny layer each;
   * ``int8``: explicit Q/DQ from ``onnxruntime.quantization.quantize_static`` on the same
     calibration samples as the other backends: symmetric int8 activations and per-channel
     symmetric int8 weights (zero points 0, as TensorRT requires), Q/DQ pairs on the weights
     themselves (``AddQDQPairToWeight``), one dedicated pair per consumer
     (``DedicatedQDQPair``), float biases (``QuantizeBias=False``), Relu/Clip kept in the
     graph (``QDQKeepRemovableActivations``) and no Q/DQ on the outputs of Conv/Gemm/MatMul,
     which ORT's quantizer notes are not recommended for TensorRT. See :data:`TRT_QDQ_OPTIONS`.

2. **Engine** (needs ``tensorrt`` ≥ 10, ``cuda-python`` and a GPU, :func:`build_engine`): a
   ``STRONGLY_TYPED`` network from ``trt.OnnxParser``, one optimization profile with a dynamic
   batch of 1…``max_batch``, a workspace limit, ``build_serialized_network``. The engine is the
   artifact, so the artifact cache holds it; :meth:`TensorRTBackend.versions` puts the TensorRT
   version, GPU name and compute capability in the cache key (engines are not portable).

3. **Run**: :class:`TensorRTRunner` (TensorRT runtime + ``cuda.bindings.runtime`` device
   memory), or, when the ``tensorrt`` Python package is absent but ``onnxruntime-gpu`` has the
   ``TensorrtExecutionProvider``, the ONNX bytes are the artifact and ONNX Runtime builds and
   caches the engine (:class:`OrtTensorRTRunner`, engine cache under
   ``TFOPT_TRT_ENGINE_CACHE``/:func:`engine_cache_key`). ``Runner.info["route"]`` says which.

Settings: ``TFOPT_ONNX_OPSET`` (default 17), ``TFOPT_TRT_WORKSPACE_MB`` (1024),
``TFOPT_TRT_MAX_BATCH`` (64), ``TFOPT_TRT_ENGINE_CACHE`` (ORT route engine directory).
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..cache import cache_key
from ..dataset import Dataset
from ..errors import BackendUnavailable, ConversionError, DatasetError, UsageError
from ..models import SourceModel
from . import Backend, Runner, tflite_only_reason
from .onnx import (
    _ORT_TYPES,
    OnnxRuntimeRunner,
    _first_line,
    _input_dtype,
    _preprocessed,
    _quiet,
    _reader,
    missing_packages,
    opset_from_env,
    quantize,
    to_onnx,
)
from .tf import check_batch, predict_in_batches

PRECISIONS = ("fp32", "float16", "int8")
ROUTE_TENSORRT = "tensorrt-python"
ROUTE_ORT = "onnxruntime-tensorrt-ep"
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_MAX_BATCH = 64
WORKSPACE_ENV, MAX_BATCH_ENV, ENGINE_CACHE_ENV = "TFOPT_TRT_WORKSPACE_MB", "TFOPT_TRT_MAX_BATCH", "TFOPT_TRT_ENGINE_CACHE"
INT8_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool")
# onnxruntime.quantization extra_options for a TensorRT Q/DQ graph (see the module docstring).
TRT_QDQ_OPTIONS: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "AddQDQPairToWeight": True,
    "DedicatedQDQPair": True,
    "QuantizeBias": False,
    "QDQKeepRemovableActivations": True,
    "ForceQuantizeNoInputCheck": True,
    "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1, "MatMul": 1},
    "OpTypesToExcludeOutputQuantization": ["Conv", "ConvTranspose", "Gemm", "MatMul"],
}
_REMEDY = "try another variant or opset (TFOPT_ONNX_OPSET), or run it on backend onnxruntime"


# ---- stage 1: ONNX for TensorRT (GPU-free) -----------------------------------------------------
def qdq_int8(proto: Any, calibration: Dataset | None, settings: dict[str, str]) -> bytes:
    """``proto`` with explicit symmetric int8 Q/DQ (TensorRT style), MinMax-calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibration is None or len(calibration) == 0:
        raise DatasetError("int8 needs calibration data but the calibration set is empty: give tfopt_dataset training samples")
    name, dtype = _input_dtype(proto)
    with tempfile.TemporaryDirectory(prefix="tfopt-trt-") as tmp:
        model_in = _preprocessed(proto, tmp, settings)
        out = os.path.join(tmp, "int8.qdq.onnx")
        with _quiet("root", "onnxruntime"):
            quantize_static(
                model_in, out, _reader(name, calibration, dtype), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(INT8_OP_TYPES), per_channel=True, reduce_range=False,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, extra_options=dict(TRT_QDQ_OPTIONS),
            )
        with open(out, "rb") as fh:
            content = fh.read()
    settings.update(
        quantizer="onnxruntime.quantization.quantize_static", format="QDQ (explicit, symmetric)", per_channel="True",
        activation_type="QInt8", weight_type="QInt8", calibrate_method="MinMax",
        calibration=f"{len(calibration)} samples", extra_options=", ".join(sorted(TRT_QDQ_OPTIONS)),
    )
    return content


def onnx_for_tensorrt(source: SourceModel, precision: str, calibration: Dataset | None, opset: int,
                      settings: dict[str, str] | None = None) -> bytes:
    """ONNX bytes a strongly typed TensorRT network builds ``precision`` from (see the module docstring).

    ``settings`` (optional) receives what was done, for the artifact's metadata.
    """
    if precision not in PRECISIONS:
        raise BackendUnavailable(_unsupported(precision))
    settings = {} if settings is None else settings
    settings.setdefault("opset", str(opset))
    proto = to_onnx(source, opset, backend="tensorrt")
    try:
        if precision == "int8":
            return qdq_int8(proto, calibration, settings)
        content = quantize(proto, precision, None, settings)  # fp32 as is; float16 with fp32 I/O + casts
        if precision == "float16":
            settings["io_types"] = "float32 (Cast to/from float16 at the graph boundary)"
        return content
    except (BackendUnavailable, ConversionError, DatasetError):
        raise
    except Exception as exc:
        raise ConversionError(
            f"backend 'tensorrt' could not make the {precision} ONNX graph of {source.name}: {_first_line(exc)} ({_REMEDY})"
        ) from None


def onnx_precision(content: bytes) -> str:
    """``int8`` for a Q/DQ graph, ``float16`` for one with FP16 initializers, else ``fp32``."""
    import onnx

    proto = onnx.load_from_string(content)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return "float16"
    return "fp32"


def engine_cache_key(onnx_bytes: bytes, precision: str, trt_version: str, gpu_name: str, compute_capability: str,
                     workspace_bytes: int, max_batch: int = DEFAULT_MAX_BATCH) -> str:
    """Key (32 hex digits) of the engine TensorRT builds from ``onnx_bytes`` on this GPU and TensorRT.

    An engine only runs on the TensorRT version and GPU model (compute capability) it was built on,
    and its tactics depend on the workspace limit (bytes) and the batch profile.
    """
    return cache_key({
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(), "precision": precision, "tensorrt": trt_version,
        "gpu": gpu_name, "compute_capability": compute_capability, "workspace_bytes": int(workspace_bytes),
        "max_batch": int(max_batch),
    })


def _unsupported(variant: str) -> str:
    return (
        f"variant {variant!r} is not available on backend 'tensorrt': it builds {', '.join(PRECISIONS)} engines "
        "(strongly typed: FP16 ONNX graph, explicit Q/DQ int8); use onnxruntime or tflite for "
        f"{variant}"
    )


def describe_parser_errors(errors: list[Any], precision: str) -> str:
    """One line for the TensorRT ONNX parser's ``errors`` (``IParserError``): the first node, op and reason."""
    if not errors:
        return f"backend 'tensorrt': the TensorRT ONNX parser refused the {precision} graph without saying why ({_REMEDY})"
    err = errors[0]

    def get(attr: str, default: Any = "") -> Any:
        fn = getattr(err, attr, None)
        try:
            return fn() if callable(fn) else default
        except Exception:
            return default

    node, name, op = get("node", -1), get("node_name"), get("node_operator")
    where = f"node {node}" if isinstance(node, int) and node >= 0 else "the graph"
    where += f" {name!r}" if name else ""
    where += f" ({op})" if op else ""
    reason = (str(get("desc") or "no description").strip().splitlines() or ["?"])[0][:200]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"backend 'tensorrt': the TensorRT ONNX parser refused {where} in the {precision} graph: {reason}{more} ({_REMEDY})"


# ---- the machine: GPU, packages, route ---------------------------------------------------------
@dataclass(frozen=True)
class Gpu:
    """The first visible NVIDIA GPU: marketing name and compute capability (e.g. ``"8.6"``)."""

    name: str
    compute_capability: str


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a dotted name whose parent package is missing
        return False


def has_cuda_python() -> bool:
    return _has_module("cuda.bindings.runtime") or _has_module("cuda.cudart")


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # cuda-python < 12.6
    return runtime


def ort_has_tensorrt_ep() -> bool:
    if not _has_module("onnxruntime"):
        return False
    import onnxruntime as ort

    return "TensorrtExecutionProvider" in ort.get_available_providers()


def probe_gpu() -> tuple[Gpu | None, str]:
    """The first GPU CUDA would use, or ``None`` and why none is visible (one phrase)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return None, f"no NVIDIA GPU is visible (CUDA_VISIBLE_DEVICES={visible!r} hides them all)"
    smi = shutil.which("nvidia-smi")
    smi_note = "nvidia-smi not found"
    if smi:
        cmd = [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"]
        if visible:
            cmd += ["-i", visible.split(",")[0].strip()]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
            if lines and "," in lines[0]:
                name, cc = (part.strip() for part in lines[0].rsplit(",", 1))
                return Gpu(name, cc), ""
            smi_note = f"nvidia-smi failed: {((out.stderr or out.stdout).strip().splitlines() or ['no GPU listed'])[0][:100]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            smi_note = f"nvidia-smi failed: {type(exc).__name__}"
    if has_cuda_python():  # containers can have the device but not nvidia-smi
        try:
            cudart = _cudart()
            err, props = cudart.cudaGetDeviceProperties(0)
            if err == cudart.cudaError_t.cudaSuccess:
                name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
                return Gpu(name.strip("\x00 "), f"{props.major}.{props.minor}"), ""
        except Exception:
            pass
    devices = "" if glob.glob("/dev/nvidia[0-9]*") else "no /dev/nvidia0; "
    return None, f"no NVIDIA GPU is visible ({devices}{smi_note})"


def tensorrt_version() -> str:
    """The installed ``tensorrt`` Python package's version ('' when absent), without importing it."""
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu12"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{name}={raw!r} is not a positive integer: e.g. {name}={default}")
    return int(raw)


# ---- stage 2: engine (tensorrt + GPU) ----------------------------------------------------------
def _logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that keeps errors (for one-line messages) and drops info chatter."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)

    return Logger()


def build_engine(onnx_bytes: bytes, precision: str, workspace_bytes: int, max_batch: int) -> bytes:
    """A serialized engine for ``onnx_bytes``: strongly typed network, dynamic batch 1…``max_batch``."""
    import tensorrt as trt

    major = int(str(trt.__version__).split(".")[0])
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if major < 10 or (flag is None and major < 11):
        raise BackendUnavailable(
            f"backend 'tensorrt' needs TensorRT 10 or newer (strongly typed networks), found {trt.__version__}: "
            "pip install -U tensorrt"
        )
    logger = _logger(trt)
    builder = trt.Builder(logger)
    # TensorRT 11 networks are always strongly typed; 10 needs the flag (its precision flags are not used)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        raise ConversionError(describe_parser_errors([parser.get_error(i) for i in range(parser.num_errors)], precision))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        sample = tuple(int(d) for d in tensor.shape)[1:]
        if any(d < 0 for d in sample):
            raise ConversionError(
                f"backend 'tensorrt': input {tensor.name!r} has free axes besides the batch ({tensor.shape}): "
                "give the model a fixed per-sample input shape"
            )
        opt = min(max_batch, DEFAULT_MAX_BATCH)
        profile.set_shape(tensor.name, (1, *sample), (opt, *sample), (max_batch, *sample))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        why = (logger.errors or ["no error was logged"])[-1].strip().splitlines()[0][:200]
        raise ConversionError(f"backend 'tensorrt': TensorRT could not build the {precision} engine: {why} ({_REMEDY})")
    return bytes(serialized)


# ---- stage 3: runners --------------------------------------------------------------------------
def _cuda(result: tuple, what: str) -> Any:
    """The value of a ``cuda-python`` call (``(err, *values)``); a ConversionError naming ``what`` on failure."""
    cudart = _cudart()
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise ConversionError(f"backend 'tensorrt': CUDA {what} failed: {cudart.cudaGetErrorName(err)[1]!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _free(cudart: Any, pointers: list[int], stream: Any) -> None:
    for ptr in pointers:
        cudart.cudaFree(ptr)
    if stream is not None:
        cudart.cudaStreamDestroy(stream)


class TensorRTRunner(Runner):
    """A deserialized engine with device buffers for its largest batch; fp32 host arrays in and out.

    ``prepare`` copies the batch to the GPU once; its invocation is ``execute_async_v3`` plus a
    stream synchronize (GPU compute only, no host transfers).
    """

    def __init__(self, engine_bytes: bytes, name: str = "model", info: dict[str, Any] | None = None) -> None:
        import tensorrt as trt

        cudart = _cudart()
        self.name = name
        self._logger = _logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            why = (self._logger.errors or ["not a TensorRT engine"])[-1].splitlines()[0][:200]
            raise ConversionError(
                f"backend 'tensorrt': cannot load the {name} engine: {why} (built by another TensorRT or GPU? "
                "run with --tfopt-rebuild)"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not outputs:
            raise ConversionError(f"backend 'tensorrt': the engine has inputs {inputs} and outputs {outputs}: one of each is supported")
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(self._engine.get_tensor_shape(self._input))
        self.input_shape = tuple(None if d < 0 else int(d) for d in shape[1:])
        self.max_batch = int(self._engine.get_tensor_profile_shape(self._input, 0)[2][0])
        self._in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._input)))
        self._out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._output)))
        self._context = self._engine.create_execution_context()
        sample = tuple(d or 1 for d in self.input_shape)
        self._context.set_input_shape(self._input, (self.max_batch, *sample))
        out_shape = tuple(self._context.get_tensor_shape(self._output))
        self._stream = _cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._d_in = _cuda(cudart.cudaMalloc(self.max_batch * int(np.prod(sample)) * self._in_dtype.itemsize), "cudaMalloc")
        self._d_out = _cuda(cudart.cudaMalloc(int(np.prod(out_shape)) * self._out_dtype.itemsize), "cudaMalloc")
        self._finalizer = weakref.finalize(self, _free, cudart, [self._d_in, self._d_out], self._stream)
        self._context.set_tensor_address(self._input, int(self._d_in))
        self._context.set_tensor_address(self._output, int(self._d_out))
        self.info: dict[str, Any] = {**(info or {}), "route": ROUTE_TENSORRT, "tensorrt": trt.__version__,
                                     "max_batch": self.max_batch, "latency_scope": "GPU compute (input on device)"}

    def _load(self, x: np.ndarray) -> tuple[int, ...]:
        cudart = _cudart()
        if len(x) > self.max_batch:
            raise DatasetError(
                f"batch of {len(x)} exceeds the engine's profile (max batch {self.max_batch}): "
                f"use a smaller batch or set {MAX_BATCH_ENV}"
            )
        host = np.ascontiguousarray(x, dtype=self._in_dtype)
        self._context.set_input_shape(self._input, host.shape)
        _cuda(cudart.cudaMemcpyAsync(self._d_in, host.ctypes.data, host.nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream), "copy to GPU")
        _cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return tuple(self._context.get_tensor_shape(self._output))

    def _execute(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise ConversionError(f"backend 'tensorrt': executing the {self.name} engine failed")
        _cuda(_cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _run(self, x: np.ndarray) -> np.ndarray:
        cudart = _cudart()
        out_shape = self._load(x)
        self._execute()
        out = np.empty(out_shape, self._out_dtype)
        _cuda(cudart.cudaMemcpy(out.ctypes.data, self._d_out, out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost),
              "copy from GPU")
        return out.astype(np.float32, copy=False)

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        limit = min(batch_size or self.max_batch, self.max_batch)
        return predict_in_batches(check_batch(x, self.input_shape, self.name), limit, self._run)

    def prepare(self, x: np.ndarray) -> Callable[[], None]:
        self._load(check_batch(x, self.input_shape, self.name))
        return self._execute


class OrtTensorRTRunner(OnnxRuntimeRunner):
    """ONNX bytes on ONNX Runtime's TensorRT execution provider (engine built and cached by ORT).

    Only the session differs from :class:`~pytest_tfopt.backends.onnx.OnnxRuntimeRunner`: running is the same.
    """

    def __init__(self, content: bytes, threads: int, name: str, provider_options: dict[str, Any],
                 info: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort

        self.name = name
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        providers = [("TensorrtExecutionProvider", provider_options), "CUDAExecutionProvider", "CPUExecutionProvider"]
        self._session = ort.InferenceSession(content, sess_options=options, providers=providers)
        used = self._session.get_providers()
        if "TensorrtExecutionProvider" not in used:
            raise BackendUnavailable(
                f"backend 'tensorrt': onnxruntime could not start TensorrtExecutionProvider (it fell back to {used}): "
                "install the TensorRT libraries it needs (pip install tensorrt-libs, or the TensorRT tarball on LD_LIBRARY_PATH)"
            )
        graph_input = self._session.get_inputs()[0]
        self._input, self._output = graph_input.name, self._session.get_outputs()[0].name
        self._dtype = _ORT_TYPES.get(graph_input.type, np.float32)
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in graph_input.shape[1:])
        self.info = {**(info or {}), "route": ROUTE_ORT, "threads": threads, "providers": used,
                     "runtime": f"onnxruntime {ort.__version__}",
                     "provider_options": {k: str(v) for k, v in provider_options.items()}}


def ort_provider_options(precision: str, cache_path: str, workspace_bytes: int) -> dict[str, Any]:
    """``TensorrtExecutionProvider`` options for a ``precision`` ONNX graph, caching engines in ``cache_path``."""
    return {
        "trt_fp16_enable": precision == "float16",
        "trt_int8_enable": precision == "int8",  # explicit Q/DQ: no calibration table, TensorRT reads the scales
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache_path,
        "trt_timing_cache_enable": True,
        "trt_max_workspace_size": int(workspace_bytes),
    }


# ---- the backend -------------------------------------------------------------------------------
class TensorRTBackend(Backend):
    """TensorRT on an NVIDIA GPU (TensorRT Python API, or ONNX Runtime's TensorRT execution provider)."""

    name = "tensorrt"

    def __init__(self, opset: int | None = None, workspace_bytes: int | None = None, max_batch: int | None = None,
                 engine_cache_dir: str | None = None) -> None:
        self._opset = opset
        self._workspace = workspace_bytes
        self._max_batch = max_batch
        self._engine_cache_dir = engine_cache_dir
        self._probed: tuple[Gpu | None, str] | None = None

    # settings (read when used, so env vars set by a conftest apply)
    @property
    def opset(self) -> int:
        return int(self._opset) if self._opset is not None else opset_from_env()

    @property
    def workspace_bytes(self) -> int:
        return self._workspace or _env_int(WORKSPACE_ENV, DEFAULT_WORKSPACE_MB) << 20

    @property
    def max_batch(self) -> int:
        return self._max_batch or _env_int(MAX_BATCH_ENV, DEFAULT_MAX_BATCH)

    @property
    def engine_cache_dir(self) -> str:
        return (self._engine_cache_dir or os.environ.get(ENGINE_CACHE_ENV)
                or os.path.join(tempfile.gettempdir(), "pytest-tfopt-trt-engines"))

    def gpu(self) -> tuple[Gpu | None, str]:
        """The GPU (probed once per backend instance) and, without one, why."""
        if self._probed is None:
            self._probed = probe_gpu()
        return self._probed

    @property
    def route(self) -> str | None:
        """Which runtime builds and runs engines here, ``None`` when neither is installed."""
        if _has_module("tensorrt") and has_cuda_python():
            return ROUTE_TENSORRT
        if ort_has_tensorrt_ep():
            return ROUTE_ORT
        return None

    @property
    def artifact_suffix(self) -> str:  # type: ignore[override]
        return ".onnx" if self.route == ROUTE_ORT else ".engine"

    def unavailable_reason(self) -> str | None:
        missing = []
        gpu, why = self.gpu()
        if gpu is None:
            missing.append(why)
        onnx_missing = missing_packages()
        if onnx_missing:
            missing.append(f"{', '.join(map(repr, onnx_missing))} not installed (pip install tf2onnx onnx onnxruntime)")
        if self.route is None:
            parts = []
            if not _has_module("tensorrt"):
                parts.append("the Python package 'tensorrt' is not installed (pip install tensorrt)")
            if not has_cuda_python():
                parts.append("'cuda-python' is not installed (pip install cuda-python)")
            missing.append("; ".join(parts) + ", or instead of " + ("both" if len(parts) > 1 else "it")
                           + ": onnxruntime-gpu with TensorrtExecutionProvider (pip install onnxruntime-gpu)")
        if missing:
            return "backend 'tensorrt' is not available on this machine: " + "; ".join(missing)
        return None

    def unsupported_reason(self, variant: str, params: dict[str, Any] | None = None) -> str | None:
        if variant not in PRECISIONS:
            return _unsupported(variant)
        return tflite_only_reason(self.name, variant, params)

    def _trt_version(self, route: str | None) -> str:
        if route == ROUTE_ORT:
            from importlib import metadata

            try:
                ort = metadata.version("onnxruntime-gpu")
            except metadata.PackageNotFoundError:
                ort = "?"
            return f"onnxruntime-gpu {ort} + TensorRT {tensorrt_version() or 'system'}"
        return tensorrt_version()

    def versions(self) -> dict[str, str]:
        """Cache-key material: an engine is only valid for this TensorRT, GPU model, opset and profile."""
        gpu, _ = self.gpu()
        route = self.route
        out = {
            "onnx-opset": str(self.opset), "tensorrt-route": str(route), "tensorrt": self._trt_version(route),
            "gpu": gpu.name if gpu else "none", "compute-capability": gpu.compute_capability if gpu else "none",
            "trt-workspace-bytes": str(self.workspace_bytes), "trt-max-batch": str(self.max_batch),
        }
        out.update(tfenv.dist_versions("tf2onnx", "onnxruntime", "onnxruntime-gpu", "onnx", "onnxconverter-common", "cuda-python"))
        return out

    def build(self, source: SourceModel, recipe: Any, calibration: Any, params: dict[str, Any]) -> Artifact:
        precision = recipe.name
        self.refuse_unsupported(precision, params)
        if calibration is not None:
            source.check_inputs(calibration.x, "calibration data")
        route, (gpu, why) = self.route, self.gpu()
        if route is None or gpu is None:
            raise BackendUnavailable(self.unavailable_reason() or why)
        settings: dict[str, str] = {"opset": str(self.opset)}
        onnx_bytes = onnx_for_tensorrt(source, precision, calibration, self.opset, settings)
        trt_version = self._trt_version(route)
        key = engine_cache_key(onnx_bytes, precision, trt_version, gpu.name, gpu.compute_capability,
                               self.workspace_bytes, self.max_batch)
        meta = {
            "variant": precision, "precision": precision, "converter": "tf2onnx", "route": route,
            "settings": {**settings, "workspace_bytes": str(self.workspace_bytes), "max_batch": str(self.max_batch)},
            "tensorrt": trt_version, "gpu": gpu.name, "compute_capability": gpu.compute_capability,
            "engine_cache_key": key, "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        }
        if route == ROUTE_ORT:  # ORT builds the engine on load and caches it under the key
            return Artifact(onnx_bytes, meta, ".onnx")
        engine = build_engine(onnx_bytes, precision, self.workspace_bytes, self.max_batch)
        return Artifact(engine, meta, ".engine")

    def load(self, artifact: Artifact, threads: int) -> Runner:
        gpu, why = self.gpu()
        if gpu is None:
            raise BackendUnavailable(f"backend 'tensorrt' is not available on this machine: {why}")
        meta = artifact.metadata
        built_on = meta.get("compute_capability")
        if built_on and built_on != gpu.compute_capability:
            raise BackendUnavailable(
                f"backend 'tensorrt': the {artifact.variant} engine was built for compute capability {built_on}, this GPU "
                f"({gpu.name}) is {gpu.compute_capability}: run with --tfopt-rebuild"
            )
        info = {"threads": threads, "gpu": gpu.name, "compute_capability": gpu.compute_capability}
        # the route is part of the cache key, so an artifact without a known suffix (memory probe) is this route's
        if artifact.suffix == ".onnx" or (artifact.suffix != ".engine" and self.route == ROUTE_ORT):
            precision = meta.get("precision") or onnx_precision(artifact.content)
            key = meta.get("engine_cache_key") or engine_cache_key(
                artifact.content, precision, self._trt_version(ROUTE_ORT), gpu.name, gpu.compute_capability,
                self.workspace_bytes, self.max_batch)
            cache_path = os.path.join(self.engine_cache_dir, key)
            os.makedirs(cache_path, exist_ok=True)
            info.update(precision=precision, tensorrt=self._trt_version(ROUTE_ORT), engine_cache=cache_path)
            options = ort_provider_options(precision, cache_path, self.workspace_bytes)
            return OrtTensorRTRunner(artifact.content, threads, artifact.variant, options, info)
        info.update(precision=meta.get("precision", artifact.variant))
        return TensorRTRunner(artifact.content, artifact.variant, info)
