"""One self-contained HTML file: the results table, Pareto plots and latency distributions (inline SVG)."""

from __future__ import annotations

import html
from typing import Any

from ..baseline import row_key
from .common import COLUMNS, baseline_rows, counts, delta, ordered, outcome, scaled

W, H, PAD = 460, 300, 48
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _points(rows: list[dict[str, Any]], xkey: str) -> list[tuple[str, float, float]]:
    """One point per (variant, backend): the first row that measured both values."""
    seen: dict[str, tuple[str, float, float]] = {}
    for r in rows:
        label = f"{r['variant']} / {r['backend']}"
        x, y = scaled(xkey, r.get(xkey)), r.get("accuracy")
        if label not in seen and x is not None and y is not None:
            seen[label] = (label, float(x), float(y))
    return list(seen.values())


def _scale(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - (abs(lo) or 1) * 0.05, hi + (abs(hi) or 1) * 0.05
    return lo, hi


def scatter(title: str, xlabel: str, points: list[tuple[str, float, float]]) -> str:
    """An SVG scatter plot of accuracy (y) against ``xlabel`` (x), one labelled point each."""
    if not points:
        return f'<svg class="plot" width="{W}" height="60"><text x="10" y="30">{html.escape(title)}: nothing measured</text></svg>'
    x0, x1 = _scale([p[1] for p in points])
    y0, y1 = _scale([p[2] for p in points])

    def sx(v: float) -> float:
        return PAD + (v - x0) / (x1 - x0) * (W - 2 * PAD)

    def sy(v: float) -> float:
        return H - PAD - (v - y0) / (y1 - y0) * (H - 2 * PAD)

    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img">',
             f"<title>{html.escape(title)}</title>",
             f'<text x="{W / 2}" y="16" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
             f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">{html.escape(xlabel)}</text>',
             f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">accuracy</text>',
             f'<text x="{PAD}" y="{H - PAD + 14}" font-size="10">{x0:.3g}</text>',
             f'<text x="{W - PAD}" y="{H - PAD + 14}" font-size="10" text-anchor="end">{x1:.3g}</text>',
             f'<text x="{PAD - 4}" y="{H - PAD}" font-size="10" text-anchor="end">{y0:.3f}</text>',
             f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">{y1:.3f}</text>']
    for i, (label, x, y) in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{color}"><title>{html.escape(label)}: '
                     f"{x:.4g}, {y:.4f}</title></circle>")
        parts.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 6:.1f}" font-size="10">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def latency_plot(rows: list[dict[str, Any]]) -> str:
    """Per (variant, backend): a bar from min to max with p50/p95/p99 ticks (batch 1, ms)."""
    stats: dict[str, dict[str, float]] = {}
    for r in rows:
        label = f"{r['variant']} / {r['backend']}"
        if label not in stats and r.get("latency_b1_p50_ms") is not None:
            stats[label] = {k: r[f"latency_b1_{k}_ms"] for k in ("min", "p50", "p95", "p99", "max") if f"latency_b1_{k}_ms" in r}
    if not stats:
        return '<svg class="plot" width="460" height="60"><text x="10" y="30">latency: nothing measured</text></svg>'
    top = max(s.get("max", s["p95"]) for s in stats.values()) or 1.0
    height = 40 + 28 * len(stats)
    left, width = 170, W - 190
    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" role="img">',
             '<title>latency distribution</title>',
             f'<text x="{W / 2}" y="16" text-anchor="middle" font-weight="bold">latency per invocation (ms, batch 1)</text>']
    for i, (label, s) in enumerate(stats.items()):
        y = 36 + 28 * i
        lo, hi = s.get("min", s["p50"]), s.get("max", s.get("p99", s["p95"]))
        parts.append(f'<text x="{left - 6}" y="{y + 4}" font-size="10" text-anchor="end">{html.escape(label)}</text>')
        parts.append(f'<line x1="{left + lo / top * width:.1f}" y1="{y}" x2="{left + hi / top * width:.1f}" y2="{y}" stroke="#999" stroke-width="2"/>')
        for key, color in (("p50", "#1f77b4"), ("p95", "#ff7f0e"), ("p99", "#d62728")):
            if key in s:
                x = left + s[key] / top * width
                parts.append(f'<rect x="{x - 2:.1f}" y="{y - 8}" width="4" height="16" fill="{color}"><title>{key} {s[key]:.4f} ms</title></rect>')
    parts.append(f'<text x="{left}" y="{height - 4}" font-size="10">0</text>')
    parts.append(f'<text x="{left + width}" y="{height - 4}" font-size="10" text-anchor="end">{top:.3g} ms</text></svg>')
    return "".join(parts)


def _table(rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> str:
    bases = baseline_rows(baseline)
    head = "".join(f"<th>{html.escape(c[0])}</th>" for c in COLUMNS)
    out = [f"<table><thead><tr><th></th><th>test</th><th>variant</th><th>backend</th>{head}<th>budgets</th></tr></thead><tbody>"]
    for r in rows:
        base = bases.get(row_key(r))
        cells = []
        for _, key, fmt, higher in COLUMNS:
            value = scaled(key, r.get(key))
            text = "–" if value is None else format(value, fmt)
            change = delta(key, higher, r.get(key), base)
            if change is not None and change[0]:
                cls = "good" if change[1] else "bad"
                text += f' <span class="{cls}">({change[0]:+{fmt}})</span>'
            cells.append(f"<td>{text}</td>")
        verdicts = "<br>".join(html.escape(v["message"]) for v in r.get("verdicts", [])) or "–"
        if r.get("error"):
            verdicts = html.escape(r["error"])
        status = outcome(r).upper()
        out.append(f'<tr class="{status.lower()}"><td>{status}</td><td><code>{html.escape(r["test"])}</code></td>'
                   f"<td>{html.escape(r['variant'])}</td><td>{html.escape(r['backend'])}</td>{''.join(cells)}"
                   f"<td class='verdicts'>{verdicts}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render(doc: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    rows = ordered(doc.get("rows", []))
    meta = html.escape(f"commit {doc.get('commit') or '?'} · {doc.get('created', '')} · "
                       f"{doc.get('hardware', {}).get('cpu', '')} · {len(rows)} results: {counts(rows)}")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>pytest-tfopt report</title>',
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;font-size:13px}tr.failed td:first-child,tr.error td:first-child{color:#b00;font-weight:bold}tr.passed td:first-child"
        "{color:#070}.good{color:#070}.bad{color:#b00}.verdicts{font-size:11px}.plots{display:flex;flex-wrap:wrap;"
        "gap:1em;margin:1em 0}</style></head><body>",
        f"<h1>pytest-tfopt report</h1><p>{meta}</p>",
        _table(rows, baseline),
        '<div class="plots">',
        scatter("accuracy vs size", "size (KB)", _points(rows, "size_bytes")),
        scatter("accuracy vs latency", "p50 latency (ms, batch 1)", _points(rows, "latency_b1_p50_ms")),
        latency_plot(rows),
        "</div></body></html>",
    ])
