"""The terminal summary table."""

from __future__ import annotations

from typing import Any

from .. import metrics
from ..budgets.rows import is_recorded
from .table import fmt, table

_ACCURACY, _SIZE = metrics.BY_NAME["accuracy"], metrics.BY_NAME["size"]
_LATENCIES = {"p50": metrics.BY_NAME["latency_p50"], "p95": metrics.BY_NAME["latency_p95"]}
#: the summary's column titles (the metrics' from :data:`pytest_tfopt.metrics.METRICS`)
COLUMNS = ("test", "variant", "backend", _ACCURACY.label, "drop", _SIZE.label, "ratio", _LATENCIES["p50"].label,
           _LATENCIES["p95"].label, "budgets")


def _latency(row: dict[str, Any], which: str) -> str:
    """Invoke-only latency at batch 1 if measured, else the first other one, marked ``e2e`` when end to end."""
    metric = _LATENCIES[which]
    if metric.row_key in row:
        return fmt(row[metric.row_key], metric.column_format)
    others = sorted(k for k in row if k.startswith("latency_b") and k.endswith(f"_{which}_ms"))
    if not others:
        return "-"
    return fmt(row[others[0]], metric.column_format) + (" e2e" if "_e2e_" in others[0] else "")


def _status(verdict: dict[str, Any]) -> str:
    if verdict["passed"] is None:
        return "INCONCLUSIVE"
    if not verdict["passed"]:
        return "FAIL"
    return "RECORDED" if is_recorded(verdict) else "PASS"


def _budgets(row: dict[str, Any]) -> str:
    if row.get("outcome") in ("skipped", "error", "xfailed") and not row.get("verdicts"):
        return row["outcome"].upper() + (f": {row['error'][:80]}" if row.get("error") else "")
    parts = [f"{v['budget']}{'[' + v['detail'] + ']' if v.get('detail') else ''} {_status(v)}"
             for v in row.get("verdicts", [])]
    return ", ".join(parts) or "-"


def accuracy_cells(row: dict[str, Any]) -> tuple[str, str]:
    """(accuracy, drop) cells; a model with several outputs shows each labeled output's, named."""
    if row.get("accuracy") is not None or not any(k.startswith("accuracy[") for k in row):
        return fmt(row.get("accuracy"), _ACCURACY.column_format), fmt(row.get("accuracy_drop"), "+.4f")
    names = [k[len("accuracy["):-1] for k in sorted(row) if k.startswith("accuracy[")]
    values = " ".join(f"{n} {row[f'accuracy[{n}]']:{_ACCURACY.column_format}}" for n in names)
    drops = " ".join(f"{n} {row[f'accuracy_drop[{n}]']:+.4f}" for n in names if row.get(f"accuracy_drop[{n}]") is not None)
    return values, drops or "-"


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Rows formatted as an aligned text table (header first; ``-`` where nothing was measured)."""
    body = []
    for r in rows:
        ratio = r.get("compression_ratio")
        body.append((
            r["test"].split("::")[-1], r["variant"], r["backend"], *accuracy_cells(r),
            fmt(_SIZE.column_value(r.get(_SIZE.row_key)), _SIZE.column_format),
            fmt(ratio, ".2f") + ("x" if ratio else ""),
            _latency(r, "p50"), _latency(r, "p95"), _budgets(r),
        ))
    return table(COLUMNS, body)
