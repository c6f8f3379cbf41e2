"""TensorFlow → ONNX conversion helpers shared by the ONNX-based backends (onnxruntime, tensorrt).

What lives here is everything between a :class:`~pytest_tfopt.models.SourceModel` and ONNX bytes:

* :func:`to_onnx`: the fp32 ``onnx.ModelProto`` from tf2onnx (the serving ``tf.function`` for
  Keras 3, tf_keras and SavedModels; ``from_tflite`` for a ``.tflite`` source), refused when tf2onnx
  left an op it could not convert (:func:`unknown_ops`);
* graph inputs and feeds: :func:`graph_inputs`, :func:`graph_feed`, :func:`plain_name`;
* calibration readers for ``onnxruntime.quantization``: :func:`calibration_reader` (every graph
  input by name) and :func:`one_input_reader`;
* :func:`quantize` (fp32, dynamic, float16 and QDQ int8 bytes) and :func:`preprocessed`, the ORT
  pre-processing step before quantizing;
* settings and probes: :func:`opset_from_env` (``TFOPT_ONNX_OPSET``, default 17),
  :func:`missing_packages`, and :func:`quiet` (the converters' log noise).

Nothing here builds a runner: the backends (:mod:`pytest_tfopt.backends.onnx`,
:mod:`pytest_tfopt.backends.tensorrt`) do that from these bytes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .. import tfenv
from ..dataset import Dataset
from ..errors import BackendUnavailable, ConversionError, DatasetError, ModelLoadError, UsageError, first_line
from ..models import SourceModel
from ..signature import Batch

DEFAULT_OPSET = 17
OPSET_ENV = "TFOPT_ONNX_OPSET"
PACKAGES = ("tf2onnx", "onnxruntime", "onnx")
CALIBRATION_BATCH = 32


@contextlib.contextmanager
def quiet(*names: str) -> Iterator[None]:
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
    """The ONNX opset of ``TFOPT_ONNX_OPSET`` (default 17); a UsageError for anything but an integer ≥ 7."""
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
        with quiet("tf2onnx", "root"):
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
            f"tf2onnx could not convert {source.name} (opset {opset}): {first_line(exc)} "
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


# ---- graph inputs and calibration feeds --------------------------------------------------------
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
    # imported here, not at module level: onnxruntime is optional and heavy
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_CalibrationReader, CalibrationDataReader):
        pass

    return Reader(feed)


def one_input_reader(input_name: str, calibration: Dataset, dtype: Any) -> Any:
    """A reader feeding one-input ``calibration.x`` as graph input ``input_name``, cast to ``dtype``."""
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
        by_name = {plain_name(k): k for k in wanted}
        if set(by_name) <= set(x):
            return {by_name[n]: np.asarray(x[n]).astype(wanted[by_name[n]], copy=False) for n in by_name}
        if len(wanted) == 1 and len(x) == 1:
            x = next(iter(x.values()))
        else:
            raise DatasetError(f"{what} names {', '.join(map(str, x))} do not match the ONNX graph inputs "
                               f"{', '.join(by_name)}: give one array per graph input")
    if len(wanted) != 1:
        raise DatasetError(f"{what} is one array but the ONNX graph has {len(wanted)} inputs "
                           f"({', '.join(map(plain_name, wanted))}): give a mapping name → array")
    name, dtype = next(iter(wanted.items()))
    return {name: np.asarray(x).astype(dtype, copy=False)}


def plain_name(name: str) -> str:
    """A graph tensor name without its ``:0`` output index."""
    return name[:-2] if name.endswith(":0") else name


# ---- precisions --------------------------------------------------------------------------------
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


def preprocessed(proto: Any, tmp: str, settings: dict[str, str]) -> str:
    """Path (in directory ``tmp``) of ``proto`` after shape inference + ORT graph optimization, the ORT recipe
    before quantizing; the raw graph's path if that fails. ``settings["pre_process"]`` says which."""
    import onnx

    raw, pre = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "fp32.pre.onnx")
    onnx.save(proto, raw)
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with quiet("root", "onnxruntime"):
            # ONNX shape inference + ORT optimizations; symbolic shape inference (sympy) only helps dynamic graphs
            quant_pre_process(raw, pre, skip_symbolic_shape=True)
        settings["pre_process"] = "quant_pre_process(skip_symbolic_shape=True)"
        return pre
    except Exception as exc:  # symbolic shape inference refuses some graphs; quantizing still works
        settings["pre_process"] = f"skipped ({first_line(exc)[:120]})"
        return raw


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
        model_in = preprocessed(proto, tmp, settings)
        out = os.path.join(tmp, f"{precision}.onnx")
        with quiet("root", "onnxruntime"):
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
