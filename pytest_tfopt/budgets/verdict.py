"""Verdicts: what one budget says about one (variant, backend), and the words its message shares."""

from __future__ import annotations

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
