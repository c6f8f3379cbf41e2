"""Change thresholds: how much worse than a baseline a metric may get (``size = "+0%"``, ``accuracy = "-0.005"``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..baseline import metric_value
from ..errors import UsageError
from ..metrics import split_output
from ..runnable import RunnableModel
from .arguments import show
from .verdict import Verdict, about, about_row

#: how each metric of :data:`pytest_tfopt.metrics.METRICS` is measured on a runnable model
MEASURE: dict[str, Callable[[RunnableModel], float]] = {
    "accuracy": lambda m: m.evaluate(),
    "size": lambda m: float(m.size_bytes),
    "gzip_size": lambda m: float(m.gzip_size_bytes),
    "latency_p50": lambda m: m.latency(1).p50_ms,
    "latency_p95": lambda m: m.latency(1).p95_ms,
}
#: name: (higher is better, (unit, format), how to measure): a view of the metrics table
CHANGE_METRICS = {m.name: (m.higher_is_better, (m.unit, m.message_format), MEASURE[m.name]) for m in metrics.METRICS}
#: metrics that may name one output of a model with several: ``accuracy[risk] = "-0.01"``
PER_OUTPUT = tuple(m.name for m in metrics.METRICS if m.per_output)


def is_change_metric(metric: str) -> bool:
    """Whether ``metric`` is a change metric (``accuracy[<output>]`` included)."""
    return metrics.is_metric(metric)


@dataclass(frozen=True)
class ChangeBudget:
    """``metric`` may get worse than the baseline by at most ``allowed`` (a fraction when ``relative``).

    Written like ``"+10%"`` for lower-is-better metrics (latency, size) and ``"-0.005"``
    for higher-is-better ones (accuracy): the sign points in the direction of "worse".
    """

    metric: str
    allowed: float
    relative: bool
    spec: str

    @property
    def marker(self) -> str:
        return f"{self.metric} change"

    def measure(self, model: RunnableModel) -> float:
        """The metric's current value (measuring it records it in the model's measurements)."""
        base, output = split_output(self.metric)
        if output is not None:
            return float(model.evaluate(output=output))
        return float(MEASURE[base](model))

    def check(self, model: RunnableModel, baseline_value: float, value: float | None = None) -> Verdict:
        """The verdict on ``model`` (measured unless ``value`` is given) against ``baseline_value``."""
        return self.judge(about(model), baseline_value, self.measure(model) if value is None else value)

    def check_row(self, base: dict[str, Any], head: dict[str, Any]) -> Verdict | str:
        """The verdict on result row ``head`` against row ``base``, or why it cannot be given."""
        was, now = metric_value(base, self.metric), metric_value(head, self.metric)
        if was is None or now is None:
            side = "BASE" if was is None else "HEAD"
            return f"{self.metric} change thresholds skipped where {side} rows have no {self.metric} value"
        return self.judge(about_row(head), was, now)

    def judge(self, who: str, baseline_value: float, value: float) -> Verdict:
        """The verdict on ``value`` against ``baseline_value``, both in the metric's units."""
        metric = metrics.get(self.metric)
        higher, unit, fmt = metric.higher_is_better, metric.unit, metric.message_format
        worse = baseline_value - value if higher else value - baseline_value
        amount = worse / abs(baseline_value) if self.relative and baseline_value else worse
        passed = amount <= self.allowed + 1e-12
        delta = value - baseline_value
        shown = f"{delta / baseline_value:+.1%}" if self.relative and baseline_value else f"{delta:+{fmt}}{unit}"
        text = (
            f"{self.metric} = {self.spec!r} {'holds' if passed else 'broken'}: {who}: "
            f"{value:{fmt}}{unit} vs baseline {baseline_value:{fmt}}{unit} ({shown}) "
            f"{'within' if passed else 'beyond'} the allowed change {self.spec}"
        )
        return Verdict(self.marker, passed, value, baseline_value, self.allowed, text)


def parse_change(metric: str, spec: Any) -> ChangeBudget:
    """A :class:`ChangeBudget` from ``"+10%"``, ``"-0.005"``, ``"+0%"``; usage errors say how to write it."""
    if not is_change_metric(metric):
        raise UsageError(f"unknown change metric {show(metric)}: use one of {', '.join(metrics.NAMES)} "
                         "(accuracy[<output>] for one output of a model with several)")
    higher = metrics.get(metric).higher_is_better
    worse_sign = "-" if higher else "+"
    example = f"{metric} = \"{worse_sign}{'0.005' if higher else '10%'}\""
    if isinstance(spec, int) and not isinstance(spec, bool) and spec.bit_length() > 64:
        raise UsageError(f"{metric} = <a huge number> is not a change threshold: write e.g. {example}")
    text = str(spec).strip()
    relative = text.endswith("%")
    body = text[:-1] if relative else text
    try:
        number = float(body)
    except ValueError:
        raise UsageError(f"{metric} = {show(spec)} is not a change threshold: write e.g. {example}") from None
    if not math.isfinite(number):
        raise UsageError(f"{metric} = {show(spec)} must be finite: write e.g. {example}")
    sign = body[:1]
    if sign in "+-" and sign != worse_sign and number != 0:
        raise UsageError(
            f"{metric} = {show(spec)}: a change threshold says how much worse it may get, and worse is "
            f"{'lower' if higher else 'higher'} for {metric}: write e.g. {example}"
        )
    allowed = abs(number) / 100 if relative else abs(number)
    return ChangeBudget(metric, allowed, relative, text)
