"""GitHub-flavoured Markdown: one table, failures first, deltas against the baseline with arrows.

Fits ``$GITHUB_STEP_SUMMARY`` or a pull-request comment.
"""

from __future__ import annotations

from typing import Any

from ..baseline import row_key
from .common import COLUMNS, REUSED_MARK, REUSED_NOTE, baseline_rows, counts, delta, ordered, outcome, reused, scaled


def _cell(row: dict[str, Any], key: str, fmt: str, higher: bool, base: dict[str, Any] | None) -> str:
    value = scaled(key, row.get(key))
    if value is None:
        return "–"
    text = format(value, fmt) + (f" {REUSED_MARK}" if reused(row, key) else "")
    change = delta(key, higher, row.get(key), base)
    if change is not None and change[0]:
        arrow = "▲" if change[0] > 0 else "▼"
        mark = "🟢" if change[1] else "🔴"
        text += f" ({change[0]:+{fmt}} {arrow}{mark})"
    return text


STATUS_ICONS = {"passed": "✅", "failed": "❌", "error": "❌ error", "skipped": "⏭️ skipped", "xfailed": "xfail",
                "xpassed": "xpass", "inconclusive": "⚠️ inconclusive"}


def render(doc: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    rows = ordered(doc.get("rows", []))
    bases = baseline_rows(baseline)
    head = f"### pytest-tfopt: {len(rows)} results: {counts(rows)}"
    if baseline is not None:
        head += f" (vs baseline {str(baseline.get('commit') or baseline.get('created', ''))[:12]})"
    lines = [head, "", "| | test | variant | backend | " + " | ".join(c[0] for c in COLUMNS) + " | budgets |",
             "|---|---|---|---|" + "---:|" * len(COLUMNS) + "---|"]
    for row in rows:
        base = bases.get(row_key(row))
        cells = [_cell(row, key, fmt, higher, base) for _, key, fmt, higher in COLUMNS]
        broken = [v["message"] for v in row.get("verdicts", []) if v["passed"] is False]
        budgets = "<br>".join(m.replace("|", "\\|").replace("\n", "<br>") for m in broken) or ", ".join(
            f"{v['budget']} ✓" for v in row.get("verdicts", [])) or "–"
        status = STATUS_ICONS[outcome(row)]
        if row.get("error"):
            budgets = row["error"].replace("|", "\\|")
        test = row["test"].split("::")[-1].replace("|", "\\|")
        lines.append(f"| {status} | `{test}` | {row['variant']} | {row['backend']} | " + " | ".join(cells) + f" | {budgets} |")
    if any(row.get("reused") for row in rows):
        lines += ["", REUSED_NOTE]
    lines.append("")
    return "\n".join(lines)
