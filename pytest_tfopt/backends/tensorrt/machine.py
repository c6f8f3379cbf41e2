"""What this machine offers the tensorrt backend: the GPU, the ``tensorrt`` and ``cuda-python`` packages,
onnxruntime-gpu's TensorRT execution provider.

Every probe is cheap and imports nothing heavy (``find_spec``, ``nvidia-smi``, package metadata), so
:meth:`~pytest_tfopt.backends.tensorrt.TensorRTBackend.unavailable_reason` can run at collection.
The backend calls these through the module (``machine.probe_gpu()``), so replacing one here (a test,
or a conftest describing another machine) reaches every caller.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Gpu:
    """The first visible NVIDIA GPU: marketing name and compute capability (e.g. ``"8.6"``)."""

    name: str
    compute_capability: str


def has_module(name: str) -> bool:
    """Whether module ``name`` (dotted names too) can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a dotted name whose parent package is missing
        return False


def has_cuda_python() -> bool:
    """Whether ``cuda-python``'s runtime bindings are installed (either module layout)."""
    return has_module("cuda.bindings.runtime") or has_module("cuda.cudart")


def cudart() -> Any:
    """``cuda-python``'s CUDA runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # cuda-python < 12.6
    return runtime


def ort_has_tensorrt_ep() -> bool:
    """Whether the installed onnxruntime build has the ``TensorrtExecutionProvider`` (onnxruntime-gpu)."""
    if not has_module("onnxruntime"):
        return False
    import onnxruntime as ort

    return "TensorrtExecutionProvider" in ort.get_available_providers()


def probe_gpu() -> tuple[Gpu | None, str]:
    """The first GPU CUDA would use, or ``None`` and why none is visible (one phrase)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return None, f"no NVIDIA GPU is visible (CUDA_VISIBLE_DEVICES={visible!r} hides them all)"
    smi = shutil.which("nvidia-smi")
    smi_note = "nvidia-smi not found"
    if smi:
        cmd = [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"]
        if visible:
            cmd += ["-i", visible.split(",")[0].strip()]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
            if lines and "," in lines[0]:
                name, cc = (part.strip() for part in lines[0].rsplit(",", 1))
                return Gpu(name, cc), ""
            smi_note = f"nvidia-smi failed: {((out.stderr or out.stdout).strip().splitlines() or ['no GPU listed'])[0][:100]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            smi_note = f"nvidia-smi failed: {type(exc).__name__}"
    if has_cuda_python():  # containers can have the device but not nvidia-smi
        try:
            runtime = cudart()
            err, props = runtime.cudaGetDeviceProperties(0)
            if err == runtime.cudaError_t.cudaSuccess:
                name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
                return Gpu(name.strip("\x00 "), f"{props.major}.{props.minor}"), ""
        except Exception:
            pass
    devices = "" if glob.glob("/dev/nvidia[0-9]*") else "no /dev/nvidia0; "
    return None, f"no NVIDIA GPU is visible ({devices}{smi_note})"


def tensorrt_version() -> str:
    """The installed ``tensorrt`` Python package's version ('' when absent), without importing it."""
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu12"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""
