"""Helpers shared by the report formats: rows ordered failures first, deltas against a baseline."""

from __future__ import annotations

from typing import Any

from .. import metrics
from ..baseline import row_key

#: (title, row key, format, higher is better) of each metric column: a view of :data:`pytest_tfopt.metrics.METRICS`
COLUMNS = tuple((m.label, m.row_key, m.column_format, m.higher_is_better) for m in metrics.METRICS)


#: pytest's outcomes as rows carry them, in the order counts are shown
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "inconclusive")


#: the mark of a value taken from an earlier run's measurement record (``row["reused"]``), and what it means
REUSED_MARK = "↺"
REUSED_NOTE = (f"{REUSED_MARK} reused: measured by an earlier run on the same artifact, data, runtime, threads and "
               "hardware (--tfopt-remeasure measures again)")


def reused(row: dict[str, Any], key: str) -> bool:
    """Whether column ``key`` of ``row`` holds a reused value (accuracy: that of any output)."""
    fields = row.get("reused") or ()
    return key in fields or (key == "accuracy" and any(str(f).startswith("accuracy[") for f in fields))


def outcome(row: dict[str, Any]) -> str:
    """The row's pytest outcome (rows written before outcomes were kept: failed when a verdict broke)."""
    value = row.get("outcome")
    if value in OUTCOMES:
        return value
    return "failed" if any(v["passed"] is False for v in row.get("verdicts", [])) else "passed"


def failed(row: dict[str, Any]) -> bool:
    return outcome(row) in ("failed", "error")


def counts(rows: list[dict[str, Any]]) -> str:
    """``3 passed, 1 failed, 1 skipped`` in pytest's words (outcomes with no row left out)."""
    tally = {o: sum(outcome(r) == o for r in rows) for o in OUTCOMES}
    return ", ".join(f"{n} {o}" for o, n in tally.items() if n) or "no results"


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failures first, then by test id."""
    return sorted(rows, key=lambda r: (not failed(r), r["test"], r["variant"], r["backend"]))


def baseline_rows(baseline: dict[str, Any] | None) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {row_key(r): r for r in (baseline or {}).get("rows", [])}


def scaled(key: str, value: Any) -> Any:
    """Row field ``key``'s ``value`` in its report column's unit (bytes as KB); fields of no column as they are."""
    metric = metrics.BY_ROW_KEY.get(key)
    return value if metric is None else metric.column_value(value)


def delta(key: str, higher: bool, value: Any, base: dict[str, Any] | None) -> tuple[float, bool] | None:
    """(change, is it better?) against the baseline row, or None."""
    if base is None or value is None or base.get(key) is None:
        return None
    change = scaled(key, value) - scaled(key, base[key])
    return change, (change > 0) == higher if change else True

