"""Plain-text tables, as the terminal summary and the ``tfopt`` commands print them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> list[str]:
    """``header`` and ``rows`` as aligned lines (columns flagged in ``right`` right-aligned), trailing spaces cut.

    Columns are as wide as their widest cell and two spaces apart; every row has one cell per header column.
    """
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    right = right or [False] * len(header)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    return [line(header), *(line(r) for r in rows)]


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``; ``-`` when it is None."""
    return "-" if value is None else format(value, spec)
