"""What the HTML report plots, as plain data: trade-offs, the fp32 reference, Pareto frontiers, latency percentiles.

Rows are grouped by source model (``source_hash``) and, for a model with several outputs, by output
(``accuracy[<output>]``): a trade-off plot compares variants of one model on one metric. Each record is a dict
of JSON values, ready to be a Vega-Lite data value; :mod:`.plots` draws them. No plotting library is imported
here, so the choices (which point, which frontier, which axis range) are tested without one.

Latency intervals: a row's ``latency_b1_p<p>_ci_ms`` field, when present, is the 95 % interval ``[low, high]`` of
that percentile in ms (``high`` ``None``: too few runs to bound it); rows without it are drawn as points only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import TfoptError
from ..measure import accuracy as acc
from .common import outcome

#: the latency percentiles rows carry (batch 1), in the order plotted
PERCENTILES = (50, 90, 95, 99)
#: the status of the fp32 point every trade-off plot carries
REFERENCE = "fp32 reference"
#: statuses from worst to best: a (variant, backend) measured by several tests shows its worst
WORST_FIRST = ("error", "failed", "inconclusive", "xpassed", "xfailed", "skipped", "passed")
#: a value axis whose largest value is more than this many times its smallest is drawn on a log scale
LOG_SPAN = 10.0
#: the narrowest accuracy axis of a score in [0, 1] (5 points): noise between variants does not fill the plot
MIN_SCORE_SPAN = 0.05
#: the narrowest axis of an unbounded metric (mae, rmse), as a fraction of its largest value
MIN_RELATIVE_SPAN = 0.1


@dataclass(frozen=True)
class Group:
    """The rows plotted together: one source model and, for a model with several outputs, one output."""

    source: str | None
    #: ``None``: the model's one accuracy (row field ``accuracy``); else the output's (``accuracy[<output>]``)
    output: str | None
    rows: tuple[dict[str, Any], ...]

    @property
    def accuracy_key(self) -> str:
        return "accuracy" if self.output is None else f"accuracy[{self.output}]"

    @property
    def metric(self) -> str:
        """The metric's name as rows give it (``top1``, ``mae``); ``accuracy`` when no row names it."""
        suffix = "" if self.output is None else f"[{self.output}]"
        return next((str(r[f"metric{suffix}"]) for r in self.rows if r.get(f"metric{suffix}")), "accuracy")

    @property
    def higher_is_better(self) -> bool:
        try:
            return acc.resolve(self.metric).higher_is_better
        except (TfoptError, TypeError):  # a user's callable known only by name: higher is better, as by default
            return True



@dataclass(frozen=True)
class Tradeoff:
    """One trade-off plot: accuracy (y) against a cost (x) where lower is better (size, latency)."""

    points: list[dict[str, Any]]
    #: the fp32 accuracy per backend: ``{"backend", "y"}``, drawn as a line across the plot
    references: list[dict[str, Any]]
    #: the points no other point beats on both axes, by ascending x
    frontier: list[dict[str, Any]]
    #: the frontier's step line: its points, and the last one's accuracy carried to the axis' end
    frontier_line: list[dict[str, Any]]
    x_scale: dict[str, Any]
    y_domain: list[float]
    higher_is_better: bool = True
    statuses: list[str] = field(default_factory=list)


def groups(rows: list[dict[str, Any]]) -> list[Group]:
    """The (source model, output) groups of ``rows``, in row order; rows without an accuracy are left out."""
    found: dict[tuple[Any, str | None], list[dict[str, Any]]] = {}
    for r in rows:
        outputs = [None] if r.get("accuracy") is not None else []
        outputs += [k[len("accuracy["):-1] for k in r if k.startswith("accuracy[") and r[k] is not None]
        for output in outputs:
            found.setdefault((r.get("source_hash"), output), []).append(r)
    return [Group(source, output, tuple(rs)) for (source, output), rs in found.items()]


def modules(rows: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> str:
    """The test module(s) of ``rows``: how a reader tells the models of a report apart."""
    names = list(dict.fromkeys(r["test"].split("::")[0] for r in rows))
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"


def sources(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``rows`` split by source model, in row order (latency does not depend on the output)."""
    found: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        found.setdefault(r.get("source_hash"), []).append(r)
    return list(found.values())


def status(rows: list[dict[str, Any]]) -> str:
    """The worst outcome of ``rows`` (one variant on one backend, maybe measured by several tests)."""
    seen = {outcome(r) for r in rows}
    return next((s for s in WORST_FIRST if s in seen), "passed")


def _broken(rows: list[dict[str, Any]]) -> str:
    """What broke, for a tooltip: the error or the broken budgets' messages."""
    texts = [r["error"] for r in rows if r.get("error")]
    texts += [v["message"] for r in rows for v in r.get("verdicts", []) if v.get("passed") is False]
    return "; ".join(dict.fromkeys(texts))[:300]


def _by_variant(rows: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        found.setdefault((r["variant"], r["backend"]), []).append(r)
    return found


def _point(rows: list[dict[str, Any]], measured: dict[str, Any], x_key: str, y_key: str,
           divisor: float) -> dict[str, Any]:
    """The point of one (variant, backend): the values of row ``measured``, the worst status of ``rows``."""
    lo, hi = _interval(measured, x_key)
    return {"label": f"{measured['variant']} / {measured['backend']}", "variant": measured["variant"],
            "backend": measured["backend"], "status": REFERENCE if measured["variant"] == "fp32" else status(rows),
            "x": measured[x_key] / divisor, "y": float(measured[y_key]), "x_lo": None if lo is None else lo / divisor,
            "x_hi": None if hi is None else hi / divisor, "tests": ", ".join(r["test"].split("::")[-1] for r in rows),
            "broken": _broken(rows)}


def _interval(row: dict[str, Any], key: str) -> tuple[float | None, float | None]:
    """A ``*_ms`` field's 95 % interval from its ``*_ci_ms`` companion, ``(None, None)`` when absent."""
    ci = row.get(key[: -len("_ms")] + "_ci_ms")
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None, None
    lo, hi = ci
    return (None if lo is None else float(lo)), (None if hi is None or not math.isfinite(hi) else float(hi))


def tradeoff(group: Group, x_key: str, divisor: float = 1.0) -> Tradeoff | None:
    """Accuracy against row field ``x_key`` (divided by ``divisor``: bytes as KB), or None when nothing has both.

    One point per (variant, backend), the first row measuring both values; its status the worst of its rows'.
    The fp32 reference is the fp32 variant's row where there is one, else the rows' ``reference_*`` fields
    (fp32 on the same backend): its accuracy a line across the plot, a point where its ``x_key`` is known too.
    """
    points, references = _points(group, x_key, divisor)
    if not points:
        return None
    ys = [p["y"] for p in points] + list(references.values())
    x_scale = value_scale([v for p in points for v in (p["x"], p["x_lo"], p["x_hi"])])
    best = frontier(points, group.higher_is_better)
    line = [{"x": p["x"], "y": p["y"]} for p in best] + [{"x": x_scale["domain"][1], "y": best[-1]["y"]}]
    return Tradeoff(points=points, references=[{"backend": b, "y": y} for b, y in references.items()],
                    frontier=best, frontier_line=line, x_scale=x_scale,
                    y_domain=accuracy_domain(ys, group.higher_is_better), higher_is_better=group.higher_is_better,
                    statuses=[s for s in (REFERENCE, *WORST_FIRST) if any(p["status"] == s for p in points)])


def _points(group: Group, x_key: str, divisor: float) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The trade-off's points (fp32's included) and the fp32 accuracy per backend."""
    y_key = group.accuracy_key
    points: dict[tuple[str, str], dict[str, Any]] = {}
    reference_rows: dict[str, dict[str, Any]] = {}
    for key, rs in _by_variant(group.rows).items():
        measured = next((r for r in rs if r.get(x_key) is not None and r.get(y_key) is not None), None)
        if measured is not None:
            points[key] = _point(rs, measured, x_key, y_key, divisor)
        ref = next((r for r in rs if r.get(f"reference_{y_key}") is not None), None)
        if ref is not None:
            reference_rows.setdefault(key[1], ref)
    references = {backend: float(r[f"reference_{y_key}"]) for backend, r in reference_rows.items()}
    for backend, r in reference_rows.items():
        if ("fp32", backend) not in points and r.get(f"reference_{x_key}") is not None:
            points["fp32", backend] = {
                "label": f"fp32 / {backend}", "variant": "fp32", "backend": backend, "status": REFERENCE,
                "x": r[f"reference_{x_key}"] / divisor, "y": references[backend], "x_lo": None, "x_hi": None,
                "tests": "(the reference the budgets compare against)", "broken": ""}
    references.update({p["backend"]: p["y"] for p in points.values() if p["variant"] == "fp32"})
    return list(points.values()), references


def frontier(points: list[dict[str, Any]], higher_is_better: bool = True) -> list[dict[str, Any]]:
    """The Pareto frontier: points no other point beats on both axes (lower x, better y), by ascending x."""
    sign = 1.0 if higher_is_better else -1.0
    best, out = -math.inf, []
    for p in sorted(points, key=lambda p: (p["x"], -sign * p["y"])):
        if sign * p["y"] > best:
            best = sign * p["y"]
            out.append(p)
    return out


def accuracy_domain(values: list[float], higher_is_better: bool = True) -> list[float]:
    """An accuracy axis around ``values`` that does not blow noise up: at least 5 points wide for a score in
    [0, 1] (kept inside it), at least 10 % of the largest magnitude otherwise, with a margin either side."""
    lo, hi = min(values), max(values)
    score = higher_is_better and 0.0 <= lo and hi <= 1.0
    least = MIN_SCORE_SPAN if score else MIN_RELATIVE_SPAN * (max(abs(lo), abs(hi)) or 1.0)
    span = max(hi - lo, least) * 1.2
    mid = (lo + hi) / 2
    lo, hi = mid - span / 2, mid + span / 2
    if score:  # slide the window inside [0, 1] rather than cut it
        lo, hi = (0.0, span) if lo < 0 else (1.0 - span, 1.0) if hi > 1 else (lo, hi)
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return [round(lo, 6), round(hi, 6)]


def value_scale(values: list[float]) -> dict[str, Any]:
    """A cost axis (KB, ms) with room around ``values``: logarithmic when they span more than :data:`LOG_SPAN`,
    else linear from zero (so a difference within measurement noise looks as small as it is)."""
    positive = [v for v in values if v is not None and v > 0]
    if not positive:
        return {"type": "linear", "domain": [0.0, 1.0], "nice": False}
    lo, hi = min(positive), max(positive)
    if hi / lo > LOG_SPAN:
        return {"type": "log", "domain": [_round_down(lo / 1.3), _round_up(hi * 1.3)], "nice": False}
    return {"type": "linear", "domain": [0.0, _round_up(hi * 1.08)], "nice": False}


def log_ticks(domain: list[float]) -> list[float]:
    """Tick values of a log axis over ``domain``: 1, 2 and 5 × 10^k (only the powers of ten past 8 ticks)."""
    lo, hi = domain
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = [round(m * 10.0**k, 12) for k in decades for m in (1, 2, 5) if lo <= m * 10.0**k <= hi]
    return ticks if len(ticks) <= 8 else [t for t in ticks if math.log10(t).is_integer()]


def _round_up(v: float) -> float:
    """The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k) at least ``v``: an axis end a tick
    can sit on, that wastes little of the plot."""
    decade = 10.0 ** math.floor(math.log10(v))
    return next(round(m * decade, 12) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * decade >= v * (1 - 1e-9))


def _round_down(v: float) -> float:
    """The largest 1, 2 or 5 × 10^k at most ``v``."""
    decade = 10.0 ** math.floor(math.log10(v))
    return next(m * decade for m in (5, 2, 1) if m * decade <= v * (1 + 1e-9))


def latency(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (variant, backend, percentile) of batch-1 latency (ms), with its 95 % interval if rows carry it.

    ``label`` names the variant and backend and says when it failed; ``unbounded``: the interval has no upper end
    (too few runs), so its bar stops at the percentile.
    """
    records = []
    for (variant, backend), rs in _by_variant(rows).items():
        measured = next((r for r in rs if r.get("latency_b1_p50_ms") is not None), None)
        if measured is None:
            continue
        state = status(rs)
        label = f"{variant} / {backend}" + ("" if state in ("passed", "skipped") else f" ({state.upper()})")
        for p in PERCENTILES:
            key = f"latency_b1_p{p}_ms"
            if measured.get(key) is None:
                continue
            ms = float(measured[key])
            lo, hi = _interval(measured, key)
            records.append({"label": label, "variant": variant, "backend": backend, "status": state,
                            "percentile": f"p{p}", "ms": ms, "lo": ms if lo is None else lo,
                            "hi": ms if hi is None else hi, "interval": lo is not None,
                            "unbounded": lo is not None and hi is None, "n": measured.get("latency_b1_n"),
                            "test": measured["test"].split("::")[-1], "broken": _broken(rs)})
    return records
