"""``tfopt compare``: two results documents row by row; with a budgets file, gate HEAD against BASE.

The verdicts come from the core's gate (:meth:`pytest_tfopt.budgets.evaluate.Gate.judge_rows`, the judge
the plugin uses), on the rows' saved numbers; the table's columns are the reports'
(:data:`pytest_tfopt.report.common.COLUMNS`).
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import metrics
from ..report.table import table
from .console import EXIT_FAILED, EXIT_OK, Console
from .files import load_budgets, load_results


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from .. import baseline
    from ..budgets.evaluate import Gate
    from ..report.common import COLUMNS

    base_doc = load_results(args.base, "BASE")
    head_doc = load_results(args.head, "HEAD")
    budgets = load_budgets(args.budgets) if args.budgets else None
    base_rows = {baseline.row_key(r): r for r in base_doc["rows"]}
    head_rows = {baseline.row_key(r): r for r in head_doc["rows"]}
    keys = sorted(set(base_rows) | set(head_rows))

    same_hw = base_doc.get("hardware") == head_doc.get("hardware")
    if not same_hw:
        cpu = lambda d: (d.get("hardware") or {}).get("cpu") or "?"  # noqa: E731
        console.note(f"BASE and HEAD were measured on different hardware ({cpu(base_doc)} vs {cpu(head_doc)}): "
                     "latency changes say little")

    gate = Gate(budgets, base_rows, same_hw or args.ignore_hardware)
    header = ["status", "test", "variant", "backend", *(c[0] for c in COLUMNS)]
    body = []
    broken: list[tuple[tuple[str, str, str], str]] = []
    checked = 0
    skipped: dict[str, int] = {}
    for key in keys:
        base, head = base_rows.get(key), head_rows.get(key)
        verdicts: list[Any] = []
        if budgets is not None and head is not None:
            verdicts, why = gate.judge_rows(*key, head, base)
            for reason in why:
                skipped[reason] = skipped.get(reason, 0) + 1
        checked += len(verdicts)
        failed = [v for v in verdicts if not v.passed]
        broken += [(key, v.message) for v in failed]
        status = "removed" if head is None else "added" if base is None else "BROKEN" if failed else "ok"
        body.append([status, _short_test(key[0]), key[1], key[2],
                     *(_compare_cell(k, fmt, higher, head, base) for _, k, fmt, higher in COLUMNS)])
    for line in table(header, body, [False] * 4 + [True] * len(COLUMNS)):
        console.out(line)

    added = sum(k not in base_rows for k in keys)
    removed = sum(k not in head_rows for k in keys)
    summary = f"{len(keys) - added - removed} compared, {added} added, {removed} removed"
    if budgets is not None:
        summary += f"; {checked} thresholds checked, {len(broken)} broken ({budgets.path})"
    console.out(summary)
    for why, count in skipped.items():
        console.note(f"{why} ({count}x)" if count > 1 else why)
    for (test, variant, backend), message in broken:
        console.out(f"BROKEN {test} [{variant}, {backend}]: {message}")
    return EXIT_FAILED if broken else EXIT_OK


def _compare_cell(key: str, fmt: str, higher: bool, head: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    """HEAD's value of row field ``key`` and its change from BASE: ``1.2 (+0.1 +9.1%)``, ``1.2 (=)``, ``(1.1)`` if removed."""
    from ..report.common import delta, scaled

    old = scaled(key, base.get(key)) if base else None
    if head is None:
        return "-" if old is None else f"({old:{fmt}})"
    new = scaled(key, head.get(key))
    if new is None:
        return "-"
    text = f"{new:{fmt}}"
    change = delta(key, higher, head.get(key), base)
    if change is None:
        return text
    diff = change[0]
    if format(abs(diff), fmt) == format(0, fmt):
        return f"{text} (=)"
    rel = f" {diff / old:+.1%}" if metrics.BY_ROW_KEY[key].relative_change and old else ""
    return f"{text} ({diff:+{fmt}}{rel})"


def _short_test(test: str) -> str:
    return test.split("::")[-1]
