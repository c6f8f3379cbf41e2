"""Verdicts: what one budget says about one (variant, backend), and the words its message shares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: what the message of a broken timing verdict reported, not enforced, ends with (--tfopt-perf=record)
RECORDED_NOTE = " (recorded, not enforced: --tfopt-perf=record)"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one budget on one (variant, backend)."""

    budget: str
    passed: bool | None  # None: inconclusive (the measurement's interval straddles the budget)
    measured: float
    reference: float | None
    limit: float
    message: str
    #: how it was measured when not the default, for tables: "end_to_end", "concurrency=4", "mcnemar"
    detail: str = ""
    #: a broken timing verdict reported, not enforced (--tfopt-perf=record)
    recorded: bool = False


def about(model: Any) -> str:
    """Who a message is about: ``"int8 on tflite"`` for a model (or anything with ``variant``/``backend``)."""
    return f"{model.variant} on {model.backend}"


def about_row(row: dict[str, Any]) -> str:
    """Who a message is about, for a saved result row."""
    return f"{row['variant']} on {row['backend']}"


def word(passed: bool | None) -> str:
    """``holds``, ``broken`` or ``inconclusive``."""
    return {True: "holds", False: "broken", None: "inconclusive"}[passed]


def op(passed: bool | None, good: str, bad: str) -> str:
    """The comparison a message shows: ``good`` when it holds, ``bad`` when broken, ``~`` when inconclusive."""
    return {True: good, False: bad, None: "~"}[passed]


#: what a timing verdict's interval is, said at the end of its message
INTERVAL_LEVEL = " (two-sided 95 % interval: each end a one-sided 97.5 % bound)"


def deciding_count(n: float, lo: float, hi: float, value: float, limit: float) -> float | None:
    """About how many measurements would move an interval ``[lo, hi]`` straddling ``limit`` off it, at the spread
    ``n`` of them showed (its width shrinks as one over their square root); ``None`` when nothing can tell
    (no spread, no upper end) and ``inf`` when the value sits on the limit."""
    if not n or not math.isfinite(hi - lo) or hi <= lo:
        return None
    gap = abs(value - limit)
    if gap < 1e-12 * max(1.0, abs(limit)):
        return math.inf
    return max(n * ((hi - lo) / (2 * gap)) ** 2, n + 1)


def to_decide(n: float, lo: float, hi: float, value: float, limit: float, unit: str, what: str = "spread") -> str:
    """What would decide an interval straddling ``limit`` (:func:`deciding_count`), as the end of a message."""
    needed = deciding_count(n, lo, hi, value, limit)
    if needed is None:
        return f"; measure more {unit} to decide"
    if math.isinf(needed):
        return f"; the value sits on the budget: no number of {unit} decides it (move the budget, or change the model)"
    return f"; needs about {needed:,.0f} {unit} at this {what} to decide"
