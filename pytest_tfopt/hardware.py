"""The hardware a timing depends on: CPU model and the flags that pick kernels, cores, GPUs, machine, OS.

Baselines record it on every row, backends read it to pick settings (VNNI decides how int8 is quantized).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from typing import Any

#: CPU flags that change which kernels runtimes pick (and so their speed and sometimes their numerics)
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


def _cpuinfo() -> tuple[str, list[str]]:
    """CPU model name and the :data:`CPU_FLAGS` it has (Linux ``/proc/cpuinfo``; the flags are empty elsewhere)."""
    model, flags = "", None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor(), [f for f in CPU_FLAGS if f in (flags or ())]


def _gpus() -> list[str]:
    """NVIDIA GPU names from ``nvidia-smi`` (``[]`` without one; never raises)."""
    import shutil

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


_HARDWARE: dict[str, Any] | None = None


def hardware() -> dict[str, Any]:
    """What the timings depend on: CPU model and the flags that pick kernels, cores, GPUs, machine, OS.

    Computed once per process (``nvidia-smi`` is slow); rows measured elsewhere are compared on
    accuracy and size only (see :func:`pytest_tfopt.baseline.same_hardware`).
    """
    global _HARDWARE
    if _HARDWARE is None:
        model, flags = _cpuinfo()
        _HARDWARE = {"cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "gpus": _gpus(),
                     "machine": platform.machine(), "system": platform.system()}
    return dict(_HARDWARE)


def hardware_id(info: dict[str, Any] | None = None) -> str:
    """A short stable fingerprint of :func:`hardware` (12 hex digits), recorded on every result row."""
    text = json.dumps(info if info is not None else hardware(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (AVX512-VNNI or AVX-VNNI): int8 dot products without 16-bit saturation."""
    return bool({"avx512_vnni", "avx_vnni"} & set(hardware()["cpu_flags"]))
