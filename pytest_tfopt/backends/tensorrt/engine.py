"""Stage 2 of the tensorrt backend: the optimization profile, the engine cache key and the engine build.

The engine (needs ``tensorrt`` ≥ 10, ``cuda-python`` and a GPU, :func:`build_engine`) comes from a
``STRONGLY_TYPED`` network parsed by ``trt.OnnxParser``, one optimization profile giving every input
by name a batch of 1…``max_batch`` and free axes (e.g. a fully convolutional model's height and
width) of 1…``max_axis``, tuned at the calibration data's size (:func:`optimization_profile`), a
workspace limit, and ``build_serialized_network``. Engines are not portable: :func:`engine_cache_key`
names the TensorRT version, GPU model, workspace and profile an engine is valid for.

Settings (environment, read when used): ``TFOPT_TRT_WORKSPACE_MB`` (1024), ``TFOPT_TRT_MAX_BATCH``
(64), ``TFOPT_TRT_MAX_AXIS`` (256: free non-batch axes; with the max batch it bounds the engine's
activation memory), ``TFOPT_TRT_ENGINE_CACHE`` (the ORT route's engine directory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ...cache import cache_key
from ...errors import BackendUnavailable, ConversionError
from ...signature import shape_text
from .export import REMEDY

DEFAULT_WORKSPACE_MB = 1024
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_AXIS = 256
WORKSPACE_ENV, MAX_BATCH_ENV, ENGINE_CACHE_ENV = "TFOPT_TRT_WORKSPACE_MB", "TFOPT_TRT_MAX_BATCH", "TFOPT_TRT_ENGINE_CACHE"
MAX_AXIS_ENV = "TFOPT_TRT_MAX_AXIS"

#: input name → (min, opt, max) shapes, batch axis first: one TensorRT optimization profile
Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


# ---- the optimization profile ------------------------------------------------------------------
def input_shapes(proto: Any) -> dict[str, tuple[int | None, ...]]:
    """Per-sample shape of each input of the ONNX graph (initializers excluded) by graph name; ``None``: free axis."""
    constants = {t.name for t in proto.graph.initializer}
    return {
        i.name: tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in i.type.tensor_type.shape.dim)[1:]
        for i in proto.graph.input if i.name not in constants
    }


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


# ---- the engine --------------------------------------------------------------------------------
def describe_parser_errors(errors: list[Any], precision: str) -> str:
    """One line for the TensorRT ONNX parser's ``errors`` (``IParserError``): the first node, op and reason."""
    if not errors:
        return f"backend 'tensorrt': the TensorRT ONNX parser refused the {precision} graph without saying why ({REMEDY})"
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
    return f"backend 'tensorrt': the TensorRT ONNX parser refused {where} in the {precision} graph: {reason}{more} ({REMEDY})"


def trt_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` (of module ``trt``) that keeps errors (for one-line messages) and drops info chatter."""

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
    logger = trt_logger(trt)
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
                f"{', '.join(profile)} ({REMEDY})"
            )
        shapes.set_shape(tensor.name, *profile[tensor.name])
    config.add_optimization_profile(shapes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        why = (logger.errors or ["no error was logged"])[-1].strip().splitlines()[0][:200]
        raise ConversionError(f"backend 'tensorrt': TensorRT could not build the {precision} engine: {why} ({REMEDY})")
    return bytes(serialized)
