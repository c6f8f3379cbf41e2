"""Verdicts and result rows: how a row stores a verdict, and budgets judged on a saved row.

:func:`verdict_row` is the one way a :class:`Verdict` goes into a row, :func:`is_recorded` the one way a
report reads its flag back. A budget that can be answered from a row's own numbers has ``check_row(row)``,
which shares its verdict (and message) with ``check(model, reference)``; the others are skipped with the
reason (what ``tfopt compare`` gates with, no model to measure).
"""

from __future__ import annotations

from typing import Any

from .verdict import RECORDED_NOTE, Verdict


def check_row(budget: Any, row: dict[str, Any]) -> Verdict | str:
    """``budget``'s verdict from result ``row`` (a results-document row), or why it was skipped (a sentence)."""
    judge = getattr(budget, "check_row", None)
    if judge is None:
        return f"{budget.marker} skipped: results rows do not hold what it measures (run it under pytest)"
    return judge(row)


def verdict_row(verdict: Verdict) -> dict[str, Any]:
    """``verdict`` as a result row stores it (JSON-able; ``detail`` and ``recorded`` only when set)."""
    row: dict[str, Any] = {"budget": verdict.budget, "passed": verdict.passed, "measured": verdict.measured,
                           "reference": verdict.reference, "limit": verdict.limit, "message": verdict.message}
    if verdict.detail:
        row["detail"] = verdict.detail
    if verdict.recorded:
        row["recorded"] = True
    return row


def is_recorded(verdict: dict[str, Any]) -> bool:
    """Whether a row's verdict was broken but only recorded (--tfopt-perf=record), not enforced.

    Rows saved before verdicts carried the ``recorded`` flag say so only at the end of their message.
    """
    if "recorded" in verdict:
        return bool(verdict["recorded"])
    return verdict.get("passed") is True and str(verdict.get("message", "")).endswith(RECORDED_NOTE)
