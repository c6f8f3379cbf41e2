"""Judging, in the core: which budgets apply to a result, and their verdicts on a model.

Front ends (the pytest plugin) gather what a test states — marker budgets, the budgets file's entries, the
baseline row — and hand them here; nothing in this module knows pytest. :func:`select` decides which
budgets apply (markers override the file's budget of the same meaning, change thresholds meet their
baseline value or say why they cannot), :func:`judge` checks them on a runnable model under a perf mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import baseline
from ..errors import TfoptError
from .verdict import Verdict

#: marker aliases: the same budget under another name (overrides, reports and budgets files treat them as one)
ALIASES = {"min_accuracy_drop": "max_accuracy_drop"}
#: timing budgets: --tfopt-perf=off skips them, record reports them without enforcing
PERF_MARKERS = ("max_latency_ms", "min_throughput", "min_speedup")
PERF_MODES = ("enforce", "record", "off")


@dataclasses.dataclass(frozen=True)
class NotCompared:
    """A change threshold the baseline cannot decide: INCONCLUSIVE with the reason, never skipped in silence."""

    change: Any
    why: str

    @property
    def marker(self) -> str:
        return self.change.marker

    @property
    def metric(self) -> str:
        return self.change.metric  # latency thresholds are timing budgets (--tfopt-perf)

    def check(self, model: Any, reference: Any) -> Verdict:
        return Verdict(self.change.marker, None, float("nan"), None, self.change.allowed,
                       f"{self.change.metric} = {self.change.spec!r} not checked: {model.variant} on {model.backend}: "
                       f"{self.why}")


def select(marked: dict[str, list[Any]], from_file: dict[str, Any], changes: dict[str, Any],
           base_row: dict[str, Any] | None, have_baseline: bool,
           same_hardware: bool) -> tuple[list[Any], list[tuple[Any, float | None]]]:
    """(value budgets, [(change threshold, baseline value or None)]) for one result.

    ``marked``: marker name → budgets from the test's closest markers (they override the budgets file's budget
    of the same meaning, aliases included); ``from_file``/``changes``: the budgets file's selection;
    ``base_row``: the baseline's row for this result (``None`` when absent). A threshold the baseline cannot
    decide (no row, or no value for the metric) adds an INCONCLUSIVE :class:`NotCompared` budget.
    """
    overridden = {ALIASES.get(name, name) for name, budgets in marked.items() if budgets}
    values = [b for name, b in from_file.items() if ALIASES.get(name, name) not in overridden]
    values += [b for budgets in marked.values() for b in budgets]
    checks = []
    for metric, change in changes.items():
        comparable = base_row is not None and (
            same_hardware or baseline.split_output(metric)[0] in baseline.HARDWARE_INDEPENDENT)
        was = baseline.metric_value(base_row, metric) if comparable else None
        if have_baseline and comparable and was is None:
            values.append(NotCompared(change, "the baseline row has no value for it (measured after the baseline "
                                              "was saved?): save the baseline again"))
        elif have_baseline and base_row is None:
            values.append(NotCompared(change, "the baseline has no row for this test, variant and backend "
                                              "(renamed, or saved under -k?): save the baseline again"))
        checks.append((change, was))
    return values, checks


def is_perf(budget: Any) -> bool:
    """Whether ``budget`` is a timing budget (latency, throughput, speed-up, or a latency change threshold)."""
    metric = getattr(budget, "metric", "")  # a callable or None for accuracy budgets
    return getattr(budget, "marker", "") in PERF_MARKERS or (isinstance(metric, str) and metric.startswith("latency"))


def recorded(verdict: Verdict) -> Verdict:
    """Under ``perf="record"`` a broken timing verdict is reported, not enforced."""
    if verdict.passed is not False or not (verdict.budget in PERF_MARKERS or verdict.budget.startswith("latency")):
        return verdict
    return dataclasses.replace(verdict, passed=True, recorded=True,
                               message=verdict.message + " (recorded, not enforced: --tfopt-perf=record)")


def judge(model: Any, values: list[Any], changes: list[tuple[Any, float | None]], perf: str,
          reference_for: Callable[[Any], Any]) -> list[Verdict]:
    """The verdicts of ``values`` and of the change thresholds that have a baseline value, on ``model``.

    ``reference_for(budget)`` gives the model a budget compares with (fp32 on the same backend unless the
    budget names another). Change thresholds are measured even without a baseline value, so a baseline saved
    from this run has them. ``perf``: ``enforce``, ``record`` or ``off`` (see :data:`PERF_MODES`).
    """
    if perf == "off":
        values = [b for b in values if not is_perf(b)]
        changes = [(c, was) for c, was in changes if not is_perf(c)]
    verdicts = [budget.check(model, reference_for(budget)) for budget in values]
    for change, was in changes:
        value = change.measure(model)
        if was is not None:
            verdicts.append(change.check(model, was, value))
    if perf == "record":
        verdicts = [recorded(v) for v in verdicts]
    return verdicts


def measure_accuracy(model: Any, reference: Any) -> None:
    """Accuracy for the summary and reports, when the evaluation data has labels (memoized per variant).

    On a model with several outputs: top-1 of each output labeled with integer classes, as ``accuracy[<output>]``.
    A default metric that does not fit the model is left out (budgets that need one say so themselves).
    """
    data = model.eval_dataset
    if data is None or data.y is None or "accuracy" in model.measurements:
        return
    names = model.signature.output_names
    if len(names) == 1:
        outputs: list[str | None] = [None]
    else:
        labeled = data.labeled_outputs or []
        outputs = [n for n in names if n in labeled and np.issubdtype(np.asarray(data.y[n]).dtype, np.integer)]
    for output in outputs:
        if output is not None and f"accuracy[{output}]" in model.measurements:
            continue
        try:
            model.evaluate(output=output)
            reference.evaluate(output=output)
        except TfoptError:
            pass
