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
  that stay float. Needs ``pip install nncf``. ``int8(max_drop=0.01)``: the same, unless its top-1 drop on the
  calibration samples breaks the budget; then ``nncf.quantize_with_accuracy_control`` reverts the ops that cost
  most to float until it holds (the artifact's ``selective`` metadata names them; one class output only).

Anything else raises :class:`~pytest_tfopt.errors.BackendUnavailable` naming the variant.
Running: CPU device, ``INFERENCE_NUM_THREADS`` = the ``--tfopt-threads`` value,
``PERFORMANCE_HINT=LATENCY`` (one stream). ``Runner.info`` records the precision in effect
(read back from the compiled model), threads, device name and runtime version.

Note: ``openvino.convert_model`` (and NNCF) send anonymous usage telemetry through
``openvino-telemetry`` unless ``CI=true`` or the user opted out (``opt_in_out --opt_out``).

Building (conversion, NNCF, serialization) lives in :mod:`pytest_tfopt.backends.openvino_convert`;
this module holds :class:`OpenVINOBackend` and :class:`OpenVINORunner`. Every public name of
``openvino_convert`` is importable from here too, as before the split.
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..errors import BackendUnavailable, DatasetError
from ..models import SourceModel
from ..signature import Signature, TensorInfo, dtype_name, run_in_batches
from . import Backend, Runner, tflite_only_reason
from .openvino_convert import (
    BIN,
    DEVICE,
    HINTS,
    OVERFLOW_FIX_ENV,
    OVERFLOW_FIX_MODES,
    RT_PRECISION,
    XML,
    Top1Judge,
    build_ir,
    canonicalize,
    error_message,
    overflow_fix,
    port_feed,
    port_name,
    port_names,
    quantize_int8,
    quantize_int8_within,
    quantized_ops,
    serialize,
    to_openvino,
    unconverted_ops,
)

__all__ = [
    "BIN", "CAPABILITIES", "DEVICE", "ELSEWHERE", "HARDWARE", "HINTS", "INSTALL", "OVERFLOW_FIX_ENV",
    "OVERFLOW_FIX_MODES", "PRECISIONS", "RT_PRECISION", "XML",
    "OpenVINOBackend", "OpenVINORunner", "Top1Judge",
    "build_ir", "canonicalize", "cpu_capabilities", "error_message", "nncf_available", "overflow_fix", "port_feed",
    "port_name", "port_names", "quantize_int8", "quantize_int8_within", "quantized_ops", "serialize", "to_openvino",
    "unconverted_ops",
]

PRECISIONS = ("fp32", "bf16", "float16", "int8")
CAPABILITIES = {"bf16": "BF16", "float16": "FP16"}  # OPTIMIZATION_CAPABILITIES entry each hint needs
HARDWARE = {"bf16": "AVX512-BF16 or AMX", "float16": "AVX512-FP16, AMX-FP16 or ARM fp16"}
ELSEWHERE = {"bf16": "tf or xla", "float16": "tflite or onnxruntime"}
INSTALL = "pip install openvino (or pytest-tfopt[openvino])"


def nncf_available() -> bool:
    """Whether NNCF (needed for int8) is installed; looked up without importing it."""
    return importlib.util.find_spec("nncf") is not None


def cpu_capabilities(core: Any) -> tuple[list[str], str]:
    """The precisions among the CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. ``FP32, INT8, BF16``), the CPU's name."""
    listed = [str(c) for c in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]
    return [c for c in listed if c not in ("BIN", "EXPORT_IMPORT")], str(core.get_property(DEVICE, "FULL_DEVICE_NAME"))


# ---- runner ------------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


class OpenVINORunner(Runner):
    """An IR compiled for the OpenVINO CPU plugin with an explicit inference precision."""

    def __init__(self, content: bytes, core: Any, threads: int = 1, name: str = "model",
                 extra_config: dict[str, Any] | None = None) -> None:
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
            **(extra_config or {}),  # e.g. PERF_COUNT for the per-op profile (pytest_tfopt.explain.profile_openvino)
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
        request = self._prepared = self._compiled.create_infer_request()
        for n, v in feed.items():  # copies: set once
            request.set_tensor(self._inputs[n], ov.Tensor(np.ascontiguousarray(v)))
        infer = request.infer

        def invoke() -> None:
            infer(share_outputs=True)

        return invoke

    def profiling_info(self) -> list[Any]:
        """The CPU plugin's per-node counters of the last :meth:`prepare` d invocation (compiled with ``PERF_COUNT``)."""
        return list(self._prepared.get_profiling_info())


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
        max_drop = params.get("max_drop") if precision == "int8" else None
        content, metadata = build_ir(source, precision, calibration, max_drop)
        quantizer = metadata["settings"].get("quantizer")
        converter = "openvino.convert_model" + (f" + {quantizer}" if quantizer else "")
        return Artifact(
            content, {"variant": precision, "converter": converter, **metadata, "format": "zip"}, self.artifact_suffix
        )

    def load(self, artifact: Artifact, threads: int) -> OpenVINORunner:
        return OpenVINORunner(artifact.content, self.core, threads, name=artifact.variant)

    def versions(self) -> dict[str, str]:
        # nncf builds int8: another version, or another overflow fix, is another artifact
        return {**tfenv.dist_versions("openvino", "nncf"), "openvino-int8-overflow-fix": overflow_fix()}
