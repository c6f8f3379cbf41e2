"""TensorRT backend: the selection and skip path.

TF-TRT is gone from pip TensorFlow (2.18+); the supported route is
tf2onnx → ONNX → TensorRT on an NVIDIA GPU. Building engines arrives with the
backends issue; this module already tells precisely what a machine lacks.
"""

from __future__ import annotations

import glob
import importlib.util

from . import Backend


class TensorRTBackend(Backend):
    name = "tensorrt"
    artifact_suffix = ".engine"

    def unavailable_reason(self) -> str | None:
        missing = []
        if importlib.util.find_spec("tensorrt") is None:
            missing.append("the Python package 'tensorrt' is not installed (pip install tensorrt)")
        if not glob.glob("/dev/nvidia[0-9]*"):
            missing.append("no NVIDIA GPU is visible (no /dev/nvidia0)")
        if importlib.util.find_spec("tf2onnx") is None:
            missing.append("'tf2onnx' is not installed (pip install pytest-tfopt[tensorrt])")
        if missing:
            return "backend 'tensorrt' is not available on this machine: " + "; ".join(missing)
        return "backend 'tensorrt': engine building is not implemented in this version of pytest-tfopt"
