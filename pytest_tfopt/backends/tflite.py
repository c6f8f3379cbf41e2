"""TFLite backend on the LiteRT interpreter (``ai_edge_litert``).

XNNPACK is LiteRT's default delegate; when it refuses a graph ("failed to create
XNNPACK runtime") the runner falls back to the builtin kernels and records that in
``Runner.info``. Inputs are batched by resizing the input tensor; a model whose
input cannot be resized runs per sample. int8/int16 inputs and outputs are
quantized and dequantized with the tensor's scale and zero point, so callers
always see floats.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..errors import DatasetError
from ..models import check_input_shape
from . import Backend, Runner

DEFAULT_BATCH = 64


def _interpreter_cls() -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter, OpResolverType


def inspect_tflite(content: bytes) -> tuple[tuple[int | None, ...], str]:
    """Per-sample input shape and dtype of a ``.tflite`` flatbuffer (raises if it is not one)."""
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    Interpreter, resolver = _interpreter_cls()
    interp = Interpreter(
        model_content=content,
        experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    detail = interp.get_input_details()[0]
    sig = detail.get("shape_signature", detail["shape"])
    return tuple(None if d < 0 else int(d) for d in sig[1:]), np.dtype(detail["dtype"]).name


@functools.lru_cache(maxsize=1)
def _runtime() -> str:
    from importlib import metadata

    try:
        return f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    except metadata.PackageNotFoundError:
        return "tflite_runtime"


class TFLiteRunner(Runner):
    """Runs one ``.tflite`` artifact."""

    def __init__(self, content: bytes, threads: int = 1, name: str = "model") -> None:
        self.content = content
        self.threads = threads
        self.name = name
        self.info: dict[str, Any] = {"threads": threads, "runtime": _runtime()}
        self._interp = self._make()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        sig = self._in.get("shape_signature", self._in["shape"])
        self.input_shape = tuple(None if d < 0 else int(d) for d in sig[1:])
        self._batch = int(self._in["shape"][0])
        self._resizable = True

    def _make(self) -> Any:
        Interpreter, resolver = _interpreter_cls()
        try:
            interp = Interpreter(model_content=self.content, num_threads=self.threads)
            interp.allocate_tensors()
            self.info["delegate"] = "XNNPACK"
            return interp
        except (RuntimeError, ValueError) as exc:
            if "XNNPACK" not in str(exc) and "delegate" not in str(exc).lower():
                raise
            reason = str(exc).strip().splitlines()[0][:160]
        interp = Interpreter(
            model_content=self.content,
            num_threads=self.threads,
            experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
        self.info["delegate"] = "builtin"
        self.info["xnnpack_fallback"] = reason
        return interp

    # ---- batching -------------------------------------------------------
    def _resize(self, batch: int) -> bool:
        """Make the input hold ``batch`` samples; False when the model forbids it."""
        if batch == self._batch:
            return True
        if not self._resizable:
            return False
        try:
            self._interp.resize_tensor_input(self._in["index"], [batch, *self._in["shape"][1:]], strict=False)
            self._interp.allocate_tensors()
        except (RuntimeError, ValueError):
            self._resizable = False
            self.info["batching"] = "per-sample (input cannot be resized)"
            self._interp.resize_tensor_input(self._in["index"], [self._batch, *self._in["shape"][1:]], strict=False)
            self._interp.allocate_tensors()
            return False
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._batch = batch
        return True

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._in["dtype"])
        if np.issubdtype(dtype, np.floating):
            return x.astype(dtype, copy=False)
        scale, zero = self._in["quantization"]
        if scale == 0:
            return x.astype(dtype)
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if np.issubdtype(y.dtype, np.floating):
            return y.astype(np.float32, copy=True)
        scale, zero = self._out["quantization"]
        if scale == 0:
            return y.astype(np.float32)
        return (y.astype(np.float32) - zero) * scale

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == len(self.input_shape):
            x = x[None]  # one sample
        check_input_shape(self.input_shape, x, "input", self.name)
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise DatasetError(f"input dtype {x.dtype} is not numeric: convert it to float32")
        return x

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        x = self._check(x)
        n = len(x)
        if n == 0:
            raise DatasetError("predict() got 0 samples: give at least one")
        # spread the samples evenly over the fewest batches of at most batch_size (65 samples with a
        # limit of 64 run as 33 + 32, not 64 + a padded 64), so padding wastes less than one sample per batch
        limit = min(batch_size or DEFAULT_BATCH, n)
        batch = -(-n // -(-n // limit))
        if not self._resize(batch):
            batch = self._batch
        outputs = []
        for start in range(0, n, batch):
            chunk = x[start : start + batch]
            real = len(chunk)
            if real < batch:  # pad the last batch instead of reallocating
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
            self._interp.set_tensor(self._in["index"], self._quantize(chunk))
            self._interp.invoke()
            outputs.append(self._dequantize(self._interp.get_tensor(self._out["index"]))[:real])
        return np.concatenate(outputs)

    def prepare(self, x: np.ndarray) -> Callable[[], None]:
        x = self._check(x)
        if not self._resize(len(x)):
            raise DatasetError(f"{self.name}: input batch is fixed at {self._batch}: measure with batch_size={self._batch}")
        self._interp.set_tensor(self._in["index"], self._quantize(x))
        return self._interp.invoke

    def memory_info(self) -> dict[str, int]:
        """Bytes of the interpreter's tensors at their current shapes, split by kind.

        ``activation_bytes``: graph inputs and every op's outputs, the tensors TFLite's arena
        holds, summed as if none shared memory (the arena planner overlaps tensors whose
        lifetimes do not meet, so the arena itself is at most this; a delegate such as XNNPACK
        keeps its own workspace on top, which the runtime does not report).
        ``weight_bytes``: the other (constant) tensors, read from the model buffer.
        """
        try:
            details = self._interp.get_tensor_details()
            ops = self._interp._get_ops_details()  # no public API lists which tensors ops produce
        except (AttributeError, RuntimeError, ValueError):
            return {}
        produced = {int(i) for op in ops for i in op["outputs"]}
        produced |= {int(d["index"]) for d in self._interp.get_input_details()}
        sizes = {int(d["index"]): int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in details}
        activations = sum(size for index, size in sizes.items() if index in produced)
        return {"activation_bytes": activations, "weight_bytes": sum(sizes.values()) - activations}


class TFLiteBackend(Backend):
    """LiteRT interpreter, XNNPACK with builtin-kernel fallback."""

    name = "tflite"
    artifact_suffix = ".tflite"

    def unavailable_reason(self) -> str | None:
        try:
            _interpreter_cls()
        except ImportError:
            return "backend 'tflite' needs the LiteRT interpreter: pip install ai-edge-litert"
        return None

    def load(self, artifact: Artifact, threads: int) -> TFLiteRunner:
        return TFLiteRunner(artifact.content, threads, name=artifact.variant)

    def versions(self) -> dict[str, str]:
        from importlib import metadata

        try:
            return {"ai-edge-litert": metadata.version("ai-edge-litert")}
        except metadata.PackageNotFoundError:
            return {}
