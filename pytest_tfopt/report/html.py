"""One self-contained HTML file: the results table and, with the ``report`` extra, interactive plots.

The plots (:mod:`.plots`) are Vega-Lite charts whose JavaScript is inlined, so the file works offline and shows
tooltips; without the extra the page keeps its table and says how to get them.
"""

from __future__ import annotations

import html
import json
from typing import Any

from ..baseline import row_key
from .common import COLUMNS, REUSED_MARK, REUSED_NOTE, baseline_rows, counts, delta, ordered, outcome, reused, scaled

#: what the report says in place of the plots when the plotting extra is not installed
NO_PLOTS = ('<p class="note">Plots need the report extra: <code>pip install "pytest-tfopt[report]"</code> '
            "(Altair and vl-convert; the page stays one file that works offline).</p>")
#: draws every chart from its spec once the inlined Vega bundle has loaded
EMBED = ("document.querySelectorAll('script.tfopt-spec').forEach(function (s) {"
         "vegaEmbed('#' + s.dataset.target, JSON.parse(s.textContent), {actions: false, renderer: 'svg'})"
         ".catch(function (e) { document.getElementById(s.dataset.target).textContent = 'plot failed: ' + e; }); });")
STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
         "padding:4px 8px;font-size:13px}tr.failed td:first-child,tr.error td:first-child{color:#b00;font-weight:bold}"
         "tr.passed td:first-child{color:#070}.good{color:#070}.bad{color:#b00}.verdicts{font-size:11px}"
         ".plots{display:flex;flex-wrap:wrap;gap:2em;margin:1.5em 0}.note{color:#555}")


def _json_in_script(value: Any) -> str:
    """JSON that cannot end its ``<script>`` element early (``<`` escaped; JSON.parse reads it back)."""
    return json.dumps(value, sort_keys=True).replace("<", "\\u003c")


def plots(rows: list[dict[str, Any]]) -> str:
    """The charts' section: a ``<div>`` per chart, its Vega-Lite spec, and the inlined JavaScript that draws them.

    Without the ``report`` extra, one line that says how to get the plots.
    """
    try:  # the report extra, imported only when an HTML report is written: Altair and vl-convert are heavy
        import altair  # noqa: F401
        import vl_convert  # noqa: F401
    except ImportError:
        return NO_PLOTS
    from .plots import charts, javascript

    drawn = charts(rows)
    if not drawn:
        return '<p class="note">Nothing to plot: no result has an accuracy with a size or a latency.</p>'
    divs, specs = [], []
    for i, chart in enumerate(drawn):
        target = f"tfopt-chart-{i}"
        divs.append(f'<div class="chart" id="{target}" role="img" aria-label="{html.escape(chart.title)}"></div>')
        specs.append(f'<script type="application/json" class="tfopt-spec" data-target="{target}">'
                     f"{_json_in_script(chart.spec)}</script>")
    return "\n".join(['<div class="plots">', *divs, "</div>", *specs,
                      f"<script>{javascript()}</script>", f"<script>{EMBED}</script>"])


def _profile_details(row: dict[str, Any], top: int = 12) -> str:
    """A collapsible table of the row's per-op profile (the slowest ``top`` ops) and its reference's by op type;
    ``""`` for a row without one (only broken timing gates and --tfopt-profile rows are profiled)."""
    prof = row.get("profile")
    if not prof:
        return ""
    total = prof.get("sum_ms") or 1.0
    ops = sorted(prof.get("ops", []), key=lambda o: -o["ms"])[:top]
    body = "".join(f"<tr><td>{html.escape(o['type'])}</td><td><code>{html.escape(o['name'])}</code></td>"
                   f"<td>{o['ms']:.3f}</td><td>{o['ms'] / total:.1%}</td><td>{html.escape(o['kernel'])}"
                   f"{' (fell back)' if o.get('fast') is False else ''}</td></tr>" for o in ops)
    ref = {g["type"]: g for g in (row.get("reference_profile") or {}).get("by_type", [])}
    types = "".join(f"<tr><td>{html.escape(g['type'])}</td><td>{g['count']}</td><td>{g['ms']:.3f}</td>"
                    f"<td>{g['share']:.1%}</td><td>{'–' if g['type'] not in ref else format(ref[g['type']]['ms'], '.3f')}"
                    f"</td><td>{g['slow']}</td></tr>" for g in prof.get("by_type", []))
    diagnosis = row.get("profile_diagnosis")
    return (f"<details><summary>per-op profile: {prof['sum_ms']:.3f} ms over {len(prof.get('ops', []))} ops, whole "
            f"model {prof['model_ms']:.3f} ms</summary><p class='note'>{html.escape(prof.get('method', ''))}</p>"
            + (f"<p><b>diagnosis:</b> {html.escape(diagnosis)}</p>" if diagnosis else "")
            + "<table><tr><th>op type</th><th>count</th><th>ms</th><th>share</th><th>reference ms</th>"
            f"<th>fell back</th></tr>{types}</table><table><tr><th>op type</th><th>name</th><th>ms</th><th>share</th>"
            f"<th>kernel</th></tr>{body}</table></details>")


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
            if value is not None and reused(r, key):
                text += f' <span class="reused" title="{html.escape(REUSED_NOTE)}">{REUSED_MARK}</span>'
            change = delta(key, higher, r.get(key), base)
            if change is not None and change[0]:
                cls = "good" if change[1] else "bad"
                text += f' <span class="{cls}">({change[0]:+{fmt}})</span>'
            cells.append(f"<td>{text}</td>")
        verdicts = "<br>".join(html.escape(v["message"]).replace("\n", "<br>") for v in r.get("verdicts", [])) or "–"
        if r.get("error"):
            verdicts = html.escape(r["error"])
        verdicts += _profile_details(r)
        status = outcome(r).upper()
        out.append(f'<tr class="{status.lower()}"><td>{status}</td><td><code>{html.escape(r["test"])}</code></td>'
                   f"<td>{html.escape(r['variant'])}</td><td>{html.escape(r['backend'])}</td>{''.join(cells)}"
                   f"<td class='verdicts'>{verdicts}</td></tr>")
    out.append("</tbody></table>")
    if any(r.get("reused") for r in rows):
        out.append(f"<p class='note'>{html.escape(REUSED_NOTE)}</p>")
    return "".join(out)


def render(doc: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The report page for results document ``doc`` (deltas against ``baseline``'s rows where given)."""
    rows = ordered(doc.get("rows", []))
    meta = html.escape(f"commit {doc.get('commit') or '?'} · {doc.get('created', '')} · "
                       f"{doc.get('hardware', {}).get('cpu', '')} · {len(rows)} results: {counts(rows)}")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>pytest-tfopt report</title>',
        f"<style>{STYLE}</style></head><body>",
        f"<h1>pytest-tfopt report</h1><p>{meta}</p>",
        _table(rows, baseline),
        plots(rows),
        "</body></html>",
    ])
