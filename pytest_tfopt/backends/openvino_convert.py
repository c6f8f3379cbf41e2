"""OpenVINO IR from a source model: conversion, NNCF int8 quantization, deterministic serialization.

What lives here is everything between a :class:`~pytest_tfopt.models.SourceModel` and the
``.openvino.zip`` bytes of :mod:`pytest_tfopt.backends.openvino` (which compiles and runs them):

* :func:`to_openvino`: a Keras 3, tf_keras or SavedModel source exported as a SavedModel
  (:func:`~pytest_tfopt.backends.tf.export_saved_model`), a ``.tflite`` source from its file, through
  ``openvino.convert_model``; an op without a conversion rule is named (:func:`unconverted_ops`);
* :func:`quantize_int8`: NNCF post-training quantization (``PERFORMANCE`` preset, CPU target, fast
  bias correction) on the calibration samples, fed by input name (:func:`port_feed`), with the
  overflow fix of :func:`overflow_fix` (``$TFOPT_OPENVINO_OVERFLOW_FIX``);
* :func:`quantize_int8_within`: ``int8(max_drop=...)``, plain int8 unless its top-1 drop on the calibration
  samples (:class:`Top1Judge`) breaks ``max_drop``, then NNCF's ``quantize_with_accuracy_control``, which
  reverts the ops that cost most to float (:func:`quantized_ops` says which ones stayed int8);
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
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..dataset import Dataset
from ..errors import BackendUnavailable, ConversionError, DatasetError, UsageError
from ..hardware import cpu_has_vnni
from ..measure.accuracy import top1_correct
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


def _batch(model: Any) -> int:
    """The model's fixed batch size, 1 when its batch axis is free."""
    shape = model.inputs[0].get_partial_shape()
    return shape[0].get_length() if shape.rank.is_static and shape[0].is_static else 1


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF's log below ERROR and its rich progress bars (drawn on stdout whatever the log level) silenced."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _nncf_options(model: Any, calibration: Dataset | None) -> tuple[list[Any], dict[str, Any], Any, str]:
    """The calibration items, the options both NNCF entry points take (preset, device, subset, bias correction),
    the ``AdvancedQuantizationParameters`` holding the overflow fix, and that fix (:func:`overflow_fix`)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    if calibration is None or len(calibration) == 0:
        raise DatasetError(
            "int8 needs calibration data but the calibration set is empty: give tfopt_dataset training samples"
        )
    items = _calibration_items(port_feed(model, calibration.x), _batch(model))
    fix = overflow_fix()
    options = {"preset": nncf.QuantizationPreset.PERFORMANCE, "target_device": nncf.TargetDevice.CPU,
               "subset_size": len(items), "fast_bias_correction": True}
    return items, options, AdvancedQuantizationParameters(overflow_fix=getattr(OverflowFix, OVERFLOW_FIX_MODES[fix])), fix


def quantize_int8(model: Any, calibration: Dataset | None, settings: dict[str, str]) -> Any:
    """``model`` after NNCF post-training int8 quantization on ``calibration``.

    NNCF runs each calibration item through the compiled model as a dict input name → batch; only
    float activations get FakeQuantize, integer inputs (ids) stay integers. The overflow fix follows
    :func:`overflow_fix`.
    """
    import nncf

    items, options, advanced, fix = _nncf_options(model, calibration)
    with _quiet_nncf():
        quantized = nncf.quantize(model, nncf.Dataset(items), advanced_parameters=advanced, **options)
    settings.update(
        quantizer="nncf.quantize", preset="PERFORMANCE (symmetric int8 weights per channel and activations)",
        target_device="CPU", fast_bias_correction="True", calibration=f"{len(calibration)} samples",
        overflow_fix=fix,
    )
    return quantized


def _compile_f32(model: Any) -> Any:
    import openvino as ov

    return ov.Core().compile_model(model, DEVICE, {"INFERENCE_PRECISION_HINT": "f32"})


def _classes(pred: np.ndarray) -> np.ndarray:
    """Predicted classes as :func:`~pytest_tfopt.measure.accuracy.top1_correct` reads them (one column: binary)."""
    pred = np.asarray(pred).reshape(len(pred), -1)
    if pred.shape[1] > 1:
        return pred.argmax(axis=1)
    threshold = 0.5 if np.all((pred >= 0) & (pred <= 1)) else 0.0
    return (pred[:, 0] > threshold).astype(np.int64)


class Top1Judge:
    """What ``int8(max_drop=...)`` judges, as the tflite search does (:mod:`pytest_tfopt.variants.selective`): top-1
    on the calibration samples against their labels (the training split's), or, unlabelled, top-1 agreement with
    fp32 (f32 on the OpenVINO CPU plugin). Called as NNCF's validation function on items (inputs, labels)."""

    def __init__(self, model: Any, calibration: Dataset) -> None:
        batch, n = _batch(model), len(calibration)
        chunks = _calibration_items(port_feed(model, calibration.x), batch)
        output = port_name(model.outputs[0], "output_0")
        labels = calibration.labels(output) if isinstance(calibration.y, Mapping) else calibration.labels()
        self.metric = "top1"
        if labels is None:  # unlabelled calibration data: fp32's own classes are the labels
            compiled = _compile_f32(model)
            labels = _classes(np.concatenate([np.asarray(compiled(c)[0]) for c in chunks])[:n])
            self.metric = "top1 agreement with fp32"
        labels = np.asarray(labels)
        self.items = [(chunk, labels[i * batch : (i + 1) * batch]) for i, chunk in enumerate(chunks)]
        self.samples = n
        self.reference = self.top1(model)

    def __call__(self, compiled: Any, items: Any) -> tuple[float, list[float]]:
        """NNCF's validation function: (top-1 over ``items``' samples, per item top-1)."""
        hits = [top1_correct(labels, np.asarray(compiled(feed)[0])[: len(labels)]) for feed, labels in items]
        return float(np.concatenate(hits).mean()), [float(h.mean()) for h in hits]

    def top1(self, model: Any) -> float:
        return self(_compile_f32(model), self.items)[0]

    def round(self, number: int, model: Any, floats: list[dict[str, str]]) -> dict[str, Any]:
        """One candidate's record: its float ops, drop against fp32 and top-1."""
        value, names = self.top1(model), [f"{f['layer']} ({f['op']})" for f in floats]
        return {"round": number, "float_layers": names, "drop": self.reference - value, "top1": value}


def quantized_ops(model: Any) -> dict[str, str]:
    """Name → type of the ops NNCF counts as quantized in ``model``: the first quantizable op (convolution,
    matrix product, eltwise, ...) after each FakeQuantize, walking forward through the ops that are not."""
    from nncf.openvino.graph.nncf_graph_builder import GraphConverter
    from nncf.quantization.algorithms.accuracy_control.openvino_backend import OVAccuracyControlAlgoBackend as algo

    graph = GraphConverter.create_nncf_graph(model)
    quantizable = algo.get_quantizable_metatypes()
    todo = [n for fq in graph.get_nodes_by_metatypes(algo.get_quantizer_metatypes()) for n in graph.get_next_nodes(fq)]
    found: dict[str, str] = {}
    while todo:
        node = todo.pop()
        if node.metatype in quantizable:
            found[node.node_name] = node.node_type
        else:
            todo.extend(graph.get_next_nodes(node))
    return found


def _float_ops(plain: Any, searched: Any) -> list[dict[str, str]]:
    """The ops ``plain`` quantized and ``searched`` keeps float, in graph order; ``node`` is their name in the artifact
    (:func:`canonicalize`), ``layer`` the converter's (a Keras layer's path where OpenVINO kept it)."""
    kept, was = quantized_ops(searched), quantized_ops(plain)
    why = "reverted to float by nncf.quantize_with_accuracy_control (ranked by its share of the top-1 drop)"
    return [
        {"layer": name, "op": op.get_type_name(), "node": f"{op.get_type_name()}_{index}", "why": why}
        for index, op in enumerate(searched.get_ordered_ops())
        if (name := op.get_friendly_name()) in was and name not in kept
    ]


def quantize_int8_within(
    model: Any, calibration: Dataset | None, settings: dict[str, str], max_drop: float
) -> tuple[Any, dict[str, Any]]:
    """``int8(max_drop=...)``: plain int8 (:func:`quantize_int8`) when its top-1 drop on the calibration samples
    (:class:`Top1Judge`) is within ``max_drop``; else ``nncf.quantize_with_accuracy_control`` with the same
    options, which reverts the ops that cost most to float until it is; when neither meets it, the smaller drop.
    Returns the chosen model and the ``selective`` metadata: both rounds, what stayed float, the drop reached.
    """
    import nncf

    plain = quantize_int8(model, calibration, settings)
    judge = Top1Judge(model, calibration)
    rounds = [judge.round(0, plain, [])]
    chosen, floats = plain, []
    if rounds[0]["drop"] > max_drop:
        items, options, advanced, _ = _nncf_options(model, calibration)
        with _quiet_nncf():
            searched = nncf.quantize_with_accuracy_control(
                model, nncf.Dataset(items), nncf.Dataset(judge.items, lambda item: item[0]), judge,
                max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced,
                **options,
            )
        searched_floats = _float_ops(plain, searched)
        rounds.append({**judge.round(1, searched, searched_floats), "search": "nncf.quantize_with_accuracy_control"})
        if rounds[1]["drop"] <= max_drop or rounds[1]["drop"] < rounds[0]["drop"]:
            chosen, floats = searched, searched_floats
            settings.update(quantizer="nncf.quantize_with_accuracy_control", max_drop=str(max_drop),
                            float_ops=repr([f["node"] for f in floats]))
    best = rounds[1] if chosen is not plain else rounds[0]
    selective = {
        "max_drop": max_drop, "met": bool(best["drop"] <= max_drop), "drop": best["drop"], "metric": judge.metric,
        "reference_top1": judge.reference, "top1": best["top1"],
        "validation": f"calibration samples ({judge.samples}, training split)", "chosen_round": best["round"],
        "float_layers": floats, "fallback": None, "rounds": rounds, "quantized_ops": len(quantized_ops(plain)),
    }
    return chosen, selective


def serialize(model: Any, hint: str) -> bytes:
    """``model`` as IR (float32 weights) in a deterministic zip, with ``hint`` in its ``rt_info``."""
    import openvino as ov

    canonicalize(model)
    model.set_rt_info(hint, RT_PRECISION)
    with tempfile.TemporaryDirectory(prefix="tfopt-openvino-ir-") as tmp:
        ov.save_model(model, os.path.join(tmp, XML), compress_to_fp16=False)
        return pack(tmp)


def build_ir(
    source: SourceModel, precision: str, calibration: Dataset | None, max_drop: float | None = None
) -> tuple[bytes, dict[str, Any]]:
    """The ``.openvino.zip`` bytes of ``source`` at ``precision`` (one of :data:`HINTS`) and their artifact metadata:
    ``settings`` (how they were built) and, for int8 with ``max_drop``, ``selective`` (:func:`quantize_int8_within`).

    Any failure past the conversion is one :class:`~pytest_tfopt.errors.ConversionError` line naming
    the precision and the source (usage, data and availability errors pass through).
    """
    searching = precision == "int8" and max_drop is not None
    if searching and len(source.signature.outputs) > 1:  # refused before converting anything
        raise ConversionError(
            f"int8(max_drop=...) on {source.name} ({len(source.signature.outputs)} outputs) is not supported on "
            "backend 'openvino': its accuracy-aware search judges the top-1 drop of one class output; use plain "
            "int8 with per-output budgets (max_accuracy_drop(..., output=...))"
        )
    model, settings = to_openvino(source)
    hint = HINTS[precision]
    weights = "int8 weights, FakeQuantize on activations" if precision == "int8" else "f32 weights"
    settings.update(inference_precision_hint=hint, device=DEVICE, ir=f"model.xml + model.bin ({weights})")
    metadata: dict[str, Any] = {"settings": settings}
    try:
        if searching:
            model, metadata["selective"] = quantize_int8_within(model, calibration, settings, float(max_drop))
        elif precision == "int8":
            model = quantize_int8(model, calibration, settings)
        content = serialize(model, hint)
    except (BackendUnavailable, ConversionError, DatasetError, UsageError):
        raise
    except Exception as exc:
        raise ConversionError(
            f"backend 'openvino' could not build {precision} for {source.name}: {error_message(exc)} "
            "(try another variant, or run it on backend tflite)"
        ) from None
    return content, metadata
