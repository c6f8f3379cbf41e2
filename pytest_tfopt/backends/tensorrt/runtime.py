"""Stage 3 of the tensorrt backend, TensorRT Python route: :class:`TensorRTRunner` runs a serialized engine.

The TensorRT runtime deserializes the engine; ``cuda.bindings.runtime`` (``cuda-python``) holds the
device memory: one buffer per input and output tensor, bound by name and grown on demand, freed
with the CUDA stream when the runner is collected. Every input is shaped from its data within the
engine's optimization profile (:func:`~pytest_tfopt.backends.tensorrt.engine.outside_profile`
explains a batch that does not fit). :func:`engine_bindings` reads the engine's inputs and outputs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import ConversionError, DatasetError, setting
from ...signature import Signature, TensorInfo, dtype_name, run_in_batches, shape_text
from .. import Runner
from ..onnx_convert import plain_name
from .engine import Profile, outside_profile, profile_text, trt_logger
from .export import REMEDY
from .machine import cudart as cuda_runtime

#: ``Runner.info["route"]`` of engines run by the TensorRT Python API
ROUTE_TENSORRT = "tensorrt-python"


def _cuda(result: tuple, what: str) -> Any:
    """The value of a ``cuda-python`` call (``(err, *values)``); a ConversionError naming ``what`` on failure."""
    cudart = cuda_runtime()
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise ConversionError(f"backend 'tensorrt': CUDA {what} failed: {cudart.cudaGetErrorName(err)[1]!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _free(cudart: Any, buffers: dict[str, list[int]], stream: Any) -> None:
    for ptr, _ in buffers.values():
        cudart.cudaFree(ptr)
    if stream is not None:
        cudart.cudaStreamDestroy(stream)


def engine_bindings(engine: Any, input_mode: Any, nptype: Callable[[Any], Any]) -> tuple[Signature, dict[str, str], Profile]:
    """An engine's I/O tensors by name (``get_tensor_name``/``get_tensor_mode``).

    Returns the :class:`Signature` (names without a ``:0`` suffix and sorted, as the onnxruntime
    backend names them; per-sample shapes, ``None`` for dynamic axes; dtypes through ``nptype``, i.e.
    ``trt.nptype``), each name's engine tensor name, and every input's (min, opt, max) shapes of
    profile 0. ``input_mode`` is ``trt.TensorIOMode.INPUT``.
    """
    inputs, outputs, tensors, profile = [], [], {}, {}
    for i in range(engine.num_io_tensors):
        tensor = engine.get_tensor_name(i)
        name = plain_name(tensor)
        tensors[name] = tensor
        shape = tuple(None if int(d) < 0 else int(d) for d in tuple(engine.get_tensor_shape(tensor))[1:])
        info = TensorInfo(name, shape, dtype_name(np.dtype(nptype(engine.get_tensor_dtype(tensor)))))
        if engine.get_tensor_mode(tensor) == input_mode:
            inputs.append(info)
            lo, opt, hi = engine.get_tensor_profile_shape(tensor, 0)
            profile[name] = (tuple(int(d) for d in lo), tuple(int(d) for d in opt), tuple(int(d) for d in hi))
        else:
            outputs.append(info)
    if not inputs or not outputs:
        raise ConversionError(f"backend 'tensorrt': the engine has inputs {[t.name for t in inputs]} and outputs "
                              f"{[t.name for t in outputs]}: it needs at least one of each")
    signature = Signature(tuple(sorted(inputs, key=lambda t: t.name)), tuple(sorted(outputs, key=lambda t: t.name)))
    return signature, tensors, profile


class TensorRTRunner(Runner):
    """A deserialized engine, every input and output bound by name; host arrays in, float32 arrays out.

    One device buffer per input and output, grown when a batch (or a free axis) needs more; before
    each run every input gets its batch's shape (``set_input_shape``: free axes from the data, within
    the engine's optimization profile). ``prepare`` copies the batch to the GPU once; its invocation
    is ``execute_async_v3`` plus a stream synchronize (GPU compute only, no host transfers).
    """

    def __init__(self, engine_bytes: bytes, name: str = "model", info: dict[str, Any] | None = None) -> None:
        import tensorrt as trt

        cudart = cuda_runtime()
        self.name = name
        self._logger = trt_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            why = (self._logger.errors or ["not a TensorRT engine"])[-1].splitlines()[0][:200]
            raise ConversionError(
                f"backend 'tensorrt': cannot load the {name} engine: {why} (built by another TensorRT or GPU? "
                f"run with {setting('rebuild')})"
            )
        self.signature, self._tensors, self.profile = engine_bindings(self._engine, trt.TensorIOMode.INPUT, trt.nptype)
        self.input_shape = self.signature.inputs[0].shape  # the first input's, for callers of one-input models
        self.max_batch = min(hi[0] for _, _, hi in self.profile.values())
        self._context = self._engine.create_execution_context()
        self._stream = _cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, list[int]] = {}  # tensor name → [device pointer, bytes]; grown on demand
        self._finalizer = weakref.finalize(self, _free, cudart, self._buffers, self._stream)
        self.info: dict[str, Any] = {**(info or {}), "route": ROUTE_TENSORRT, "tensorrt": trt.__version__,
                                     "max_batch": self.max_batch, "latency_scope": "GPU compute (input on device)",
                                     "profile": profile_text(self.profile)}

    def _buffer(self, name: str, nbytes: int) -> int:
        """The device buffer of tensor ``name``, at least ``nbytes`` long, bound to the context."""
        cudart = cuda_runtime()
        held = self._buffers.get(name)
        if held is None or held[1] < nbytes:
            if held is not None:
                cudart.cudaFree(held[0])
                del self._buffers[name]
            size = max(nbytes, 1)
            self._buffers[name] = [_cuda(cudart.cudaMalloc(size), "cudaMalloc"), size]
            self._context.set_tensor_address(self._tensors[name], int(self._buffers[name][0]))
        return self._buffers[name][0]

    def _load(self, feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """Copy ``feed`` (input name → batch) to the GPU; the output shapes by name."""
        cudart = cuda_runtime()
        why = outside_profile({k: v.shape for k, v in feed.items()}, self.profile)
        if why:
            raise DatasetError(f"backend 'tensorrt' ({self.name}): {why}")
        hosts = {t.name: np.ascontiguousarray(feed[t.name], dtype=t.dtype) for t in self.signature.inputs}
        for name, host in hosts.items():
            if not self._context.set_input_shape(self._tensors[name], host.shape):
                raise DatasetError(f"backend 'tensorrt' ({self.name}): the engine refused shape "
                                   f"{shape_text(host.shape)} for input {name!r}")
            _cuda(cudart.cudaMemcpyAsync(self._buffer(name, host.nbytes), host.ctypes.data, host.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream), "copy to GPU")
        shapes = {}
        for t in self.signature.outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(self._tensors[t.name]))
            if any(d < 0 for d in shape):
                raise ConversionError(f"backend 'tensorrt': output {t.name!r} of {self.name} has a data-dependent "
                                      f"shape {shape}, which this runner does not support ({REMEDY})")
            self._buffer(t.name, int(np.prod(shape)) * np.dtype(t.dtype).itemsize)
            shapes[t.name] = shape
        _cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return shapes

    def _execute(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise ConversionError(f"backend 'tensorrt': executing the {self.name} engine failed")
        _cuda(cuda_runtime().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = cuda_runtime()
        shapes = self._load(feed)
        self._execute()
        outputs = {}
        for t in self.signature.outputs:
            out = np.empty(shapes[t.name], np.dtype(t.dtype))
            _cuda(cudart.cudaMemcpy(out.ctypes.data, self._buffers[t.name][0], out.nbytes,
                                    cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost), "copy from GPU")
            outputs[t.name] = out.astype(np.float32, copy=False)
        return outputs

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        feed = self.signature.feed(x, "input", self.name)
        limit = min(batch_size or self.max_batch, self.max_batch)
        return self.signature.result(run_in_batches(feed, limit, self._run))

    def prepare(self, x: Any) -> Callable[[], None]:
        self._load(self.signature.feed(x, "input", self.name))
        return self._execute
