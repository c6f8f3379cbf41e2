"""TensorRT backend: tf2onnx → ONNX for TensorRT → engine on an NVIDIA GPU.

TF-TRT is gone from pip TensorFlow (2.18+), so the route is the ONNX one. Stages:

1. **ONNX for TensorRT** (no GPU needed, :func:`onnx_for_tensorrt`). TensorRT 10/11 networks
   are *strongly typed*: the precision is in the graph, not in builder flags.

   * ``fp32``: the tf2onnx graph;
   * ``float16``: every float tensor and initializer inside the graph is FP16; the graph
     inputs and outputs stay FP32 with a ``Cast`` at each end (``keep_io_types=True``), so every
     runner feeds and returns fp32 host arrays and the casts cost one tiny layer each;
   * ``int8``: explicit Q/DQ from ``onnxruntime.quantization.quantize_static`` on the same
     calibration samples as the other backends: symmetric int8 activations and per-channel
     symmetric int8 weights (zero points 0, as TensorRT requires), Q/DQ pairs on the weights
     themselves (``AddQDQPairToWeight``), one dedicated pair per consumer
     (``DedicatedQDQPair``), float biases (``QuantizeBias=False``), Relu/Clip kept in the
     graph (``QDQKeepRemovableActivations``) and no Q/DQ on the outputs of Conv/Gemm/MatMul,
     which ORT's quantizer notes are not recommended for TensorRT. See :data:`TRT_QDQ_OPTIONS`.
     Calibration feeds every graph input by name (:func:`calibration_reader`); integer inputs
     (ids) are fed but never quantized.

   Inputs and outputs keep the model's names (tf2onnx names them after the serving function's).

2. **Engine** (needs ``tensorrt`` ≥ 10, ``cuda-python`` and a GPU, :func:`build_engine`): a
   ``STRONGLY_TYPED`` network from ``trt.OnnxParser``, one optimization profile giving every input
   by name a batch of 1…``max_batch`` and free axes (e.g. a fully convolutional model's height and
   width) of 1…``max_axis``, tuned at the calibration data's size (:func:`optimization_profile`),
   a workspace limit, ``build_serialized_network``. The engine is the artifact, so the artifact
   cache holds it; :meth:`TensorRTBackend.versions` puts the TensorRT version, GPU name, compute
   capability and profile limits in the cache key (engines are not portable).

3. **Run**: :class:`TensorRTRunner` (TensorRT runtime + ``cuda.bindings.runtime`` device
   memory; tensors bound by name, every input shaped from its data), or, when the ``tensorrt``
   Python package is absent but ``onnxruntime-gpu`` has the ``TensorrtExecutionProvider``, the
   ONNX bytes are the artifact and ONNX Runtime builds and caches the engine with the same profile
   (:class:`OrtTensorRTRunner`, engine cache under ``TFOPT_TRT_ENGINE_CACHE``/:func:`engine_cache_key`).
   ``Runner.info["route"]`` says which. Both take an array or a mapping name → array and return an
   array for a one-output model, else a dict by output name.

Settings: ``TFOPT_ONNX_OPSET`` (default 17), ``TFOPT_TRT_WORKSPACE_MB`` (1024),
``TFOPT_TRT_MAX_BATCH`` (64), ``TFOPT_TRT_MAX_AXIS`` (256: free non-batch axes; with the max batch
it bounds the engine's activation memory), ``TFOPT_TRT_ENGINE_CACHE`` (ORT route engine directory).
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..cache import cache_key
from ..dataset import Dataset
from ..errors import BackendUnavailable, ConversionError, DatasetError, UsageError
from ..models import SourceModel
from ..signature import Signature, TensorInfo, dtype_name, run_in_batches, shape_text
from . import Backend, Runner, tflite_only_reason
from .onnx import (
    OnnxRuntimeRunner,
    _first_line,
    _plain_name,
    _preprocessed,
    _quiet,
    _reader,
    calibration_reader,
    graph_feed,
    missing_packages,
    opset_from_env,
    quantize,
    to_onnx,
)

PRECISIONS = ("fp32", "float16", "int8")
ROUTE_TENSORRT = "tensorrt-python"
ROUTE_ORT = "onnxruntime-tensorrt-ep"
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_AXIS = 256
WORKSPACE_ENV, MAX_BATCH_ENV, ENGINE_CACHE_ENV = "TFOPT_TRT_WORKSPACE_MB", "TFOPT_TRT_MAX_BATCH", "TFOPT_TRT_ENGINE_CACHE"
MAX_AXIS_ENV = "TFOPT_TRT_MAX_AXIS"
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
def input_shapes(proto: Any) -> dict[str, tuple[int | None, ...]]:
    """Per-sample shape of each input of the ONNX graph (initializers excluded) by graph name; ``None``: free axis."""
    constants = {t.name for t in proto.graph.initializer}
    return {
        i.name: tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in i.type.tensor_type.shape.dim)[1:]
        for i in proto.graph.input if i.name not in constants
    }


def int8_calibration_reader(proto: Any, calibration: Dataset) -> Any:
    """An ``onnxruntime`` calibration reader feeding every input of ``proto`` by name, in its dtype.

    Integer inputs (ids) are fed like the others, so the model runs; the quantizer leaves them
    unquantized. A one-input graph goes through :func:`~pytest_tfopt.backends.onnx._reader`.
    """
    feed = graph_feed(proto, calibration.x)
    if len(feed) == 1:
        ((name, values),) = feed.items()
        return _reader(name, Dataset(values, name="calibration"), values.dtype)
    return calibration_reader(feed)


def qdq_int8(proto: Any, calibration: Dataset | None, settings: dict[str, str]) -> bytes:
    """``proto`` with explicit symmetric int8 Q/DQ (TensorRT style), MinMax-calibrated on ``calibration``.

    Every input is fed (by name) while calibrating; Q/DQ pairs go on float tensors only, so integer
    inputs (ids) and what they index stay as they are.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibration is None or len(calibration) == 0:
        raise DatasetError("int8 needs calibration data but the calibration set is empty: give tfopt_dataset training samples")
    reader = int8_calibration_reader(proto, calibration)
    with tempfile.TemporaryDirectory(prefix="tfopt-trt-") as tmp:
        model_in = _preprocessed(proto, tmp, settings)
        out = os.path.join(tmp, "int8.qdq.onnx")
        with _quiet("root", "onnxruntime"):
            quantize_static(
                model_in, out, reader, quant_format=QuantFormat.QDQ,
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


#: input name → (min, opt, max) shapes, batch axis first: one TensorRT optimization profile
Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def optimization_profile(inputs: Mapping[str, tuple[int | None, ...]], max_batch: int, max_axis: int = DEFAULT_MAX_AXIS,
                         data_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Profile:
    """The optimization profile for inputs name → per-sample shape (``None``: free axis).

    Batch: 1 … ``max_batch`` (opt ``max_batch``). A free axis: 1 … ``max_axis``, opt at the data's
    size on that axis (``data_shapes``: per-sample shapes, e.g. of the calibration samples) or at
    ``max_axis`` without data; data larger than ``max_axis`` raises the max to fit it. Fixed axes are
    fixed. The max shapes bound the engine's activation memory, which is why free axes have a limit.
    """
    profile: Profile = {}
    for name, shape in inputs.items():
        seen = tuple((data_shapes or {}).get(name, ()))
        if len(seen) != len(shape):
            seen = (None,) * len(shape)
        lo, opt, hi = [1], [min(max_batch, DEFAULT_MAX_BATCH)], [max_batch]
        for fixed, size in zip(shape, seen, strict=True):
            lo.append(fixed or 1)
            opt.append(fixed or size or max_axis)
            hi.append(fixed or max(max_axis, size or 0))
        profile[name] = (tuple(lo), tuple(opt), tuple(hi))
    return profile


def outside_profile(shapes: Mapping[str, tuple[int, ...]], profile: Mapping[str, Any]) -> str | None:
    """Why batch ``shapes`` (input name → shape, batch first) do not fit ``profile``, one line; ``None`` when they do."""
    for name, shape in shapes.items():
        lo, _, hi = (tuple(int(d) for d in s) for s in profile[name])
        fits = len(shape) == len(lo) and all(a <= d <= b for a, d, b in zip(lo, shape, hi, strict=True))
        if not fits:
            knob = MAX_BATCH_ENV if int(shape[0]) > hi[0] else MAX_AXIS_ENV
            return (f"input {name!r} has shape {shape_text(tuple(shape))} but the engine's profile allows "
                    f"{shape_text(lo)} to {shape_text(hi)}: use a smaller batch or input, or raise {knob}")
    return None


def profile_text(profile: Profile) -> dict[str, str]:
    """``ort_provider_options``-style strings of ``profile``: ``{"min": "ids:1x3,features:1x5", "opt": …, "max": …}``."""
    return {kind: ",".join(f"{name}:{'x'.join(str(d) for d in shapes[i])}" for name, shapes in profile.items())
            for i, kind in enumerate(("min", "opt", "max"))}


def engine_cache_key(onnx_bytes: bytes, precision: str, trt_version: str, gpu_name: str, compute_capability: str,
                     workspace_bytes: int, max_batch: int = DEFAULT_MAX_BATCH, profile: Profile | None = None) -> str:
    """Key (32 hex digits) of the engine TensorRT builds from ``onnx_bytes`` on this GPU and TensorRT.

    An engine only runs on the TensorRT version and GPU model (compute capability) it was built on,
    and its tactics depend on the workspace limit (bytes) and the optimization profile (``max_batch``,
    and ``profile`` when given: every input's min/opt/max shapes).
    """
    material: dict[str, Any] = {
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(), "precision": precision, "tensorrt": trt_version,
        "gpu": gpu_name, "compute_capability": compute_capability, "workspace_bytes": int(workspace_bytes),
        "max_batch": int(max_batch),
    }
    if profile is not None:
        material["profile"] = profile_text(profile)
    return cache_key(material)


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


def build_engine(onnx_bytes: bytes, precision: str, workspace_bytes: int, profile: Profile) -> bytes:
    """A serialized engine for ``onnx_bytes``: strongly typed network, one optimization ``profile`` (every input by name)."""
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
    shapes = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in profile:
            raise ConversionError(
                f"backend 'tensorrt': the parsed network has input {tensor.name!r}, the ONNX graph only "
                f"{', '.join(profile)} ({_REMEDY})"
            )
        shapes.set_shape(tensor.name, *profile[tensor.name])
    config.add_optimization_profile(shapes)
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


def _free(cudart: Any, buffers: dict[str, list[int]], stream: Any) -> None:
    for ptr, _ in buffers.values():
        cudart.cudaFree(ptr)
    if stream is not None:
        cudart.cudaStreamDestroy(stream)


def engine_bindings(engine: Any, input_mode: Any, nptype: Callable[[Any], Any]) -> tuple[Signature, dict[str, str], Profile]:
    """An engine's I/O tensors by name (``get_tensor_name``/``get_tensor_mode``).

    Returns the :class:`Signature` (names without a ``:0`` suffix and sorted, as the onnxruntime
    backend names them; per-sample shapes, ``None`` for dynamic axes; dtypes through ``nptype``, i.e.
    ``trt.nptype``), each name's engine tensor name, and every input's (min, opt, max) shapes of
    profile 0. ``input_mode`` is ``trt.TensorIOMode.INPUT``.
    """
    inputs, outputs, tensors, profile = [], [], {}, {}
    for i in range(engine.num_io_tensors):
        tensor = engine.get_tensor_name(i)
        name = _plain_name(tensor)
        tensors[name] = tensor
        shape = tuple(None if int(d) < 0 else int(d) for d in tuple(engine.get_tensor_shape(tensor))[1:])
        info = TensorInfo(name, shape, dtype_name(np.dtype(nptype(engine.get_tensor_dtype(tensor)))))
        if engine.get_tensor_mode(tensor) == input_mode:
            inputs.append(info)
            lo, opt, hi = engine.get_tensor_profile_shape(tensor, 0)
            profile[name] = (tuple(int(d) for d in lo), tuple(int(d) for d in opt), tuple(int(d) for d in hi))
        else:
            outputs.append(info)
    if not inputs or not outputs:
        raise ConversionError(f"backend 'tensorrt': the engine has inputs {[t.name for t in inputs]} and outputs "
                              f"{[t.name for t in outputs]}: it needs at least one of each")
    signature = Signature(tuple(sorted(inputs, key=lambda t: t.name)), tuple(sorted(outputs, key=lambda t: t.name)))
    return signature, tensors, profile


class TensorRTRunner(Runner):
    """A deserialized engine, every input and output bound by name; host arrays in, float32 arrays out.

    One device buffer per input and output, grown when a batch (or a free axis) needs more; before
    each run every input gets its batch's shape (``set_input_shape``: free axes from the data, within
    the engine's optimization profile). ``prepare`` copies the batch to the GPU once; its invocation
    is ``execute_async_v3`` plus a stream synchronize (GPU compute only, no host transfers).
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
        self.signature, self._tensors, self.profile = engine_bindings(self._engine, trt.TensorIOMode.INPUT, trt.nptype)
        self.input_shape = self.signature.inputs[0].shape  # the first input's, for callers of one-input models
        self.max_batch = min(hi[0] for _, _, hi in self.profile.values())
        self._context = self._engine.create_execution_context()
        self._stream = _cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, list[int]] = {}  # tensor name → [device pointer, bytes]; grown on demand
        self._finalizer = weakref.finalize(self, _free, cudart, self._buffers, self._stream)
        self.info: dict[str, Any] = {**(info or {}), "route": ROUTE_TENSORRT, "tensorrt": trt.__version__,
                                     "max_batch": self.max_batch, "latency_scope": "GPU compute (input on device)",
                                     "profile": profile_text(self.profile)}

    def _buffer(self, name: str, nbytes: int) -> int:
        """The device buffer of tensor ``name``, at least ``nbytes`` long, bound to the context."""
        cudart = _cudart()
        held = self._buffers.get(name)
        if held is None or held[1] < nbytes:
            if held is not None:
                cudart.cudaFree(held[0])
                del self._buffers[name]
            size = max(nbytes, 1)
            self._buffers[name] = [_cuda(cudart.cudaMalloc(size), "cudaMalloc"), size]
            self._context.set_tensor_address(self._tensors[name], int(self._buffers[name][0]))
        return self._buffers[name][0]

    def _load(self, feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """Copy ``feed`` (input name → batch) to the GPU; the output shapes by name."""
        cudart = _cudart()
        why = outside_profile({k: v.shape for k, v in feed.items()}, self.profile)
        if why:
            raise DatasetError(f"backend 'tensorrt' ({self.name}): {why}")
        hosts = {t.name: np.ascontiguousarray(feed[t.name], dtype=t.dtype) for t in self.signature.inputs}
        for name, host in hosts.items():
            if not self._context.set_input_shape(self._tensors[name], host.shape):
                raise DatasetError(f"backend 'tensorrt' ({self.name}): the engine refused shape "
                                   f"{shape_text(host.shape)} for input {name!r}")
            _cuda(cudart.cudaMemcpyAsync(self._buffer(name, host.nbytes), host.ctypes.data, host.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream), "copy to GPU")
        shapes = {}
        for t in self.signature.outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(self._tensors[t.name]))
            if any(d < 0 for d in shape):
                raise ConversionError(f"backend 'tensorrt': output {t.name!r} of {self.name} has a data-dependent "
                                      f"shape {shape}, which this runner does not support ({_REMEDY})")
            self._buffer(t.name, int(np.prod(shape)) * np.dtype(t.dtype).itemsize)
            shapes[t.name] = shape
        _cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return shapes

    def _execute(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise ConversionError(f"backend 'tensorrt': executing the {self.name} engine failed")
        _cuda(_cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = _cudart()
        shapes = self._load(feed)
        self._execute()
        outputs = {}
        for t in self.signature.outputs:
            out = np.empty(shapes[t.name], np.dtype(t.dtype))
            _cuda(cudart.cudaMemcpy(out.ctypes.data, self._buffers[t.name][0], out.nbytes,
                                    cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost), "copy from GPU")
            outputs[t.name] = out.astype(np.float32, copy=False)
        return outputs

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        feed = self.signature.feed(x, "input", self.name)
        limit = min(batch_size or self.max_batch, self.max_batch)
        return self.signature.result(run_in_batches(feed, limit, self._run))

    def prepare(self, x: Any) -> Callable[[], None]:
        self._load(self.signature.feed(x, "input", self.name))
        return self._execute


def ort_tensorrt_session(content: bytes, threads: int, provider_options: dict[str, Any]) -> Any:
    """An ``onnxruntime`` session of ``content`` on the TensorRT execution provider; BackendUnavailable if it falls back."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    providers = [("TensorrtExecutionProvider", provider_options), "CUDAExecutionProvider", "CPUExecutionProvider"]
    session = ort.InferenceSession(content, sess_options=options, providers=providers)
    used = session.get_providers()
    if "TensorrtExecutionProvider" not in used:
        raise BackendUnavailable(
            f"backend 'tensorrt': onnxruntime could not start TensorrtExecutionProvider (it fell back to {used}): "
            "install the TensorRT libraries it needs (pip install tensorrt-libs, or the TensorRT tarball on LD_LIBRARY_PATH)"
        )
    return session


class OrtTensorRTRunner(OnnxRuntimeRunner):
    """An ONNX Runtime session on the TensorRT execution provider (:func:`ort_tensorrt_session`; ORT builds and caches the engine).

    Only the session differs from :class:`~pytest_tfopt.backends.onnx.OnnxRuntimeRunner`: running,
    every input and output by name, is the same.
    """

    def __init__(self, session: Any, name: str, info: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort

        self.name = name
        self._session = session
        self.input_shape = self.signature.inputs[0].shape  # the first input's, for callers of one-input models
        self.info = {**(info or {}), "route": ROUTE_ORT, "providers": session.get_providers(),
                     "runtime": f"onnxruntime {ort.__version__}"}


def ort_provider_options(precision: str, cache_path: str, workspace_bytes: int,
                         profile: Profile | None = None) -> dict[str, Any]:
    """``TensorrtExecutionProvider`` options for a ``precision`` ONNX graph, caching engines in ``cache_path``.

    ``profile`` (every input by name) becomes ``trt_profile_min/opt/max_shapes``, the same
    optimization profile the TensorRT Python route builds, so ORT builds one engine up front instead
    of one per new input shape.
    """
    options: dict[str, Any] = {
        "trt_fp16_enable": precision == "float16",
        "trt_int8_enable": precision == "int8",  # explicit Q/DQ: no calibration table, TensorRT reads the scales
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache_path,
        "trt_timing_cache_enable": True,
        "trt_max_workspace_size": int(workspace_bytes),
    }
    if profile:
        options.update({f"trt_profile_{kind}_shapes": text for kind, text in profile_text(profile).items()})
    return options


# ---- the backend -------------------------------------------------------------------------------
class TensorRTBackend(Backend):
    """TensorRT on an NVIDIA GPU (TensorRT Python API, or ONNX Runtime's TensorRT execution provider)."""

    name = "tensorrt"

    def __init__(self, opset: int | None = None, workspace_bytes: int | None = None, max_batch: int | None = None,
                 engine_cache_dir: str | None = None, max_axis: int | None = None) -> None:
        self._opset = opset
        self._workspace = workspace_bytes
        self._max_batch = max_batch
        self._max_axis = max_axis
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
    def max_axis(self) -> int:
        """Largest size of a free non-batch axis (height, width, length) in the optimization profile."""
        return self._max_axis or _env_int(MAX_AXIS_ENV, DEFAULT_MAX_AXIS)

    def profile(self, onnx_bytes: bytes, calibration: Dataset | None = None) -> Profile:
        """The optimization profile of ``onnx_bytes``'s inputs (graph names): free axes tuned at ``calibration``'s shapes."""
        import onnx

        proto = onnx.load_from_string(onnx_bytes)
        seen = None
        if calibration is not None:
            seen = {k: v.shape[1:] for k, v in graph_feed(proto, calibration.x).items()}
        return optimization_profile(input_shapes(proto), self.max_batch, self.max_axis, seen)

    @property
    def engine_cache_dir(self) -> str:
        from ..security import private_dir, user_cache_dir

        # engines can carry plugins that run on load: only from a directory private to this user
        return private_dir(self._engine_cache_dir or os.environ.get(ENGINE_CACHE_ENV)
                           or user_cache_dir("trt-engines"))

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
            "trt-max-axis": str(self.max_axis),
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
        profile = self.profile(onnx_bytes, calibration)
        trt_version = self._trt_version(route)
        key = engine_cache_key(onnx_bytes, precision, trt_version, gpu.name, gpu.compute_capability,
                               self.workspace_bytes, self.max_batch, profile)
        meta = {
            "variant": precision, "precision": precision, "converter": "tf2onnx", "route": route,
            "settings": {**settings, "workspace_bytes": str(self.workspace_bytes), "max_batch": str(self.max_batch),
                         "max_axis": str(self.max_axis)},
            "tensorrt": trt_version, "gpu": gpu.name, "compute_capability": gpu.compute_capability,
            "engine_cache_key": key, "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "profile": {name: [list(shape) for shape in shapes] for name, shapes in profile.items()},
        }
        if route == ROUTE_ORT:  # ORT builds the engine on load and caches it under the key
            return Artifact(onnx_bytes, meta, ".onnx")
        engine = build_engine(onnx_bytes, precision, self.workspace_bytes, profile)
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
            stored = meta.get("profile")
            profile = ({k: tuple(tuple(s) for s in v) for k, v in stored.items()} if stored
                       else self.profile(artifact.content))
            key = meta.get("engine_cache_key") or engine_cache_key(
                artifact.content, precision, self._trt_version(ROUTE_ORT), gpu.name, gpu.compute_capability,
                self.workspace_bytes, self.max_batch, profile)
            cache_path = os.path.join(self.engine_cache_dir, key)
            os.makedirs(cache_path, exist_ok=True)
            info.update(precision=precision, tensorrt=self._trt_version(ROUTE_ORT), engine_cache=cache_path)
            options = ort_provider_options(precision, cache_path, self.workspace_bytes, profile)
            info["provider_options"] = {k: str(v) for k, v in options.items()}
            return OrtTensorRTRunner(ort_tensorrt_session(artifact.content, threads, options), artifact.variant, info)
        info.update(precision=meta.get("precision", artifact.variant))
        return TensorRTRunner(artifact.content, artifact.variant, info)
