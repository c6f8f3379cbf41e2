"""Which result-row fields are metrics worth a history, and which way is better for each.

The metrics table (:mod:`pytest_tfopt.metrics`) decides first: its row fields (and per-output accuracies,
``accuracy[<output>]``) take their direction, hardware dependence and label from it. Rows carry more
measurements than the table names (every latency percentile, latency under load, throughput, memory,
accuracy drops), recognised here by their field's unit suffix; counts and settings (``_n``, ``_requests``,
``_cores``) are not metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import metrics


@dataclass(frozen=True)
class FieldInfo:
    """A row field as a metric: ``higher_is_better`` and whether it compares only on the same hardware."""

    field: str
    higher_is_better: bool
    hardware_dependent: bool
    #: whether a change reads as a percentage (``False``: a score, whose change reads in points)
    relative_change: bool = True
    unit: str = ""


def table_info(field: str) -> FieldInfo | None:
    base, output = metrics.split_output(field)
    m = metrics.BY_ROW_KEY.get(base)
    if m is None or (output is not None and not m.per_output):
        return None
    return FieldInfo(field, m.higher_is_better, m.hardware_dependent, m.relative_change, m.unit.strip())


#: (field prefix, field suffix) → (higher is better, hardware dependent, relative change, unit)
_BY_PATTERN: tuple[tuple[str, str, tuple[bool, bool, bool, str]], ...] = (
    ("accuracy_drop", "", (False, False, False, "")),
    ("compression_ratio", "", (True, False, True, "x")),
    ("latency_", "_ms", (False, True, True, "ms")),
    ("load_", "_ms", (False, True, True, "ms")),
    ("load_", "_throughput", (True, True, True, "/s")),
    ("memory_", "_mb", (False, True, True, "MB")),
)


def info(field: str) -> FieldInfo | None:
    """The metric row field ``field`` is, or ``None`` for identity fields, counts, settings and intervals."""
    found = table_info(field)
    if found is not None:
        return found
    base = metrics.split_output(field)[0]
    for prefix, suffix, (higher, hardware, relative, unit) in _BY_PATTERN:
        if base.startswith(prefix) and base.endswith(suffix) and not base.endswith("_ci_ms"):
            return FieldInfo(field, higher, hardware, relative, unit)
    return None


def metric_fields(row: dict[str, Any]) -> dict[str, float]:
    """Every metric of ``row`` with a finite number for a value (bools, ``None``, NaN, infinities and lists left out)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and info(k) is not None}


def resolve(name: str) -> str:
    """A metric name of the table (``latency_p50``, ``accuracy[risk]``) → its row field; a row field stays."""
    if metrics.is_metric(name):
        return metrics.row_field(name)
    return name
