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
from ..errors import DatasetError, first_line
from ..litert import inspect_tflite, interpreter_class, io_details, tensor_info  # noqa: F401 - inspect_tflite: public here too
from ..signature import Signature, n_samples, run_in_batches
from . import Backend, Runner

DEFAULT_BATCH = 64


@functools.lru_cache(maxsize=1)
def _runtime() -> str:
    from importlib import metadata

    try:
        return f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    except metadata.PackageNotFoundError:
        return "tflite_runtime"


class TFLiteRunner(Runner):
    """Runs one ``.tflite`` artifact, inputs and outputs by signature name.

    Every input is resized to the batch and to the data's own shape on free axes (fully
    convolutional or variable-length models run at the shapes they are given).
    """

    def __init__(self, content: bytes, threads: int = 1, name: str = "model", signature: str = "serving_default") -> None:
        self.content = content
        self.threads = threads
        self.name = name
        self.info: dict[str, Any] = {"threads": threads, "runtime": _runtime()}
        self._interp = self._make()
        self._key, ins, outs = io_details(self._interp, signature)
        self._in_index = {n: int(d["index"]) for n, d in ins.items()}
        self._out_index = {n: int(d["index"]) for n, d in outs.items()}
        self.signature = Signature(tuple(tensor_info(n, d) for n, d in ins.items()), tuple(tensor_info(n, d) for n, d in outs.items()))
        self.input_shape = self.signature.inputs[0].shape  # the first input's, for callers of one-input models
        self._resizable = True
        self._refresh()

    def _make(self) -> Any:
        Interpreter, resolver = interpreter_class()
        try:
            interp = Interpreter(model_content=self.content, num_threads=self.threads)
            interp.allocate_tensors()
            self.info["delegate"] = "XNNPACK"
            return interp
        except (RuntimeError, ValueError) as exc:
            if "XNNPACK" not in str(exc) and "delegate" not in str(exc).lower():
                raise
            reason = first_line(exc, 160)
        interp = Interpreter(
            model_content=self.content,
            num_threads=self.threads,
            experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
        self.info["delegate"] = "builtin"
        self.info["xnnpack_fallback"] = reason
        return interp

    @property
    def interpreter(self) -> Any:
        """The LiteRT interpreter this runner invokes (read-only use: per-op profiles read its tensors)."""
        return self._interp

    def _refresh(self) -> None:
        details = {int(d["index"]): d for d in self._interp.get_input_details()}
        self._in = {n: details[i] for n, i in self._in_index.items()}
        outs = {int(d["index"]): d for d in self._interp.get_output_details()}
        self._out = {n: outs[i] for n, i in self._out_index.items()}

    @property
    def _batch(self) -> int:
        return int(next(iter(self._in.values()))["shape"][0])

    # ---- batching -------------------------------------------------------
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(int(v) for v in d["shape"]) for n, d in self._in.items()}

    def _resize(self, shapes: dict[str, tuple[int, ...]]) -> bool:
        """Make every input hold ``shapes`` (batch first); False when the model forbids it."""
        before = self._shapes()
        if shapes == before:
            return True
        if not self._resizable:
            return False
        try:
            for n, shape in shapes.items():
                self._interp.resize_tensor_input(self._in_index[n], list(shape), strict=False)
            self._interp.allocate_tensors()
        except (RuntimeError, ValueError):
            self._resizable = False
            self.info["batching"] = "per-sample (input cannot be resized)"
            for n, shape in before.items():
                self._interp.resize_tensor_input(self._in_index[n], list(shape), strict=False)
            self._interp.allocate_tensors()
            return False
        self._refresh()
        if self.signature.dynamic:
            self.info["input_shapes"] = {n: list(s[1:]) for n, s in shapes.items()}
        return True

    def _quantize(self, name: str, x: np.ndarray) -> np.ndarray:
        detail = self._in[name]
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            return x.astype(dtype, copy=False)
        scale, zero = detail["quantization"]
        if scale == 0:
            return x.astype(dtype)
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, name: str, y: np.ndarray) -> np.ndarray:
        if y.dtype.kind == "f":  # get_tensor() already copied it: no second copy
            return y.astype(np.float32, copy=False)
        scale, zero = self._out[name]["quantization"]
        if scale == 0:
            return y.astype(np.float32)
        return (y.astype(np.float32) - zero) * scale

    def _check(self, x: Any) -> dict[str, np.ndarray]:
        feed = self.signature.feed(x, "input", self.name)
        if min(len(v) for v in feed.values()) == 0:
            raise DatasetError("predict() got 0 samples: give at least one")
        return feed

    def _set(self, feed: dict[str, np.ndarray]) -> None:
        for n, v in feed.items():
            self._interp.set_tensor(self._in_index[n], self._quantize(n, v))

    def _read(self) -> dict[str, np.ndarray]:
        return {n: self._dequantize(n, self._interp.get_tensor(i)) for n, i in self._out_index.items()}

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        feed = self._check(x)
        n = n_samples(feed)
        limit = min(batch_size or DEFAULT_BATCH, n)
        batch = -(-n // -(-n // limit))
        per_sample = {k: v.shape[1:] for k, v in feed.items()}
        if not self._resize({k: (batch, *s) for k, s in per_sample.items()}):
            batch = self._batch
            fixed = {k: tuple(int(d) for d in self._in[k]["shape"][1:]) for k in feed}
            if fixed != per_sample:
                raise DatasetError(f"{self.name}: inputs are fixed at {fixed} and cannot be resized to {per_sample}")
        return self.signature.result(run_in_batches(feed, batch, self._invoke_padded))

    def _invoke_padded(self, chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One invocation on ``chunk``, padded to the input's batch when the model fixes it (outputs cut back)."""
        real = n_samples(chunk)
        if real < self._batch:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], self._batch - real, axis=0)]) for k, v in chunk.items()}
        self._set(chunk)
        self._interp.invoke()
        return {name: value[:real] for name, value in self._read().items()}

    def prepare(self, x: Any) -> Callable[[], None]:
        feed = self._check(x)
        if not self._resize({k: v.shape for k, v in feed.items()}):
            raise DatasetError(f"{self.name}: input batch is fixed at {self._batch}: measure with batch_size={self._batch}")
        self._set(feed)
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
        produced |= set(self._in_index.values())
        sizes = {int(d["index"]): int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in details}
        activations = sum(size for index, size in sizes.items() if index in produced)
        return {"activation_bytes": activations, "weight_bytes": sum(sizes.values()) - activations}


class TFLiteBackend(Backend):
    """LiteRT interpreter, XNNPACK with builtin-kernel fallback."""

    name = "tflite"
    artifact_suffix = ".tflite"

    def unavailable_reason(self) -> str | None:
        try:
            interpreter_class()
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
