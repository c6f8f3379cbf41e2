"""Baselines: every result of a run, saved as schema-versioned JSON, compared and ratcheted.

A baseline file holds the rows of :mod:`pytest_tfopt.results` plus where they were
measured (hardware fingerprint, library versions, data-set hashes, commit). Rows are
keyed by (test, variant, backend).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from . import metrics, tfenv
from .errors import UsageError, setting
from .files import write_atomic
from .hardware import CPU_FLAGS, hardware, hardware_id  # noqa: F401 - the rows' fingerprint, named here too
from .metrics import split_output  # noqa: F401 - where budgets and front ends have found it

SCHEMA = "pytest-tfopt/results"
SCHEMA_VERSION = 1
#: metric name -> (row key, higher is better): a view of :data:`pytest_tfopt.metrics.METRICS`
METRICS = {m.name: (m.row_key, m.higher_is_better) for m in metrics.METRICS}
#: the metrics compared between results measured on different hardware (a view of the metrics table)
HARDWARE_INDEPENDENT = tuple(m.name for m in metrics.METRICS if not m.hardware_dependent)


def row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["test"], row["variant"], row["backend"])


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
    """Write ``doc`` atomically (a reader never sees half a file; its directory made; the mode ``open()`` gives)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True, default=str).encode())


def load(path: str | os.PathLike, what: str = "baseline", remedy: str | None = None) -> dict[str, Any]:
    """Read and check a results/baseline file; a usage error naming the file (as ``what``) and ``remedy`` when it
    is bad (by default: save it again with the front end's baseline setting)."""
    path = os.fspath(path)
    saved = setting("save_baseline")
    where = f"{what} {path!r}"
    if not os.path.exists(path):
        raise UsageError(f"{where} does not exist: {remedy or f'save one with {saved} {path}'}")
    if os.path.isdir(path):
        raise UsageError(f"{where} is a directory: give a .json results document ({remedy or f'save one with {saved}'})")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"{where} is not valid JSON ({str(exc)[:80]}): {remedy or f'save it again with {saved}'}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("rows"), list):
        raise UsageError(f"{where} is not a pytest-tfopt results {'file' if what == 'baseline' else 'document'}: "
                         f"{remedy or f'save one with {saved}'}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(
            f"{where} has schema version {doc.get('schema_version')!r}, this pytest-tfopt reads "
            f"{SCHEMA_VERSION}: {remedy or f'save a new baseline with {saved}'}"
        )
    check_rows(doc, where, remedy or f"save it again with {saved}")
    return doc


def check_rows(doc: dict[str, Any], what: str, remedy: str) -> None:
    """Every row names its test, variant and backend, and its metrics are numbers; else one usage error line."""
    for index, row in enumerate(doc["rows"], 1):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("test", "variant", "backend")):
            raise UsageError(f"{what}: row {index} lacks test/variant/backend: {remedy}")
        for key in (m.row_key for m in metrics.METRICS):
            value = row.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UsageError(f"{what}: row {index} has {key} = {value!r}, not a number: {remedy}")


def same_hardware(doc: dict[str, Any]) -> bool:
    recorded = dict(doc.get("hardware") or {})
    recorded.pop("id", None)
    return recorded == hardware()


def metric_value(row: dict[str, Any], metric: str) -> float | None:
    """The value of change metric ``metric`` (``accuracy[<output>]`` for one output) in a result row."""
    value = row.get(metrics.row_field(metric))
    return None if value is None else float(value)


def _ratcheted(row: dict[str, Any]) -> list[tuple[str, bool]]:
    """(row field, higher is better) of every metric in ``row``, per-output ones (``accuracy[risk]``) included."""
    fields = [(m.row_key, m.higher_is_better) for m in metrics.METRICS]
    per_output = [m for m in metrics.METRICS if m.per_output]
    return fields + [(k, m.higher_is_better) for m in per_output for k in row if k.startswith(f"{m.row_key}[")]


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
        for field, higher in _ratcheted(row):
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
