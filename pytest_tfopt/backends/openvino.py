"""OpenVINO backend: ``ov.convert_model`` → OpenVINO IR → ``Core.compile_model`` on the CPU.

Building: a Keras 3, tf_keras or SavedModel source is exported as a SavedModel
(:func:`~pytest_tfopt.backends.tf.export_saved_model`) and converted with
``openvino.convert_model``; a ``.tflite`` source is converted directly from its file. The IR
(``model.xml`` + ``model.bin``, float32 weights: ``compress_to_fp16=False``) is packed into a
deterministic zip (``.openvino.zip``). Node names that OpenVINO numbers from a process-wide
counter are renamed by graph position and the converter's record of the temporary input path
is dropped, so the same source gives the same bytes in every process. Inputs and outputs go by
their port names (the SavedModel signature's keys, sorted); free (``None``) axes stay dynamic
and run at the data's shapes.

Precisions (the IR of ``fp32``, ``bf16`` and ``float16`` is the same float32 graph; the
precision is the CPU plugin's ``INFERENCE_PRECISION_HINT``, stored in the IR's ``rt_info``
under ``tfopt/inference_precision`` and passed explicitly at compile time):

* ``fp32``: hint ``f32``. Set explicitly because the CPU plugin defaults to ``bf16`` on CPUs
  with AVX512-BF16 or AMX, which costs about 1e-3 of output error without saying so;
* ``bf16`` / ``float16``: hints ``bf16`` / ``f16``. Refused (the test skips) when the CPU plugin
  does not list ``BF16`` / ``FP16`` in ``OPTIMIZATION_CAPABILITIES``: it would silently run
  f32 and the variant would measure fp32 under another name. :class:`OpenVINORunner` also
  reads the hint back after compiling and refuses a mismatch;
* ``int8``: NNCF post-training quantization (``nncf.quantize``, ``PERFORMANCE`` preset:
  symmetric int8 weights and activations, CPU target, fast bias correction) calibrated on the calibration samples, hint ``f32`` for the layers
  that stay float. Needs ``pip install nncf``.

Anything else raises :class:`~pytest_tfopt.errors.BackendUnavailable` naming the variant.
Running: CPU device, ``INFERENCE_NUM_THREADS`` = the ``--tfopt-threads`` value,
``PERFORMANCE_HINT=LATENCY`` (one stream). ``Runner.info`` records the precision in effect
(read back from the compiled model), threads, device name and runtime version.

Note: ``openvino.convert_model`` (and NNCF) send anonymous usage telemetry through
``openvino-telemetry`` unless ``CI=true`` or the user opted out (``opt_in_out --opt_out``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..dataset import Dataset
from ..errors import BackendUnavailable, ConversionError, DatasetError, UsageError
from ..hardware import cpu_has_vnni
from ..models import SourceModel
from ..signature import Batch, Signature, TensorInfo, dtype_name, run_in_batches
from . import Backend, Runner, tflite_only_reason
from ._archive import pack
from .tf import export_saved_model

DEVICE = "CPU"
PRECISIONS = ("fp32", "bf16", "float16", "int8")
HINTS = {"fp32": "f32", "bf16": "bf16", "float16": "f16", "int8": "f32"}  # INFERENCE_PRECISION_HINT
CAPABILITIES = {"bf16": "BF16", "float16": "FP16"}  # OPTIMIZATION_CAPABILITIES entry each hint needs
HARDWARE = {"bf16": "AVX512-BF16 or AMX", "float16": "AVX512-FP16, AMX-FP16 or ARM fp16"}
ELSEWHERE = {"bf16": "tf or xla", "float16": "tflite or onnxruntime"}
RT_PRECISION = ["tfopt", "inference_precision"]
XML, BIN = "model.xml", "model.bin"
INSTALL = "pip install openvino (or pytest-tfopt[openvino])"
_UNCONVERTED = re.compile(r"No conversion rule found for operations?: ([^\n]+)")
_FAILED_OP = re.compile(r"^-- (\S+) with a message:", re.MULTILINE)


def _message(exc: BaseException) -> str:
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


def nncf_available() -> bool:
    return importlib.util.find_spec("nncf") is not None


def cpu_capabilities(core: Any) -> tuple[list[str], str]:
    """The precisions among the CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. ``FP32, INT8, BF16``), the CPU's name."""
    listed = [str(c) for c in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]
    return [c for c in listed if c not in ("BIN", "EXPORT_IMPORT")], str(core.get_property(DEVICE, "FULL_DEVICE_NAME"))


# ---- conversion --------------------------------------------------------------------------------
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
            what = f"no conversion rule for op {', '.join(ops)}" if ops else _message(exc)
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


# ---- runner ------------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


class OpenVINORunner(Runner):
    """An IR compiled for the OpenVINO CPU plugin with an explicit inference precision."""

    def __init__(self, content: bytes, core: Any, threads: int = 1, name: str = "model") -> None:
        import openvino as ov

        self.name = name
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            xml, weights = zf.read(XML), zf.read(BIN)
        self._weights = np.frombuffer(weights, dtype=np.uint8).copy()  # the model may keep pointing at it
        model = core.read_model(xml.decode("utf-8"), ov.Tensor(self._weights))
        hint = model.get_rt_info(RT_PRECISION).astype(str) if model.has_rt_info(RT_PRECISION) else "f32"
        self._batch = self._dynamic_batch(model)
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._compiled = core.compile_model(model, DEVICE, config)
        effective = _type_name(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        device_name = str(core.get_property(DEVICE, "FULL_DEVICE_NAME"))
        if effective != hint:
            raise BackendUnavailable(
                f"variant {name!r} on backend 'openvino' asked the CPU plugin for {hint} inference precision but it "
                f"runs {effective} on this CPU ({device_name}); run it on a CPU that supports {hint}"
            )
        self._inputs = port_names(self._compiled.inputs, "input")
        self._outputs = port_names(self._compiled.outputs, "output")
        self.signature = Signature(tuple(_tensor_info(n, p) for n, p in self._inputs.items()),
                                   tuple(_tensor_info(n, p) for n, p in self._outputs.items()))
        self.input_shape = self.signature.inputs[0].shape  # the first input's, for callers of one-input models
        self._request = self._compiled.create_infer_request()
        self.info: dict[str, Any] = {
            "threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS")),
            "runtime": f"openvino {ov.get_version()}",
            "device": DEVICE,
            "device_name": device_name,
            "inference_precision": effective,
            "performance_hint": str(self._compiled.get_property("PERFORMANCE_HINT")),
            "num_streams": int(self._compiled.get_property("NUM_STREAMS")),
            "batch": "dynamic" if self._batch is None else f"fixed at {self._batch}",
        }
        if self.signature.dynamic:
            self.info["shapes"] = "dynamic (free axes run at the data's shapes)"

    @staticmethod
    def _dynamic_batch(model: Any) -> int | None:
        """Make every input's batch axis dynamic when the graph allows it; else the fixed batch size."""
        shapes = {p: p.get_partial_shape() for p in model.inputs}
        fixed = [s[0].get_length() for s in shapes.values()
                 if s.rank.is_static and s.rank.get_length() > 0 and s[0].is_static]
        if not fixed:
            return None
        dims = {p: [-1] + [d.get_length() if d.is_static else -1 for d in list(s)[1:]]
                for p, s in shapes.items() if s.rank.is_static and s.rank.get_length() > 0}
        try:
            model.reshape(dims)
        except Exception:  # e.g. a Reshape with a constant batch inside: keep the exported batch
            return fixed[0]
        return None

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        real = len(next(iter(feed.values())))
        if self._batch is not None and real != self._batch:
            feed = {k: np.concatenate([v, np.repeat(v[-1:], self._batch - real, axis=0)]) for k, v in feed.items()}
        out = self._request.infer({self._inputs[n]: v for n, v in feed.items()})
        return {n: np.asarray(out[p])[:real] for n, p in self._outputs.items()}

    def _feed(self, x: Any) -> dict[str, np.ndarray]:
        """``x`` checked against the inputs, each in its port's element type (integer ids stay integers)."""
        return self.signature.feed(x, "input", self.name)

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        return self.signature.result(run_in_batches(self._feed(x), self._batch or batch_size, self._run))

    def prepare(self, x: Any) -> Callable[[], None]:
        import openvino as ov

        feed = self._feed(x)
        if self._batch is not None and len(next(iter(feed.values()))) != self._batch:
            raise DatasetError(f"{self.name}: input batch is fixed at {self._batch}: measure with batch_size={self._batch}")
        request = self._compiled.create_infer_request()
        for n, v in feed.items():  # copies: set once
            request.set_tensor(self._inputs[n], ov.Tensor(np.ascontiguousarray(v)))
        infer = request.infer

        def invoke() -> None:
            infer(share_outputs=True)

        return invoke


def _tensor_info(name: str, port: Any) -> TensorInfo:
    shape = port.get_partial_shape()
    dims = list(shape)[1:] if shape.rank.is_static else []
    return TensorInfo(name, tuple(d.get_length() if d.is_static else None for d in dims),
                      dtype_name(port.get_element_type().to_dtype()))


class OpenVINOBackend(Backend):
    """OpenVINO on the CPU: fp32, bf16/float16 inference precision and NNCF int8."""

    name = "openvino"
    artifact_suffix = ".openvino.zip"

    def __init__(self) -> None:
        self._core: Any = None

    @property
    def core(self) -> Any:
        """One ``openvino.Core`` per backend (it holds the loaded plugins)."""
        if self._core is None:
            import openvino as ov

            self._core = ov.Core()
        return self._core

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("openvino") is None:  # no import: ``pytest --help`` stays light
            return f"backend 'openvino' needs openvino: {INSTALL}"
        return None

    def unsupported_reason(self, variant: str, params: dict[str, Any] | None = None) -> str | None:
        """Why precision ``variant`` cannot be built or run here (``None`` when it can); checked before any work."""
        if variant not in PRECISIONS:
            return (
                f"variant {variant!r} is not available on backend 'openvino': it builds fp32, bf16 and float16 "
                f"(CPU inference-precision hints) and int8 (NNCF) models; use tflite for {variant}"
            )
        if reason := tflite_only_reason(self.name, variant, params):
            return reason
        if variant == "int8" and not nncf_available():
            return (
                "variant 'int8' on backend 'openvino' needs NNCF for post-training quantization: pip install nncf "
                "(or pytest-tfopt[openvino])"
            )
        if variant in CAPABILITIES and self.unavailable_reason() is None:
            capabilities, device_name = cpu_capabilities(self.core)
            if CAPABILITIES[variant] not in capabilities:
                return (
                    f"variant {variant!r} is not available on backend 'openvino' on this CPU ({device_name}): "
                    f"the CPU plugin supports {', '.join(capabilities)} and no {CAPABILITIES[variant]} (it needs "
                    f"{HARDWARE[variant]}), so it would silently run f32; run {variant} on backend "
                    f"{ELSEWHERE[variant]}"
                )
        return None

    def convert(self, source: SourceModel, recipe: Any, calibration: Any, params: dict[str, Any]) -> Artifact:
        precision = recipe.name
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
                f"backend 'openvino' could not build {precision} for {source.name}: {_message(exc)} "
                "(try another variant, or run it on backend tflite)"
            ) from None
        converter = "openvino.convert_model" + (" + nncf.quantize" if precision == "int8" else "")
        return Artifact(
            content,
            {"variant": precision, "converter": converter, "settings": settings, "format": "zip"},
            self.artifact_suffix,
        )

    def load(self, artifact: Artifact, threads: int) -> OpenVINORunner:
        return OpenVINORunner(artifact.content, self.core, threads, name=artifact.variant)

    def versions(self) -> dict[str, str]:
        # nncf builds int8: another version, or another overflow fix, is another artifact
        return {**tfenv.dist_versions("openvino", "nncf"), "openvino-int8-overflow-fix": overflow_fix()}
