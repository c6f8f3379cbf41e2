"""TensorRT backend: tf2onnx → ONNX for TensorRT → engine on an NVIDIA GPU.

TF-TRT is gone from pip TensorFlow (2.18+), so the route is the ONNX one. One module per stage:

1. :mod:`.export`, **ONNX for TensorRT** (no GPU needed, :func:`onnx_for_tensorrt`): strongly
   typed graphs, ``fp32`` as converted, ``float16`` FP16 inside with FP32 I/O, ``int8`` with
   explicit symmetric Q/DQ (:data:`TRT_QDQ_OPTIONS`) calibrated on every input by name.
2. :mod:`.engine`, **engine** (needs ``tensorrt`` ≥ 10, ``cuda-python`` and a GPU,
   :func:`build_engine`): one optimization profile over every input (:func:`optimization_profile`),
   a workspace limit, and the key an engine is cached under (:func:`engine_cache_key`: engines
   are not portable across TensorRT versions and GPU models).
3. **Run**: :mod:`.runtime` (:class:`TensorRTRunner`: TensorRT runtime + ``cuda.bindings.runtime``
   device memory; tensors bound by name, every input shaped from its data), or, when the
   ``tensorrt`` Python package is absent but ``onnxruntime-gpu`` has the
   ``TensorrtExecutionProvider``, :mod:`.ort` (:class:`OrtTensorRTRunner`: the ONNX bytes are the
   artifact and ONNX Runtime builds and caches the engine with the same profile).
   ``Runner.info["route"]`` says which. Both take an array or a mapping name → array and return an
   array for a one-output model, else a dict by output name.

:mod:`.machine` probes the GPU and the packages; :mod:`.backend` holds :class:`TensorRTBackend`,
which wires the stages together. The ONNX conversion they start from is shared with the
onnxruntime backend (:mod:`pytest_tfopt.backends.onnx_convert`).

Settings: ``TFOPT_ONNX_OPSET`` (default 17), ``TFOPT_TRT_WORKSPACE_MB`` (1024),
``TFOPT_TRT_MAX_BATCH`` (64), ``TFOPT_TRT_MAX_AXIS`` (256: free non-batch axes; with the max batch
it bounds the engine's activation memory), ``TFOPT_TRT_ENGINE_CACHE`` (ORT route engine directory).

Every public name of the submodules is importable from this package, as it was from the single
``tensorrt.py`` module it replaces. To replace a machine probe (``probe_gpu``, ``has_module``, …),
patch it on :mod:`.machine`, where the backend looks it up.
"""

from __future__ import annotations

from .backend import TensorRTBackend
from .engine import (
    DEFAULT_MAX_AXIS,
    DEFAULT_MAX_BATCH,
    DEFAULT_WORKSPACE_MB,
    ENGINE_CACHE_ENV,
    MAX_AXIS_ENV,
    MAX_BATCH_ENV,
    WORKSPACE_ENV,
    Profile,
    build_engine,
    describe_parser_errors,
    engine_cache_key,
    input_shapes,
    optimization_profile,
    outside_profile,
    profile_text,
)
from .export import (
    INT8_OP_TYPES,
    PRECISIONS,
    TRT_QDQ_OPTIONS,
    int8_calibration_reader,
    onnx_for_tensorrt,
    onnx_precision,
    qdq_int8,
)
from .machine import Gpu, has_cuda_python, ort_has_tensorrt_ep, probe_gpu, tensorrt_version
from .ort import ROUTE_ORT, OrtTensorRTRunner, ort_provider_options, ort_tensorrt_session
from .runtime import ROUTE_TENSORRT, TensorRTRunner, engine_bindings

__all__ = [
    "DEFAULT_MAX_AXIS", "DEFAULT_MAX_BATCH", "DEFAULT_WORKSPACE_MB", "ENGINE_CACHE_ENV", "INT8_OP_TYPES",
    "MAX_AXIS_ENV", "MAX_BATCH_ENV", "PRECISIONS", "ROUTE_ORT", "ROUTE_TENSORRT", "TRT_QDQ_OPTIONS", "WORKSPACE_ENV",
    "Gpu", "OrtTensorRTRunner", "Profile", "TensorRTBackend", "TensorRTRunner",
    "build_engine", "describe_parser_errors", "engine_bindings", "engine_cache_key", "has_cuda_python",
    "input_shapes", "int8_calibration_reader", "onnx_for_tensorrt", "onnx_precision", "optimization_profile",
    "ort_has_tensorrt_ep", "ort_provider_options", "ort_tensorrt_session", "outside_profile", "probe_gpu",
    "profile_text", "qdq_int8", "tensorrt_version",
]
