"""The HTML report's charts: Vega-Lite specs built with Altair, and the JavaScript that draws them offline.

Needs the ``report`` extra (``pip install pytest-tfopt[report]``: Altair, vl-convert). Only
:mod:`.html` imports this module, and only once it has found both installed.

Per source model (and output): accuracy against size and against p50 latency, each with the fp32 reference
(a point and a dashed line at its accuracy) and the Pareto frontier (grey steps); and the batch-1 latency
percentiles p50/p90/p95/p99 with their 95 % intervals. One colour per backend on every chart; the status of a
point is its shape (fp32, passed, failed, ...); names and values are in tooltips and legends, not printed beside
the points, so nothing overlaps or is cut off.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import altair as alt
import vl_convert

from . import plotdata
from .plotdata import REFERENCE, Tradeoff

#: one colour per backend (Tableau 10), assigned in sorted order so every chart agrees
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
#: a point's shape says its status: the reference and passes are filled shapes, failures crosses
SHAPES = {REFERENCE: "diamond", "passed": "circle", "failed": "cross", "error": "cross", "inconclusive": "triangle-up",
          "xpassed": "square", "xfailed": "square", "skipped": "square"}
#: latency percentiles: one shape each
PERCENTILE_SHAPES = {"p50": "circle", "p90": "square", "p95": "triangle-up", "p99": "diamond"}
WIDTH, HEIGHT = 440, 300


@dataclass(frozen=True)
class Chart:
    """One chart of the report: a title (also its accessible name) and its Vega-Lite spec."""

    title: str
    spec: dict[str, Any]


def charts(rows: list[dict[str, Any]]) -> list[Chart]:
    """Every chart for ``rows`` (result rows): trade-offs per model and output, latency percentiles per model."""
    colour = alt.Scale(domain=sorted({r["backend"] for r in rows}), range=list(PALETTE))
    groups = plotdata.groups(rows)
    several = len({g.source for g in groups}) > 1 or any(g.output for g in groups)
    out = []
    for group in groups:
        about = _about(plotdata.modules(group.rows) if several else "", group.output)
        size = plotdata.tradeoff(group, "size_bytes", divisor=1024)
        if size is not None:
            out.append(_tradeoff_chart(f"accuracy vs size{about}", size, "size (KB)", group.metric, colour))
        speed = plotdata.tradeoff(group, "latency_b1_p50_ms")
        if speed is not None:
            out.append(_tradeoff_chart(f"accuracy vs latency{about}", speed, "p50 latency (ms, batch 1)",
                                       group.metric, colour))
    for source_rows in plotdata.sources(rows):
        records = plotdata.latency(source_rows)
        if records:
            about = _about(plotdata.modules(source_rows) if several else "", None)
            out.append(_latency_chart(f"latency percentiles{about}", records, colour))
    return out


def _about(modules: str, output: str | None) -> str:
    parts = [p for p in (modules, f"output {output}" if output else "") if p]
    return f" — {', '.join(parts)}" if parts else ""


def _status_shape(statuses: list[str]) -> alt.Shape:
    """The point's shape by its status, in a legend of the statuses present."""
    return alt.Shape("status:N", title="status", scale=alt.Scale(domain=statuses, range=[SHAPES[s] for s in statuses]))


def _cost_axis(scale: dict[str, Any]) -> alt.Axis:
    """A size or latency axis: few ticks, labels that never overlap (Vega drops the ones that would); a log
    axis's ticks at 1, 2, 5 × 10^k labelled as plain numbers (0.02, not 2e-2), a linear one's as Vega rounds them."""
    if scale["type"] == "log":
        return alt.Axis(grid=True, values=plotdata.log_ticks(scale["domain"]), format="~g", labelOverlap="greedy")
    return alt.Axis(grid=True, tickCount=6, labelOverlap="greedy", labelFlush=True)


def _tradeoff_chart(title: str, t: Tradeoff, x_title: str, metric: str, colour: alt.Scale) -> Chart:
    """Accuracy (y) against a cost (x): fp32 lines, the frontier, error bars where intervals are known, points."""
    better = "higher" if t.higher_is_better else "lower"
    x = alt.X("x:Q", title=x_title, scale=alt.Scale(**t.x_scale), axis=_cost_axis(t.x_scale))
    y = alt.Y("y:Q", title=f"{metric} ({better} is better)", scale=alt.Scale(domain=t.y_domain, zero=False),
              axis=alt.Axis(format=".3~f"))
    backend = alt.Color("backend:N", title="backend", scale=colour)
    fp32 = alt.Chart(alt.Data(values=t.references), name="fp32").mark_rule(strokeDash=[6, 4], strokeWidth=1.5).encode(
        y="y:Q", color=backend,
        tooltip=[alt.Tooltip("backend:N"), alt.Tooltip("y:Q", title=f"fp32 {metric}", format=".4f")])
    front = alt.Chart(alt.Data(values=t.frontier_line), name="frontier").mark_line(
        interpolate="step-after", color="#999", strokeWidth=2).encode(x=x, y="y:Q", order="x:Q")
    rings = alt.Chart(alt.Data(values=t.frontier), name="frontier points").mark_point(
        size=320, color="#999", strokeWidth=1.5).encode(x=x, y="y:Q")
    bars = alt.Chart(alt.Data(values=[p for p in t.points if p["x_lo"] is not None]), name="intervals").mark_rule(
        strokeWidth=2).encode(x="x_lo:Q", x2="x_hi:Q", y="y:Q", color=backend)
    points = alt.Chart(alt.Data(values=t.points), name="points").mark_point(filled=True, size=80, opacity=0.85).encode(
        x=x, y=y, color=backend, shape=_status_shape(t.statuses),
        tooltip=[alt.Tooltip("label:N", title="variant / backend"), alt.Tooltip("status:N"),
                 alt.Tooltip("x:Q", title=x_title, format=".4~g"), alt.Tooltip("y:Q", title=metric, format=".4f"),
                 alt.Tooltip("tests:N", title="tests"), alt.Tooltip("broken:N", title="broken")])
    cost = x_title.split(" (")[0]
    subtitle = [f"dashed: fp32 {metric} · grey steps and rings: Pareto frontier (the best {metric} at each {cost})",
                "hover a point for its variant, tests and verdicts"]
    layered = alt.layer(fp32, front, rings, bars, points).properties(
        title=alt.TitleParams(title, subtitle=subtitle, anchor="start"), width=WIDTH, height=HEIGHT)
    return Chart(title, _spec(layered))


def _latency_chart(title: str, records: list[dict[str, Any]], colour: alt.Scale) -> Chart:
    """Per (variant, backend): the p50/p90/p95/p99 latency (shape) with its 95 % interval (bar), batch 1."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    percentiles = list(dict.fromkeys(r["percentile"] for r in records))
    scale = plotdata.value_scale([v for r in records for v in (r["lo"], r["hi"], r["ms"])])
    x = alt.X("ms:Q", title="latency per invocation (ms, batch 1)", scale=alt.Scale(**scale),
              axis=_cost_axis(scale))
    y = alt.Y("label:N", title=None, sort=labels, axis=alt.Axis(labelLimit=360))
    offset = alt.YOffset("percentile:N", sort=percentiles, scale=alt.Scale(paddingInner=0.3))
    backend = alt.Color("backend:N", title="backend", scale=colour)
    base = alt.Chart(alt.Data(values=records))
    bars = base.transform_filter("datum.interval").mark_rule(strokeWidth=2).encode(
        x="lo:Q", x2="hi:Q", y=y, yOffset=offset, color=backend).properties(name="intervals")
    tooltip = [alt.Tooltip("label:N", title="variant / backend"), alt.Tooltip("percentile:N"),
               alt.Tooltip("ms:Q", title="ms", format=".4~g"),
               alt.Tooltip("lo:Q", title="95% interval from", format=".4~g"),
               alt.Tooltip("hi:Q", title="to", format=".4~g"), alt.Tooltip("unbounded:N", title="upper end unbounded"),
               alt.Tooltip("n:Q", title="timed runs"), alt.Tooltip("test:N"), alt.Tooltip("broken:N")]
    marks = base.mark_point(filled=True, size=50).encode(
        x=x, y=y, yOffset=offset, color=backend, tooltip=tooltip,
        shape=alt.Shape("percentile:N", title="percentile", sort=percentiles,
                        scale=alt.Scale(domain=percentiles, range=[PERCENTILE_SHAPES[p] for p in percentiles])),
    ).properties(name="percentiles")
    subtitle = "bars: the 95 % interval of each percentile" if any(r["interval"] for r in records) else (
        "no intervals recorded for these percentiles")
    layered = alt.layer(bars, marks).properties(
        title=alt.TitleParams(title, subtitle=[subtitle, "hover a mark for its value and runs"], anchor="start"),
        width=WIDTH, height=alt.Step(11))
    return Chart(title, _spec(layered))


def _spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    """The chart's Vega-Lite spec, with the report's look (a light frame, readable axis labels)."""
    return chart.configure_view(stroke="#ccc").configure_axis(labelFontSize=11, titleFontSize=12).to_dict()


def vega_lite_version() -> str:
    """The Vega-Lite version to draw with: Altair's, as vl-convert names it (its nearest older one if absent)."""
    wanted = tuple(int(p) for p in alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    known = sorted(tuple(int(p) for p in v.split(".")[:2]) for v in vl_convert.get_vegalite_versions())
    usable = [v for v in known if v <= wanted] or known
    return ".".join(map(str, usable[-1]))


@functools.lru_cache(maxsize=1)
def javascript() -> str:
    """Vega, Vega-Lite and vega-embed in one script (about 0.9 MB; vl-convert bundles it offline, once per process)."""
    return vl_convert.javascript_bundle(vl_version=vega_lite_version())


def render_png(spec: dict[str, Any], scale: float = 1.0) -> bytes:
    """A chart drawn to PNG by the same Vega-Lite, without a browser (tests and previews)."""
    return vl_convert.vegalite_to_png(spec, vl_version=vega_lite_version(), scale=scale)
