"""Stage 1 of the tensorrt backend: the ONNX graph a strongly typed TensorRT network builds (no GPU needed).

TensorRT 10/11 networks are *strongly typed*: the precision is in the graph, not in builder flags.

* ``fp32``: the tf2onnx graph (:func:`~pytest_tfopt.backends.onnx_convert.to_onnx`);
* ``float16``: every float tensor and initializer inside the graph is FP16; the graph inputs and
  outputs stay FP32 with a ``Cast`` at each end (``keep_io_types=True``), so every runner feeds and
  returns fp32 host arrays and the casts cost one tiny layer each;
* ``int8``: explicit Q/DQ from ``onnxruntime.quantization.quantize_static`` on the same calibration
  samples as the other backends: symmetric int8 activations and per-channel symmetric int8 weights
  (zero points 0, as TensorRT requires), Q/DQ pairs on the weights themselves
  (``AddQDQPairToWeight``), one dedicated pair per consumer (``DedicatedQDQPair``), float biases
  (``QuantizeBias=False``), Relu/Clip kept in the graph (``QDQKeepRemovableActivations``) and no
  Q/DQ on the outputs of Conv/Gemm/MatMul, which ORT's quantizer notes are not recommended for
  TensorRT. See :data:`TRT_QDQ_OPTIONS`. Calibration feeds every graph input by name
  (:func:`int8_calibration_reader`); integer inputs (ids) are fed but never quantized.

Inputs and outputs keep the model's names (tf2onnx names them after the serving function's).
:func:`onnx_precision` reads the precision back from the bytes.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ...dataset import Dataset
from ...errors import BackendUnavailable, ConversionError, DatasetError, first_line
from ...models import SourceModel
from ..onnx_convert import (
    calibration_reader,
    graph_feed,
    one_input_reader,
    preprocessed,
    quantize,
    quiet,
    to_onnx,
)

PRECISIONS = ("fp32", "float16", "int8")
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
#: what every tensorrt conversion or build error suggests instead
REMEDY = "try another variant or opset (TFOPT_ONNX_OPSET), or run it on backend onnxruntime"


def unsupported_message(variant: str) -> str:
    """Why ``variant`` is not a tensorrt precision, and what to use instead (one line)."""
    return (
        f"variant {variant!r} is not available on backend 'tensorrt': it builds {', '.join(PRECISIONS)} engines "
        "(strongly typed: FP16 ONNX graph, explicit Q/DQ int8); use onnxruntime or tflite for "
        f"{variant}"
    )


def int8_calibration_reader(proto: Any, calibration: Dataset) -> Any:
    """An ``onnxruntime`` calibration reader feeding every input of ``proto`` by name, in its dtype.

    Integer inputs (ids) are fed like the others, so the model runs; the quantizer leaves them
    unquantized. A one-input graph goes through :func:`~pytest_tfopt.backends.onnx_convert.one_input_reader`.
    """
    feed = graph_feed(proto, calibration.x)
    if len(feed) == 1:
        ((name, values),) = feed.items()
        return one_input_reader(name, Dataset(values, name="calibration"), values.dtype)
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
        model_in = preprocessed(proto, tmp, settings)
        out = os.path.join(tmp, "int8.qdq.onnx")
        with quiet("root", "onnxruntime"):
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
        raise BackendUnavailable(unsupported_message(precision))
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
            f"backend 'tensorrt' could not make the {precision} ONNX graph of {source.name}: {first_line(exc)} ({REMEDY})"
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
