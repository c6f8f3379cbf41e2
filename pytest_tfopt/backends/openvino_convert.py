"""OpenVINO IR from a source model: conversion, NNCF int8 quantization, deterministic serialization.

What lives here is everything between a :class:`~pytest_tfopt.models.SourceModel` and the
``.openvino.zip`` bytes of :mod:`pytest_tfopt.backends.openvino` (which compiles and runs them):

* :func:`to_openvino`: a Keras 3, tf_keras or SavedModel source exported as a SavedModel
  (:func:`~pytest_tfopt.backends.tf.export_saved_model`), a ``.tflite`` source from its file, through
  ``openvino.convert_model``; an op without a conversion rule is named (:func:`unconverted_ops`);
* :func:`quantize_int8`: NNCF post-training quantization (``PERFORMANCE`` preset, CPU target, fast
  bias correction) on the calibration samples, fed by input name (:func:`port_feed`), with the
  overflow fix of :func:`overflow_fix` (``$TFOPT_OPENVINO_OVERFLOW_FIX``);
* :func:`serialize`: the IR (float32 weights) in a deterministic zip, node names renumbered by graph
  position and the temporary input path dropped (:func:`canonicalize`), the inference-precision hint
  in its ``rt_info``; :func:`build_ir` runs the three for one precision;
* port naming shared with the runner: :func:`port_name`, :func:`port_names`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dataset import Dataset
from ..errors import BackendUnavailable, ConversionError, DatasetError, UsageError
from ..hardware import cpu_has_vnni
from ..models import SourceModel
from ..signature import Batch
from ._archive import pack
from .tf import export_saved_model

DEVICE = "CPU"
HINTS = {"fp32": "f32", "bf16": "bf16", "float16": "f16", "int8": "f32"}  # INFERENCE_PRECISION_HINT
RT_PRECISION = ["tfopt", "inference_precision"]
XML, BIN = "model.xml", "model.bin"
_UNCONVERTED = re.compile(r"No conversion rule found for operations?: ([^\n]+)")
_FAILED_OP = re.compile(r"^-- (\S+) with a message:", re.MULTILINE)


def error_message(exc: BaseException) -> str:
    """The informative line of an OpenVINO error (they open with a ``Check '...' failed at`` line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    boiler = ("Check '", "FrontEnd API failed", "Exception from src", "Model wasn't fully converted", "Summary:")
    useful = [ln for ln in lines if not ln.startswith(boiler)]
    return ((useful or lines or [type(exc).__name__])[0])[:200]


def unconverted_ops(exc: BaseException) -> list[str]:
    """The TensorFlow/TFLite op types an OpenVINO conversion error names (empty when it names none)."""
    text = str(exc)
    ops = [op.strip() for m in _UNCONVERTED.finditer(text) for op in m.group(1).split(",")]
    ops += _FAILED_OP.findall(text)
    return sorted({op for op in ops if op})



def to_openvino(source: SourceModel) -> tuple[Any, dict[str, str]]:
    """``source`` as a float32 ``openvino.Model`` and how it was converted."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="tfopt-openvino-") as tmp:
        if source.kind == "tflite":
            path = source.path
            if not (path and os.path.exists(path)):
                if source.content is None:
                    raise ConversionError(f"{source.name}: a .tflite source needs its file or bytes for OpenVINO")
                path = os.path.join(tmp, "model.tflite")
                with open(path, "wb") as fh:
                    fh.write(source.content)
            settings = {"source_format": "tflite"}
        else:
            path = os.path.join(tmp, "saved_model")
            settings = {"source_format": "SavedModel", **export_saved_model(source, "fp32", path, "openvino")}
        try:
            model = ov.convert_model(path)
        except Exception as exc:
            ops = unconverted_ops(exc)
            what = f"no conversion rule for op {', '.join(ops)}" if ops else error_message(exc)
            raise ConversionError(
                f"backend 'openvino' could not convert {source.name}: {what} "
                "(run it on backend tflite or tf, or replace the op)"
            ) from None
    settings["converter"] = "openvino.convert_model"
    return model, settings


def canonicalize(model: Any) -> None:
    """Make ``model`` serialize to the same bytes in every process.

    OpenVINO names nodes ``<Type>_<n>`` from a process-wide counter, so a second conversion (or
    one after another model) gets other names; ``convert_model`` records the input path, a
    temporary directory here. Parameters keep their names (the input's); tensor names, which
    callers look outputs up by, are untouched.
    """
    for index, op in enumerate(model.get_ordered_ops()):
        if op.get_type_name() != "Parameter":
            op.set_friendly_name(f"{op.get_type_name()}_{index}")
    info = model.get_rt_info()
    if "conversion_parameters" in info:
        del info["conversion_parameters"]


def port_name(port: Any, default: str) -> str:
    """The name a model input/output goes by: a name without ``:`` among the port's names, else one without ``:0``."""
    names = sorted(port.get_names())
    plain = [n for n in names if ":" not in n]
    if plain:
        return plain[0]
    return names[0][:-2] if names and names[0].endswith(":0") else (names[0] if names else default)


def port_names(ports: Any, prefix: str) -> dict[str, Any]:
    """Name → port, names sorted (as SavedModel signatures and ``.tflite`` signatures are)."""
    named = {port_name(p, f"{prefix}_{i}"): p for i, p in enumerate(ports)}
    return dict(sorted(named.items()))


def port_feed(model: Any, x: Batch, what: str = "calibration data") -> dict[str, np.ndarray]:
    """``x`` (array or mapping by input name) keyed by ``model``'s input names, each in its port's element type."""
    ports = port_names(model.inputs, "input")
    if isinstance(x, Mapping) and set(ports) <= set(x):
        named = {n: x[n] for n in ports}
    elif len(ports) == 1 and (not isinstance(x, Mapping) or len(x) == 1):
        named = {next(iter(ports)): next(iter(x.values())) if isinstance(x, Mapping) else x}
    else:
        given = ", ".join(map(str, x)) if isinstance(x, Mapping) else "one array"
        raise DatasetError(f"{what} ({given}) does not match the OpenVINO model's inputs {', '.join(ports)}: "
                           "give a mapping name → array")
    return {n: np.asarray(v).astype(ports[n].get_element_type().to_dtype(), copy=False) for n, v in named.items()}


def _calibration_items(feed: dict[str, np.ndarray], batch: int) -> list[dict[str, np.ndarray]]:
    """``feed`` as model inputs (dicts by input name) of ``batch`` samples each (the last one padded)."""
    n = len(next(iter(feed.values())))
    items = []
    for start in range(0, n, batch):
        chunk = {k: v[start : start + batch] for k, v in feed.items()}
        real = len(next(iter(chunk.values())))
        if real < batch:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch - real, axis=0)]) for k, v in chunk.items()}
        items.append(chunk)
    return items


OVERFLOW_FIX_ENV = "TFOPT_OPENVINO_OVERFLOW_FIX"
OVERFLOW_FIX_MODES = {"first_layer": "FIRST_LAYER", "enable": "ENABLE", "disable": "DISABLE"}


def overflow_fix() -> str:
    """NNCF's overflow fix for int8: ``enable`` (every layer's weights in 7 bits) on CPUs without VNNI, where
    8-bit multiply-adds saturate (the cause ``onnxruntime``'s ``reduce_range`` handles too); NNCF's own
    default ``first_layer`` where VNNI exists. ``$TFOPT_OPENVINO_OVERFLOW_FIX`` (first_layer|enable|disable)
    overrides."""
    raw = os.environ.get(OVERFLOW_FIX_ENV, "").strip().lower()
    if raw:
        if raw not in OVERFLOW_FIX_MODES:
            raise UsageError(f"${OVERFLOW_FIX_ENV}={raw!r}: use one of {', '.join(OVERFLOW_FIX_MODES)}")
        return raw
    return "first_layer" if cpu_has_vnni() else "enable"


def quantize_int8(model: Any, calibration: Dataset | None, settings: dict[str, str]) -> Any:
    """``model`` after NNCF post-training int8 quantization on ``calibration``.

    NNCF runs each calibration item through the compiled model as a dict input name → batch; only
    float activations get FakeQuantize, integer inputs (ids) stay integers. The overflow fix follows
    :func:`overflow_fix`.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    if calibration is None or len(calibration) == 0:
        raise DatasetError(
            "int8 needs calibration data but the calibration set is empty: give tfopt_dataset training samples"
        )
    shape = model.inputs[0].get_partial_shape()
    batch = shape[0].get_length() if shape.rank.is_static and shape[0].is_static else 1
    items = _calibration_items(port_feed(model, calibration.x), batch)
    fix = overflow_fix()
    advanced = AdvancedQuantizationParameters(overflow_fix=getattr(OverflowFix, OVERFLOW_FIX_MODES[fix]))
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:  # NNCF draws rich progress bars on stdout whatever the log level
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(
                model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                target_device=nncf.TargetDevice.CPU, subset_size=len(items), fast_bias_correction=True,
                advanced_parameters=advanced,
            )
    finally:
        logger.setLevel(level)
    settings.update(
        quantizer="nncf.quantize", preset="PERFORMANCE (symmetric int8 weights per channel and activations)",
        target_device="CPU", fast_bias_correction="True", calibration=f"{len(calibration)} samples",
        overflow_fix=fix,
    )
    return quantized


def serialize(model: Any, hint: str) -> bytes:
    """``model`` as IR (float32 weights) in a deterministic zip, with ``hint`` in its ``rt_info``."""
    import openvino as ov

    canonicalize(model)
    model.set_rt_info(hint, RT_PRECISION)
    with tempfile.TemporaryDirectory(prefix="tfopt-openvino-ir-") as tmp:
        ov.save_model(model, os.path.join(tmp, XML), compress_to_fp16=False)
        return pack(tmp)



def build_ir(source: SourceModel, precision: str, calibration: Dataset | None) -> tuple[bytes, dict[str, str]]:
    """The ``.openvino.zip`` bytes of ``source`` at ``precision`` (one of :data:`HINTS`) and how they were built.

    Any failure past the conversion is one :class:`~pytest_tfopt.errors.ConversionError` line naming
    the precision and the source (usage, data and availability errors pass through).
    """
    model, settings = to_openvino(source)
    hint = HINTS[precision]
    weights = "int8 weights, FakeQuantize on activations" if precision == "int8" else "f32 weights"
    settings.update(inference_precision_hint=hint, device=DEVICE, ir=f"model.xml + model.bin ({weights})")
    try:
        if precision == "int8":
            model = quantize_int8(model, calibration, settings)
        content = serialize(model, hint)
    except (BackendUnavailable, ConversionError, DatasetError):
        raise
    except Exception as exc:
        raise ConversionError(
            f"backend 'openvino' could not build {precision} for {source.name}: {error_message(exc)} "
            "(try another variant, or run it on backend tflite)"
        ) from None
    return content, settings
