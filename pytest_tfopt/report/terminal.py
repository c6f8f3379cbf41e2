"""The terminal summary table."""

from __future__ import annotations

from typing import Any

COLUMNS = ("test", "variant", "backend", "accuracy", "drop", "size KB", "ratio", "p50 ms", "p95 ms", "budgets")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _latency(row: dict[str, Any], which: str) -> str:
    """Invoke-only latency at batch 1 if measured, else the first other one, marked ``e2e`` when end to end."""
    key = f"latency_b1_{which}_ms"
    if key in row:
        return _fmt(row[key], ".3f")
    others = sorted(k for k in row if k.startswith("latency_b") and k.endswith(f"_{which}_ms"))
    if not others:
        return "-"
    return _fmt(row[others[0]], ".3f") + (" e2e" if "_e2e_" in others[0] else "")


def _status(verdict: dict[str, Any]) -> str:
    if verdict["passed"] is None:
        return "INCONCLUSIVE"
    if not verdict["passed"]:
        return "FAIL"
    # rows saved before verdicts carried the flag say so only in their message
    recorded = verdict.get("recorded") or verdict["message"].endswith("--tfopt-perf=record)")
    return "RECORDED" if recorded else "PASS"


def _budgets(row: dict[str, Any]) -> str:
    if row.get("outcome") in ("skipped", "error", "xfailed") and not row.get("verdicts"):
        return row["outcome"].upper() + (f": {row['error'][:80]}" if row.get("error") else "")
    parts = [f"{v['budget']}{'[' + v['detail'] + ']' if v.get('detail') else ''} {_status(v)}"
             for v in row.get("verdicts", [])]
    return ", ".join(parts) or "-"


def accuracy_cells(row: dict[str, Any]) -> tuple[str, str]:
    """(accuracy, drop) cells; a model with several outputs shows each labeled output's, named."""
    if row.get("accuracy") is not None or not any(k.startswith("accuracy[") for k in row):
        return _fmt(row.get("accuracy"), ".4f"), _fmt(row.get("accuracy_drop"), "+.4f")
    names = [k[len("accuracy["):-1] for k in sorted(row) if k.startswith("accuracy[")]
    values = " ".join(f"{n} {row[f'accuracy[{n}]']:.4f}" for n in names)
    drops = " ".join(f"{n} {row[f'accuracy_drop[{n}]']:+.4f}" for n in names if row.get(f"accuracy_drop[{n}]") is not None)
    return values, drops or "-"


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Rows formatted as an aligned text table (header first)."""
    body = []
    for r in rows:
        name = r["test"].split("::")[-1]
        body.append((
            name, r["variant"], r["backend"], *accuracy_cells(r),
            _fmt(r["size_bytes"] / 1024 if "size_bytes" in r else None, ".1f"), _fmt(r.get("compression_ratio"), ".2f") + ("x" if r.get("compression_ratio") else ""),
            _latency(r, "p50"), _latency(r, "p95"), _budgets(r),
        ))
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()  # noqa: E731
    return [line(COLUMNS), *(line(b) for b in body)]
