"""The metrics a result is compared on: one table that baselines, change thresholds, reports and the CLI read.

Each :class:`Metric` says what it is called (``size``; the name budgets files and baselines use), where a
result row keeps it (``size_bytes``), its unit and direction, whether its value depends on the hardware
it was measured on, and how report tables show it (``size KB``, ``.1f``). Imports nothing heavy: the
CLI's argument parser reads it before anything else loads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One comparable metric of a result row."""

    #: the name budgets files, baselines and messages use: ``accuracy``, ``size``, ``latency_p50``
    name: str
    #: the result-row field that holds the value, in the metric's own unit: ``size_bytes``
    row_key: str
    #: written after a value in messages, with its leading space: ``" B"``, ``" ms"``; ``""`` for a score
    unit: str
    #: how messages format a value in the metric's own unit: ``".0f"`` for bytes
    message_format: str
    #: whether a higher value is better (accuracy) or worse (size, latency)
    higher_is_better: bool
    #: whether the value says something only next to values measured on the same hardware (timings)
    hardware_dependent: bool
    #: the report column's title: ``"size KB"``
    label: str
    #: how report cells format a value in the column's unit: ``".1f"``
    column_format: str
    #: how many of the metric's units make one of the column's: ``1024`` shows bytes as KB
    column_divisor: int = 1
    #: whether a change also reads as a percentage (``False``: a score, whose change reads in points)
    relative_change: bool = True
    #: whether one output of a model with several can be named: ``accuracy[risk]`` in row field ``accuracy[risk]``
    per_output: bool = False

    def column_value(self, value: float | None) -> float | None:
        """A row value in the column's unit (``None`` stays ``None``; a value already in it stays as it is)."""
        if value is None or self.column_divisor == 1:
            return value
        return value / self.column_divisor


#: every metric, in the order reports show them and messages list them
METRICS: tuple[Metric, ...] = (
    Metric("accuracy", "accuracy", unit="", message_format=".4f", higher_is_better=True,
           hardware_dependent=False, label="accuracy", column_format=".4f", relative_change=False, per_output=True),
    Metric("size", "size_bytes", unit=" B", message_format=".0f", higher_is_better=False,
           hardware_dependent=False, label="size KB", column_format=".1f", column_divisor=1024),
    Metric("gzip_size", "gzip_size_bytes", unit=" B", message_format=".0f", higher_is_better=False,
           hardware_dependent=False, label="gzip KB", column_format=".1f", column_divisor=1024),
    Metric("latency_p50", "latency_b1_p50_ms", unit=" ms", message_format=".3f", higher_is_better=False,
           hardware_dependent=True, label="p50 ms", column_format=".3f"),
    Metric("latency_p95", "latency_b1_p95_ms", unit=" ms", message_format=".3f", higher_is_better=False,
           hardware_dependent=True, label="p95 ms", column_format=".3f"),
)
#: metric name → :class:`Metric`
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
#: result-row field → :class:`Metric`
BY_ROW_KEY: dict[str, Metric] = {m.row_key: m for m in METRICS}
#: the metric names, in table order
NAMES: tuple[str, ...] = tuple(BY_NAME)


def split_output(metric: str) -> tuple[str, str | None]:
    """``"accuracy[risk]"`` → ``("accuracy", "risk")`` (a metric of one output); ``"size"`` → ``("size", None)``."""
    base, bracket, rest = metric.partition("[")
    if bracket and rest.endswith("]") and len(rest) > 1:
        return base, rest[:-1]
    return metric, None


def get(metric: str) -> Metric:
    """The :class:`Metric` named ``metric`` (``accuracy[<output>]`` gives ``accuracy``); ``KeyError`` if unknown."""
    return BY_NAME[split_output(metric)[0]]


def is_metric(metric: str) -> bool:
    """Whether ``metric`` names a metric of the table (``accuracy[<output>]`` only for per-output metrics)."""
    base, output = split_output(metric)
    return base in BY_NAME and (output is None or BY_NAME[base].per_output)


def row_field(metric: str) -> str:
    """The result-row field holding ``metric``: ``latency_p50`` → ``latency_b1_p50_ms``,
    ``accuracy[risk]`` → ``accuracy[risk]``; ``KeyError`` for an unknown metric."""
    base, output = split_output(metric)
    key = BY_NAME[base].row_key
    return key if output is None else f"{key}[{output}]"


def hardware_dependent(metric: str) -> bool:
    """Whether ``metric`` (a name, ``accuracy[<output>]`` included) compares only between results measured on
    the same hardware (latencies); ``False`` for accuracy and sizes. ``KeyError`` for an unknown metric."""
    return get(metric).hardware_dependent
