"""Budgets: the thresholds a variant must meet, and their verdicts.

Each budget comes from one marker (``max_accuracy_drop``, ``max_latency_ms``,
``max_size_kb``, ``min_compression_ratio``, ``min_sparsity``, ``max_unique_weights``, ...;
``min_accuracy_drop`` is an alias of ``max_accuracy_drop``). :func:`parse_marker` validates the arguments;
``Budget.check(model, reference)`` measures and returns a :class:`Verdict`, and :func:`check_row`
judges the same budget on a saved result row. Sizes are KB = 1024 bytes; latencies are ms;
accuracy drops are in the metric's units (fractions for top-1: 0.01 = 1 point).

Modules: :mod:`.verdict` (the outcome), :mod:`.quality` (accuracy, fidelity, output parity),
:mod:`.footprint` (size, compression, memory, sparsity, clusters), :mod:`.perf` (latency,
throughput, speedup), :mod:`.change` (thresholds against a baseline), :mod:`.markers` (marker
arguments → budgets), :mod:`.rows` (budgets on result rows).
"""

from __future__ import annotations

from .change import CHANGE_METRICS, ChangeBudget, is_change_metric, parse_change
from .footprint import MaxMemory, MaxSize, MaxUniqueWeights, MinCompression, MinSparsity
from .markers import MARKER_DOCS, METHODS, PARSERS, PERCENTILES, parse_marker
from .perf import MaxLatency, MinSpeedup, MinThroughput
from .quality import AccuracyDrop, MaxOutputDiff, MinFidelity
from .rows import check_row
from .verdict import Verdict

__all__ = [
    "CHANGE_METRICS", "is_change_metric", "MARKER_DOCS", "METHODS", "PARSERS", "PERCENTILES",
    "AccuracyDrop", "ChangeBudget", "MaxLatency", "MaxMemory", "MaxOutputDiff", "MaxSize", "MaxUniqueWeights",
    "MinCompression", "MinFidelity", "MinSparsity", "MinSpeedup", "MinThroughput", "Verdict",
    "check_row", "parse_change", "parse_marker",
]
