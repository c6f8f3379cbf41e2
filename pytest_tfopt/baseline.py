"""Baselines: every result of a run, saved as schema-versioned JSON, compared and ratcheted.

A baseline file holds the rows of :mod:`pytest_tfopt.results` plus where they were
measured (hardware fingerprint, library versions, data-set hashes, commit). Rows are
keyed by (test, variant, backend).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from typing import Any

from . import tfenv
from .cache import _atomic_write
from .errors import UsageError

SCHEMA = "pytest-tfopt/results"
SCHEMA_VERSION = 1
#: metric name -> (row key, higher is better)
METRICS = {
    "accuracy": ("accuracy", True),
    "size": ("size_bytes", False),
    "gzip_size": ("gzip_size_bytes", False),
    "latency_p50": ("latency_b1_p50_ms", False),
    "latency_p95": ("latency_b1_p95_ms", False),
}
HARDWARE_INDEPENDENT = ("accuracy", "size", "gzip_size")


def row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["test"], row["variant"], row["backend"])


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
    accuracy and size only (see :func:`same_hardware`).
    """
    global _HARDWARE
    if _HARDWARE is None:
        model, flags = _cpuinfo()
        _HARDWARE = {"cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "gpus": _gpus(),
                     "machine": platform.machine(), "system": platform.system()}
    return dict(_HARDWARE)


def hardware_id(info: dict[str, Any] | None = None) -> str:
    """A short stable fingerprint of :func:`hardware` (12 hex digits), recorded on every result row."""
    import hashlib
    import json

    text = json.dumps(info if info is not None else hardware(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def commit() -> str | None:
    """The commit under test: $GITHUB_SHA, else ``git rev-parse HEAD``, else None."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def document(rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A results document (the baseline and the JSON report share it)."""
    datasets = sorted({h for r in rows for h in (r.get("calibration_hash"), r.get("source_hash")) if h})
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit(),
        "hardware": {**hardware(), "id": hardware_id()},
        "versions": tfenv.library_versions(),
        "hashes": datasets,
        **(extra or {}),
        "rows": sorted(rows, key=lambda r: row_key(r)),
    }


def save(path: str | os.PathLike, doc: dict[str, Any]) -> None:
    """Write ``doc`` atomically (a reader never sees half a file)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _atomic_write(path, json.dumps(doc, indent=1, sort_keys=True, default=str).encode())


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a results/baseline file; a usage error naming the file when it is bad."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UsageError(f"baseline {path!r} does not exist: save one with --tfopt-save-baseline {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UsageError(f"baseline {path!r} is not valid JSON ({str(exc)[:80]}): save it again with --tfopt-save-baseline") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("rows"), list):
        raise UsageError(f"baseline {path!r} is not a pytest-tfopt results file: save one with --tfopt-save-baseline")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(
            f"baseline {path!r} has schema version {doc.get('schema_version')!r}, this pytest-tfopt reads "
            f"{SCHEMA_VERSION}: save a new baseline with --tfopt-save-baseline"
        )
    check_rows(doc, f"baseline {path!r}", "save it again with --tfopt-save-baseline")
    return doc


def check_rows(doc: dict[str, Any], what: str, remedy: str) -> None:
    """Every row names its test, variant and backend, and its metrics are numbers; else one usage error line."""
    for index, row in enumerate(doc["rows"], 1):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("test", "variant", "backend")):
            raise UsageError(f"{what}: row {index} lacks test/variant/backend: {remedy}")
        for key in ("size_bytes", *(field for field, _ in METRICS.values())):
            value = row.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UsageError(f"{what}: row {index} has {key} = {value!r}, not a number: {remedy}")


def same_hardware(doc: dict[str, Any]) -> bool:
    recorded = dict(doc.get("hardware") or {})
    recorded.pop("id", None)
    return recorded == hardware()


def split_output(metric: str) -> tuple[str, str | None]:
    """``"accuracy[risk]"`` → ``("accuracy", "risk")`` (a metric of one output); ``"size"`` → ``("size", None)``."""
    base, bracket, rest = metric.partition("[")
    if bracket and rest.endswith("]") and len(rest) > 1:
        return base, rest[:-1]
    return metric, None


def metric_value(row: dict[str, Any], metric: str) -> float | None:
    """The value of change metric ``metric`` (``accuracy[<output>]`` for one output) in a result row."""
    base, output = split_output(metric)
    key, _ = METRICS[base]
    value = row.get(key if output is None else f"{key}[{output}]")
    return None if value is None else float(value)


def ratchet(old: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """The baseline with every metric that improved in ``rows`` taken over; returns (doc, improvements)."""
    by_key = {row_key(r): dict(r) for r in old.get("rows", [])}
    improved = 0
    for row in rows:
        key = row_key(row)
        if key not in by_key:
            by_key[key] = dict(row)
            improved += 1
            continue
        base = by_key[key]
        per_output = [(k, True) for k in row if k.startswith("accuracy[")]  # accuracy of each labeled output
        for field, higher in [*METRICS.values(), *per_output]:
            new, was = row.get(field), base.get(field)
            if new is None:
                continue
            if was is None or (new > was if higher else new < was):
                base[field] = new
                improved += 1
    doc = dict(old)
    doc["rows"] = sorted(by_key.values(), key=row_key)
    doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return doc, improved
