"""ONNX Runtime backend: tf2onnx → ONNX → ``onnxruntime.InferenceSession``.

Building: the source's serving ``tf.function`` (Keras 3, tf_keras, or a SavedModel's tested
signature; inputs and outputs by name) goes through ``tf2onnx.convert.from_function``, so the graph's
inputs and outputs carry the model's names and free axes stay symbolic; a ``.tflite`` source goes
through ``tf2onnx.convert.from_tflite``. Every variant starts from that fp32 graph. The opset is ``TFOPT_ONNX_OPSET`` or the ``opset`` argument
of :class:`OnnxRuntimeBackend` (default 17); it is part of the cache key. The conversion and
quantization steps live in :mod:`pytest_tfopt.backends.onnx_convert` (shared with ``tensorrt``);
this module holds the runner and the backend.

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

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..errors import BackendUnavailable, ConversionError, DatasetError, first_line, setting
from ..hardware import cpu_has_vnni
from ..models import SourceModel
from ..signature import Signature, TensorInfo, dtype_name, run_in_batches, shape_text
from . import Backend, Runner, tflite_only_reason
from .onnx_convert import (
    CALIBRATION_BATCH,
    DEFAULT_OPSET,
    OPSET_ENV,
    PACKAGES,
    calibration_reader,
    graph_feed,
    graph_inputs,
    missing_packages,
    opset_from_env,
    plain_name,
    quantize,
    to_onnx,
    unknown_ops,
)

# The conversion helpers (and cpu_has_vnni, now in ..hardware) were defined here: still importable from this module.
__all__ = [
    "CALIBRATION_BATCH", "DEFAULT_OPSET", "GPU_PROVIDERS", "OPSET_ENV", "PACKAGES", "PRECISIONS",
    "OnnxRuntimeBackend", "OnnxRuntimeRunner", "calibration_reader", "cpu_has_vnni", "graph_feed", "graph_inputs",
    "missing_packages", "opset_from_env", "quantize", "to_onnx", "unknown_ops",
]

PRECISIONS = ("fp32", "dynamic", "float16", "int8")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}


# ---- runner ------------------------------------------------------------------------------------
def _tensor_info(name: str, arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape[1:])
    return TensorInfo(name, shape, dtype_name(_ORT_TYPES.get(arg.type, np.float32)))


class OnnxRuntimeRunner(Runner):
    """One ONNX model in an ``onnxruntime.InferenceSession``, inputs and outputs by graph name (``:0`` dropped).

    Free (symbolic) axes run at the data's shapes; integer inputs are fed as integers.
    """

    def __init__(self, content: bytes, threads: int = 1, name: str = "model", profile_prefix: str | None = None) -> None:
        import onnxruntime as ort

        self.name = name
        options = ort.SessionOptions()
        if profile_prefix is not None:  # ONNX Runtime's own per-node profiler (pytest_tfopt.explain.profile_ort)
            options.enable_profiling, options.profile_file_prefix = True, profile_prefix
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
        ins = {plain_name(a.name): a.name for a in self._session.get_inputs()}
        outs = {plain_name(a.name): a.name for a in self._session.get_outputs()}
        return dict(sorted(ins.items())), dict(sorted(outs.items()))

    def end_profiling(self) -> str:
        """Stop ONNX Runtime's profiler (``profile_prefix`` given) and return the path of its JSON trace."""
        return self._session.end_profiling()

    @functools.cached_property
    def signature(self) -> Signature:  # type: ignore[override]
        args = {plain_name(a.name): a for a in [*self._session.get_inputs(), *self._session.get_outputs()]}
        ins, outs = self._graph_names
        return Signature(tuple(_tensor_info(n, args[n]) for n in ins), tuple(_tensor_info(n, args[n]) for n in outs))

    def _graph_feed(self, x: Any) -> dict[str, np.ndarray]:
        feed = self.signature.feed(x, "input", self.name)
        return {self._graph_names[0][n]: v for n, v in feed.items()}

    @functools.cached_property
    def _declared_ranks(self) -> dict[str, int]:
        """Output name → the rank (batch axis included) the graph declares; outputs of unknown rank left out."""
        return {plain_name(a.name): len(a.shape) for a in self._session.get_outputs() if a.shape}

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._graph_names[1]
        results = dict(zip(outs, self._session.run(list(outs.values()), feed), strict=True))
        self._check_ranks(results, len(next(iter(feed.values()))))
        return results

    def _check_ranks(self, results: dict[str, np.ndarray], batch: int) -> None:
        """A one-line ConversionError when an output's rank is not the one the graph declares.

        Under several xdist workers ONNX Runtime once returned one output of a multi-output FCN with a
        spurious leading axis (``(1, n, 48, 48, 1)`` for ``(n, 48, 48, 1)``), never reproduced alone: without
        this check it would reach the budgets as a wrong-shaped array instead of failing where it happens.
        """
        for t in self.signature.outputs:
            got, rank = np.shape(results[t.name]), self._declared_ranks.get(t.name)
            if rank is not None and len(got) != rank:
                raise ConversionError(
                    f"ONNX Runtime returned output {t.name!r} of {self.name} with shape {shape_text(got)}, but the "
                    f"graph declares {shape_text((batch, *t.shape))}: run again, or rebuild it with {setting('rebuild')}"
                )

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

    def convert(self, source: SourceModel, recipe: Any, calibration: Any, params: dict[str, Any]) -> Artifact:
        precision = recipe.name
        opset = self.opset
        proto = to_onnx(source, opset)
        settings = {"opset": str(opset)}
        try:
            content = quantize(proto, precision, calibration, settings, per_channel=params.get("per_channel", True),
                               reduce_range=self.reduce_range)
        except (BackendUnavailable, ConversionError, DatasetError):
            raise
        except Exception as exc:
            raise ConversionError(
                f"onnxruntime could not build {precision} for {source.name}: {first_line(exc)} "
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
