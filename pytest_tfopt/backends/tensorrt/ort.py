"""Stage 3 of the tensorrt backend, ONNX Runtime route: the TensorRT execution provider of onnxruntime-gpu.

When the ``tensorrt`` Python package is absent but ``onnxruntime-gpu`` has the
``TensorrtExecutionProvider``, the ONNX bytes are the artifact and ONNX Runtime builds the engine
on load, with the same optimization profile as the TensorRT Python route
(:func:`ort_provider_options`), and caches it under ``TFOPT_TRT_ENGINE_CACHE`` in a directory
named by :func:`~pytest_tfopt.backends.tensorrt.engine.engine_cache_key`. :class:`OrtTensorRTRunner`
runs the session exactly like :class:`~pytest_tfopt.backends.onnx.OnnxRuntimeRunner`.
"""

from __future__ import annotations

from typing import Any

from ...errors import BackendUnavailable
from ..onnx import OnnxRuntimeRunner
from .engine import Profile, profile_text

#: ``Runner.info["route"]`` of engines ONNX Runtime builds and runs
ROUTE_ORT = "onnxruntime-tensorrt-ep"


def ort_tensorrt_session(content: bytes, threads: int, provider_options: dict[str, Any]) -> Any:
    """An ``onnxruntime`` session of ``content`` on the TensorRT execution provider; BackendUnavailable if it falls back."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    providers = [("TensorrtExecutionProvider", provider_options), "CUDAExecutionProvider", "CPUExecutionProvider"]
    session = ort.InferenceSession(content, sess_options=options, providers=providers)
    used = session.get_providers()
    if "TensorrtExecutionProvider" not in used:
        raise BackendUnavailable(
            f"backend 'tensorrt': onnxruntime could not start TensorrtExecutionProvider (it fell back to {used}): "
            "install the TensorRT libraries it needs (pip install tensorrt-libs, or the TensorRT tarball on LD_LIBRARY_PATH)"
        )
    return session


class OrtTensorRTRunner(OnnxRuntimeRunner):
    """An ONNX Runtime session on the TensorRT execution provider (:func:`ort_tensorrt_session`; ORT builds and caches the engine).

    Only the session differs from :class:`~pytest_tfopt.backends.onnx.OnnxRuntimeRunner`: running,
    every input and output by name, is the same.
    """

    def __init__(self, session: Any, name: str, info: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort

        self.name = name
        self._session = session
        self.input_shape = self.signature.inputs[0].shape  # the first input's, for callers of one-input models
        self.info = {**(info or {}), "route": ROUTE_ORT, "providers": session.get_providers(),
                     "runtime": f"onnxruntime {ort.__version__}"}


def ort_provider_options(precision: str, cache_path: str, workspace_bytes: int,
                         profile: Profile | None = None) -> dict[str, Any]:
    """``TensorrtExecutionProvider`` options for a ``precision`` ONNX graph, caching engines in ``cache_path``.

    ``profile`` (every input by name) becomes ``trt_profile_min/opt/max_shapes``, the same
    optimization profile the TensorRT Python route builds, so ORT builds one engine up front instead
    of one per new input shape.
    """
    options: dict[str, Any] = {
        "trt_fp16_enable": precision == "float16",
        "trt_int8_enable": precision == "int8",  # explicit Q/DQ: no calibration table, TensorRT reads the scales
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache_path,
        "trt_timing_cache_enable": True,
        "trt_max_workspace_size": int(workspace_bytes),
    }
    if profile:
        options.update({f"trt_profile_{kind}_shapes": text for kind, text in profile_text(profile).items()})
    return options
