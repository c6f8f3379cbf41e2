"""Budgets judged on a saved result row: what ``tfopt compare`` gates with, no model to measure.

A budget that can be answered from a row's own numbers has ``check_row(row)``, which shares its
verdict (and message) with ``check(model, reference)``; the others are skipped with the reason.
"""

from __future__ import annotations

from typing import Any

from .verdict import Verdict


def check_row(budget: Any, row: dict[str, Any]) -> Verdict | str:
    """``budget``'s verdict from result ``row`` (a results-document row), or why it was skipped (a sentence)."""
    judge = getattr(budget, "check_row", None)
    if judge is None:
        return f"{budget.marker} skipped: results rows do not hold what it measures (run it under pytest)"
    return judge(row)
