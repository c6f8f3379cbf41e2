"""The charts of ``tfopt history --plot``: each series over its commits, its levels, and its steps marked.

Needs the ``report`` extra (Altair, vl-convert); :mod:`pytest_tfopt.cli.history` imports this module only
once it has found both. One chart per series, stacked in one Vega-Lite spec: the values (points and a
line), the level of each segment (dashed), a vertical rule at each step (red: regression, green:
improvement) with its change in the tooltip. ``.html`` is one offline file; ``.svg`` and ``.png`` are
drawn by vl-convert, without a browser.
"""

from __future__ import annotations

import json
from typing import Any

import altair as alt
import vl_convert

from ..report.html import EMBED
from ..report.plots import javascript, vega_lite_version
from .series import Series

FORMATS = (".html", ".svg", ".png")
KIND_COLOURS = {"regression": "#e15759", "improvement": "#59a14f"}
WIDTH, HEIGHT = 520, 160


def short(commit: str) -> str:
    """A commit as tables and charts show it: 10 characters of a hash, a name as it is."""
    return commit[:10] if len(commit) >= 40 else commit


def _records(series: Series) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The points (with the level of their segment) and the steps of ``series`` as chart data."""
    bounds = [0, *(s.index for s in series.steps), len(series.points)]
    levels = [s.before for s in series.steps[:1]] + [s.after for s in series.steps]
    points = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        for n, p in enumerate(series.points[a:b], a):
            points.append({"n": n, "commit": short(p.commit), "value": p.value, "runs": p.runs, "branch": p.branch,
                           "level": levels[k] if levels else None})
    steps = []
    for s in series.steps:
        change = f"{s.relative:+.1%}" if series.info.relative_change and s.relative is not None else f"{s.change:+.4g}"
        steps.append({"n": s.index, "commit": short(series.points[s.index].commit), "kind": series.kind(s), "change": change,
                      "before": s.before, "after": s.after})
    return points, steps


def chart(series: Series) -> alt.LayerChart:
    """One series: values, segment levels, steps."""
    points, steps = _records(series)
    labels = json.dumps({str(p["n"]): p["commit"] for p in points})  # commit n's label: its hash, however short
    x = alt.X("n:O", title="commit (oldest first)", axis=alt.Axis(labelAngle=-40, labelExpr=f"{labels}[datum.value]"))
    y = alt.Y("value:Q", title=f"{series.field}{f' ({series.info.unit})' if series.info.unit else ''}",
              scale=alt.Scale(zero=False))
    base = alt.Chart(alt.Data(values=points))
    line = base.mark_line(color="#4e79a7").encode(x=x, y=y)
    dots = base.mark_point(filled=True, size=50, color="#4e79a7").encode(
        x=x, y=y, tooltip=["commit:N", "branch:N", "runs:Q", alt.Tooltip("value:Q", format=".5~g")])
    level = base.mark_line(strokeDash=[5, 3], color="#999", interpolate="step").encode(x=x, y="level:Q")
    layers = [level, line, dots]
    if steps:
        layers.append(alt.Chart(alt.Data(values=steps)).mark_rule(strokeWidth=2, opacity=0.7).encode(
            x=x,
            color=alt.Color("kind:N", title="step", scale=alt.Scale(domain=list(KIND_COLOURS),
                                                                     range=list(KIND_COLOURS.values()))),
            tooltip=["commit:N", "kind:N", "change:N", alt.Tooltip("before:Q", format=".5~g"),
                     alt.Tooltip("after:Q", format=".5~g")]))
    return alt.layer(*layers).properties(title=alt.TitleParams(series.title, anchor="start", fontSize=11,
                                                               limit=WIDTH + 200), width=WIDTH, height=HEIGHT)


def spec(all_series: list[Series]) -> dict[str, Any]:
    """Every series' chart, stacked, as one Vega-Lite spec."""
    stacked = alt.vconcat(*(chart(s) for s in all_series)).resolve_scale(color="independent")
    return stacked.configure_view(stroke="#ccc").configure_axis(labelFontSize=10, titleFontSize=11).to_dict()


def render(all_series: list[Series], path: str) -> bytes:
    """The charts as the file ``path`` names by its extension (:data:`FORMATS`)."""
    drawn = spec(all_series)
    if path.endswith(".svg"):
        return vl_convert.vegalite_to_svg(drawn, vl_version=vega_lite_version()).encode()
    if path.endswith(".png"):
        return vl_convert.vegalite_to_png(drawn, vl_version=vega_lite_version())
    data = json.dumps(drawn, sort_keys=True).replace("<", "\\u003c")  # cannot end its <script> early
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>pytest-tfopt history</title></head><body>"
            "<h1>pytest-tfopt history</h1><div id='tfopt-chart-0'></div>"
            f"<script type='application/json' class='tfopt-spec' data-target='tfopt-chart-0'>{data}</script>"
            f"<script>{javascript()}</script><script>{EMBED}</script></body></html>")
    return page.encode()
