"""Checking the values users write in markers and budgets files; messages show them bounded."""

from __future__ import annotations

import math
from typing import Any

from ..errors import UsageError


def show(value: Any) -> str:
    """``repr(value)``, bounded (a 5000-digit int has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= 60 else text[:57] + "..."


def number(value: Any, what: str, *, positive: bool = True, allow_zero: bool = False) -> float:
    """``value`` as a float; a :class:`UsageError` naming ``what`` unless finite (and > 0, or >= 0 with ``allow_zero``)."""
    try:
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite:
        raise UsageError(f"{what} must be a finite number, got {show(value)}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise UsageError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {show(value)}")
    return float(value)
