"""ONNX Runtime backend: tf2onnx → ONNX → ``onnxruntime.InferenceSession``.

Building: the source's serving ``tf.function`` (Keras 3, tf_keras, or a SavedModel's tested
signature; inputs and outputs by name) goes through ``tf2onnx.convert.from_function``, so the graph's
inputs and outputs carry the model's names and free axes stay symbolic; a ``.tflite`` source goes
through ``tf2onnx.convert.from_tflite``. Every variant starts from that fp32 graph. The opset is ``TFOPT_ONNX_OPSET`` or the ``opset`` argument
of :class:`OnnxRuntimeBackend` (default 17); it is part of the cache key.

Precisions:

* ``fp32``: the converted graph;
* ``dynamic``: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations
  quantized on the fly);
* ``int8``: ``quantize_static`` in QDQ format (``QuantizeLinear``/``DequantizeLinear`` pairs),
  per-channel int8 weights (per-tensor with ``int8(per_channel=False)``), int8 activations,
  MinMax-calibrated on the calibration samples (every graph input, each in its dtype; integer
  inputs such as ids are not float and are never quantized); weights in 7 bits (``reduce_range``) on CPUs
  without VNNI, where full-range int8 weights saturate ONNX Runtime's int8 kernels;
* ``float16``: ``convert_float_to_float16(keep_io_types=True)`` from ``onnxconverter_common``
  or, without it, the copy onnxruntime ships in ``onnxruntime.transformers.float16``.

Anything else raises :class:`~pytest_tfopt.errors.BackendUnavailable` naming the variant.
Running: CPU, plus the CUDA and TensorRT execution providers when this onnxruntime build has
them (``onnxruntime-gpu``); ``Runner.info["providers"]`` records the ones the session uses.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..dataset import Dataset
from ..errors import BackendUnavailable, ConversionError, DatasetError, ModelLoadError, UsageError
from ..models import SourceModel
from ..signature import Batch, Signature, TensorInfo, dtype_name, run_in_batches
from . import Backend, Runner, tflite_only_reason

DEFAULT_OPSET = 17
OPSET_ENV = "TFOPT_ONNX_OPSET"
PRECISIONS = ("fp32", "dynamic", "float16", "int8")
PACKAGES = ("tf2onnx", "onnxruntime", "onnx")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CALIBRATION_BATCH = 32
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Lower the Python loggers ``names`` to ERROR for the duration (tf2onnx and ORT tooling are chatty)."""
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)


def opset_from_env() -> int:
    raw = os.environ.get(OPSET_ENV, "").strip()
    if not raw:
        return DEFAULT_OPSET
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 7:
        raise UsageError(f"{OPSET_ENV}={raw!r} is not an ONNX opset: use an integer such as {DEFAULT_OPSET}")
    return value


def missing_packages() -> list[str]:
    """The packages of :data:`PACKAGES` not installed here."""
    return [p for p in PACKAGES if importlib.util.find_spec(p) is None]


# ---- conversion --------------------------------------------------------------------------------
def to_onnx(source: SourceModel, opset: int, backend: str = "onnxruntime") -> Any:
    """``source`` as an fp32 ``onnx.ModelProto`` whose graph inputs and outputs carry the model's names.

    tf2onnx's Python API converts with ``continue_on_error=True``: an op without a converter is only
    logged and left in the graph under its TensorFlow name, where nothing can run it. Such graphs are
    refused here, naming the op, before anything is cached.
    """
    import tf2onnx

    try:
        with _quiet("tf2onnx", "root"):
            if source.kind == "tflite":
                if not source.path:
                    raise ConversionError(f"{source.name}: a .tflite source needs its file path for tf2onnx")
                proto, _ = tf2onnx.convert.from_tflite(source.path, opset=opset)
            else:
                tf = tfenv.tensorflow()
                specs = {t.name: tf.TensorSpec((None, *t.shape), t.dtype, name=t.name) for t in source.signature.inputs}
                proto, _ = tf2onnx.convert.from_function(source.serving_function(), input_signature=[specs], opset=opset)
    except (BackendUnavailable, ConversionError, ModelLoadError):
        raise
    except Exception as exc:
        raise ConversionError(
            f"tf2onnx could not convert {source.name} (opset {opset}): {_first_line(exc)} "
            f"(try another opset with {OPSET_ENV}, or run it on backend tflite)"
        ) from None
    unconverted = unknown_ops(proto)
    if unconverted:
        raise ConversionError(
            f"backend {backend!r} could not convert {source.name}: tf2onnx has no ONNX conversion for op(s) "
            f"{', '.join(unconverted)} (opset {opset}; run it on backend tflite or tf, or replace the op)"
        )
    return proto


def unknown_ops(proto: Any) -> list[str]:
    """Op types of ``proto``'s standard-domain nodes (and its functions') that ONNX does not define."""
    import onnx

    nodes = list(proto.graph.node) + [n for f in proto.functions for n in f.node]
    local = {f.name for f in proto.functions}
    return sorted({
        n.op_type for n in nodes
        if n.domain in ("", "ai.onnx") and n.op_type not in local and not onnx.defs.has(n.op_type, n.domain)
    })


class _CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a feed (graph input name → samples) in batches."""

    def __init__(self, feed: dict[str, np.ndarray], batch: int = CALIBRATION_BATCH) -> None:
        self.feed = feed
        self.n = len(next(iter(feed.values())))
        self.batch = batch
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._start >= self.n:
            return None
        chunk = {k: v[self._start : self._start + self.batch] for k, v in self.feed.items()}
        self._start += self.batch
        return chunk

    def rewind(self) -> None:
        self._start = 0


def calibration_reader(feed: dict[str, np.ndarray]) -> Any:
    """A ``CalibrationDataReader`` yielding dicts of every graph input (``feed``'s keys), 32 samples at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_CalibrationReader, CalibrationDataReader):
        pass

    return Reader(feed)


def _reader(input_name: str, calibration: Dataset, dtype: Any) -> Any:
    """A reader feeding one-input ``calibration.x`` as ``input_name`` in ``dtype`` (kept for tensorrt)."""
    return calibration_reader({input_name: np.asarray(calibration.x).astype(dtype, copy=False)})


def graph_inputs(proto: Any) -> dict[str, Any]:
    """Graph input name → numpy dtype of ``proto`` (initializers listed as inputs excluded), in graph order."""
    from onnx import helper

    inits = {i.name for i in proto.graph.initializer}
    return {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            for i in proto.graph.input if i.name not in inits}


def graph_feed(proto: Any, x: Batch, what: str = "calibration data") -> dict[str, np.ndarray]:
    """``x`` (array or mapping by input name) keyed by ``proto``'s graph input names, each in its dtype.

    Graph names match the model's input names (``:0`` aside); a one-input graph takes a one-input ``x`` whatever
    its names (a ``.tflite`` source converted by tf2onnx keeps its tensor names).
    """
    wanted = graph_inputs(proto)
    if isinstance(x, Mapping):
        by_name = {_plain_name(k): k for k in wanted}
        if set(by_name) <= set(x):
            return {by_name[n]: np.asarray(x[n]).astype(wanted[by_name[n]], copy=False) for n in by_name}
        if len(wanted) == 1 and len(x) == 1:
            x = next(iter(x.values()))
        else:
            raise DatasetError(f"{what} names {', '.join(map(str, x))} do not match the ONNX graph inputs "
                               f"{', '.join(by_name)}: give one array per graph input")
    if len(wanted) != 1:
        raise DatasetError(f"{what} is one array but the ONNX graph has {len(wanted)} inputs "
                           f"({', '.join(map(_plain_name, wanted))}): give a mapping name → array")
    name, dtype = next(iter(wanted.items()))
    return {name: np.asarray(x).astype(dtype, copy=False)}


def _plain_name(name: str) -> str:
    """A graph tensor name without its ``:0`` output index."""
    return name[:-2] if name.endswith(":0") else name


def _float16_converter() -> tuple[Callable[..., Any], str]:
    try:
        from onnxconverter_common.float16 import convert_float_to_float16

        return convert_float_to_float16, "onnxconverter_common.float16"
    except ImportError:
        pass
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16, "onnxruntime.transformers.float16"
    except ImportError:
        raise BackendUnavailable(
            "variant 'float16' on backend 'onnxruntime' needs onnxconverter-common: pip install onnxconverter-common"
        ) from None


def _preprocessed(proto: Any, tmp: str, settings: dict[str, str]) -> str:
    """Shape inference + ORT graph optimization before quantization (the ORT recipe); the raw graph if it fails."""
    import onnx

    raw, pre = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "fp32.pre.onnx")
    onnx.save(proto, raw)
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with _quiet("root", "onnxruntime"):
            # ONNX shape inference + ORT optimizations; symbolic shape inference (sympy) only helps dynamic graphs
            quant_pre_process(raw, pre, skip_symbolic_shape=True)
        settings["pre_process"] = "quant_pre_process(skip_symbolic_shape=True)"
        return pre
    except Exception as exc:  # symbolic shape inference refuses some graphs; quantizing still works
        settings["pre_process"] = f"skipped ({_first_line(exc)[:120]})"
        return raw


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (AVX512-VNNI or AVX-VNNI): int8 dot products without 16-bit saturation."""
    from ..baseline import hardware

    return bool({"avx512_vnni", "avx_vnni"} & set(hardware()["cpu_flags"]))


def quantize(proto: Any, precision: str, calibration: Dataset | None, settings: dict[str, str],
             per_channel: bool = True, reduce_range: bool = False) -> bytes:
    """The ONNX bytes of ``proto`` at ``precision``.

    ``reduce_range`` (int8 only) quantizes weights to 7 bits: on x86 CPUs without VNNI, ONNX Runtime's
    int8 kernels (``vpmaddubsw``) saturate 16-bit intermediate sums with full-range weights, which
    wrecks per-channel models (MobileNetV2 here: 0.40 argmax agreement with fp32; 0.93 with it).
    """
    if precision == "fp32":
        return proto.SerializeToString()
    if precision == "float16":
        convert, where = _float16_converter()
        settings.update(converter=f"{where}.convert_float_to_float16", keep_io_types="True")
        return convert(proto, keep_io_types=True).SerializeToString()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory(prefix="tfopt-onnx-") as tmp:
        model_in = _preprocessed(proto, tmp, settings)
        out = os.path.join(tmp, f"{precision}.onnx")
        with _quiet("root", "onnxruntime"):
            if precision == "dynamic":
                quantize_dynamic(model_in, out, weight_type=QuantType.QInt8)
                settings.update(quantizer="onnxruntime.quantization.quantize_dynamic", weight_type="QInt8")
            else:
                if calibration is None or len(calibration) == 0:
                    raise DatasetError(
                        "int8 needs calibration data but the calibration set is empty: give tfopt_dataset training samples"
                    )
                feed = graph_feed(proto, calibration.x)
                quantize_static(  # only float tensors are quantized: integer inputs (ids) stay as they are
                    model_in, out, calibration_reader(feed), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, reduce_range=reduce_range, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                )
                settings.update(
                    quantizer="onnxruntime.quantization.quantize_static", format="QDQ", per_channel=str(per_channel),
                    reduce_range=str(reduce_range),
                    activation_type="QInt8", weight_type="QInt8", calibrate_method="MinMax",
                    calibration=f"{len(calibration)} samples",
                )
        with open(out, "rb") as fh:
            return fh.read()


# ---- runner ------------------------------------------------------------------------------------
def _tensor_info(name: str, arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape[1:])
    return TensorInfo(name, shape, dtype_name(_ORT_TYPES.get(arg.type, np.float32)))


class OnnxRuntimeRunner(Runner):
    """One ONNX model in an ``onnxruntime.InferenceSession``, inputs and outputs by graph name (``:0`` dropped).

    Free (symbolic) axes run at the data's shapes; integer inputs are fed as integers.
    """

    def __init__(self, content: bytes, threads: int = 1, name: str = "model") -> None:
        import onnxruntime as ort

        self.name = name
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        available = ort.get_available_providers()
        providers = [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(content, sess_options=options, providers=providers)
        self.input_shape = self.signature.inputs[0].shape  # the first input's, for callers of one-input models
        self.info: dict[str, Any] = {
            "threads": threads,
            "runtime": f"onnxruntime {ort.__version__}",
            "providers": self._session.get_providers(),
            "available_providers": available,
            "graph_optimization": "ORT_ENABLE_ALL",
        }

    # From the session on first use, so a subclass that opens its own session (tensorrt's) gets them too.
    @functools.cached_property
    def _graph_names(self) -> tuple[dict[str, str], dict[str, str]]:
        """(input name → graph input name, output name → graph output name), names sorted."""
        ins = {_plain_name(a.name): a.name for a in self._session.get_inputs()}
        outs = {_plain_name(a.name): a.name for a in self._session.get_outputs()}
        return dict(sorted(ins.items())), dict(sorted(outs.items()))

    @functools.cached_property
    def signature(self) -> Signature:  # type: ignore[override]
        args = {_plain_name(a.name): a for a in [*self._session.get_inputs(), *self._session.get_outputs()]}
        ins, outs = self._graph_names
        return Signature(tuple(_tensor_info(n, args[n]) for n in ins), tuple(_tensor_info(n, args[n]) for n in outs))

    def _graph_feed(self, x: Any) -> dict[str, np.ndarray]:
        feed = self.signature.feed(x, "input", self.name)
        return {self._graph_names[0][n]: v for n, v in feed.items()}

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._graph_names[1]
        return dict(zip(outs, self._session.run(list(outs.values()), feed), strict=True))

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        return self.signature.result(run_in_batches(self._graph_feed(x), batch_size, self._run))

    def prepare(self, x: Any) -> Callable[[], None]:
        feed = self._graph_feed(x)
        run, outputs = self._session.run, list(self._graph_names[1].values())

        def invoke() -> None:
            run(outputs, feed)

        return invoke


class OnnxRuntimeBackend(Backend):
    """tf2onnx + ONNX Runtime (CPU; CUDA/TensorRT execution providers when installed)."""

    name = "onnxruntime"
    artifact_suffix = ".onnx"

    def __init__(self, opset: int | None = None) -> None:
        self._opset = opset

    @property
    def reduce_range(self) -> bool:
        """7-bit int8 weights, chosen for CPUs without VNNI (see :func:`quantize`); ``TFOPT_ONNX_REDUCE_RANGE=0|1`` overrides."""
        forced = os.environ.get("TFOPT_ONNX_REDUCE_RANGE", "").strip()
        if forced in ("0", "1"):
            return forced == "1"
        return not cpu_has_vnni()

    @property
    def opset(self) -> int:
        return int(self._opset) if self._opset is not None else opset_from_env()

    def unavailable_reason(self) -> str | None:
        missing = missing_packages()
        if missing:
            return (
                f"backend 'onnxruntime' needs {', '.join(missing)}: pip install tf2onnx onnxruntime "
                "(or pytest-tfopt[onnx])"
            )
        return None

    def unsupported_reason(self, variant: str, params: dict[str, Any] | None = None) -> str | None:
        """Why precision ``variant`` cannot be built here (``None`` when it can); checked before any work."""
        if variant not in PRECISIONS:
            return (
                f"variant {variant!r} is not available on backend 'onnxruntime': it builds "
                f"{', '.join(PRECISIONS)} (QDQ) ONNX models; use {'tf or xla' if variant == 'bf16' else 'tflite'} for {variant}"
            )
        if reason := tflite_only_reason(self.name, variant, params):
            return reason
        return None

    def build(self, source: SourceModel, recipe: Any, calibration: Any, params: dict[str, Any]) -> Artifact:
        precision = recipe.name
        self.refuse_unsupported(precision, params)
        opset = self.opset
        if calibration is not None:
            source.check_inputs(calibration.x, "calibration data")
        proto = to_onnx(source, opset)
        settings = {"opset": str(opset)}
        try:
            content = quantize(proto, precision, calibration, settings, per_channel=params.get("per_channel", True),
                               reduce_range=self.reduce_range)
        except (BackendUnavailable, ConversionError, DatasetError):
            raise
        except Exception as exc:
            raise ConversionError(
                f"onnxruntime could not build {precision} for {source.name}: {_first_line(exc)} "
                "(try another variant, or run it on backend tflite)"
            ) from None
        return Artifact(
            content,
            {"variant": precision, "converter": "tf2onnx", "settings": settings},
            self.artifact_suffix,
        )

    def load(self, artifact: Artifact, threads: int) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(artifact.content, threads, name=artifact.variant)

    def versions(self) -> dict[str, str]:
        # part of the cache key: another opset, or a CPU with(out) VNNI, is another artifact
        out = {"onnx-opset": str(self.opset), "onnx-int8-reduce-range": str(self.reduce_range)}
        out.update(tfenv.dist_versions("tf2onnx", "onnxruntime", "onnxruntime-gpu", "onnx", "onnxconverter-common"))
        return out
