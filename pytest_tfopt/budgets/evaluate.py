"""Judging, in the core: which budgets apply to a result, and their verdicts — for every front end.

:class:`Gate` is the one judge of a run. The pytest plugin hands it what a test states (its budget markers)
and gets the verdicts and failure text for a runnable model (:meth:`Gate.judge`); ``tfopt compare`` hands it
two saved rows (:meth:`Gate.judge_rows`). Both select through the same budgets file, baseline rows and
hardware rule. Nothing in this module knows pytest. :func:`select` decides which budgets apply (markers
override the file's budget of the same meaning, change thresholds meet their baseline value or say why they
cannot), :func:`judge` checks them on a runnable model under a perf mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .. import baseline, metrics
from ..errors import BackendUnavailable, TfoptError, setting
from ..triage import failure_note
from .rows import check_row
from .verdict import RECORDED_NOTE, Verdict

#: marker aliases: the same budget under another name (overrides, reports and budgets files treat them as one)
ALIASES = {"min_accuracy_drop": "max_accuracy_drop"}
#: timing budgets: --tfopt-perf=off skips them, record reports them without enforcing
PERF_MARKERS = ("max_latency_ms", "min_throughput", "min_speedup")
PERF_MODES = ("enforce", "record", "off")
#: what a budget measures: ``quality`` (accuracy, fidelity, outputs), ``footprint`` (size, memory, weights),
#: ``perf`` (timings), ``change`` (a metric against the baseline)
KINDS = ("quality", "footprint", "perf", "change")
#: how undecided (INCONCLUSIVE) verdicts count: shown as such, failures, or passes
INCONCLUSIVE_POLICIES = ("warn", "fail", "pass")


class Budget(Protocol):
    """What the judge needs of a budget: its marker name, its kind (one of :data:`KINDS`) and a check.

    ``check(model, reference)`` measures ``model`` (and ``reference`` where the budget compares) and returns
    a :class:`Verdict`; budgets answerable from saved numbers also have ``check_row(row)``.
    """

    marker: str
    kind: str

    def check(self, model: Any, reference: Any) -> Verdict: ...


@dataclasses.dataclass(frozen=True)
class NotCompared:
    """A change threshold the baseline cannot decide: INCONCLUSIVE with the reason, never skipped in silence."""

    change: Any
    why: str
    kind = "change"

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
        comparable = base_row is not None and (same_hardware or not metrics.hardware_dependent(metric))
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
    """Whether ``budget`` is a timing budget: of kind ``perf``, or a change threshold on a timing metric."""
    kind = getattr(budget, "kind", None)
    if kind == "change":
        metric = getattr(budget, "metric", "")
        return metrics.is_metric(metric) and metrics.hardware_dependent(metric)
    return kind == "perf"


def recorded(verdict: Verdict) -> Verdict:
    """``verdict`` of a timing budget under ``perf="record"``: a broken one is reported, not enforced."""
    if verdict.passed is not False:
        return verdict
    return dataclasses.replace(verdict, passed=True, recorded=True,
                               message=verdict.message + RECORDED_NOTE)


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
    judged = [(budget, budget.check(model, reference_for(budget))) for budget in values]
    for change, was in changes:
        value = change.measure(model)
        if was is not None:
            judged.append((change, change.check(model, was, value)))
    if perf == "record":
        return [recorded(v) if is_perf(b) else v for b, v in judged]
    return [v for _, v in judged]


def reference_for(budget: Any, bench: Any, model: Any, reference: Any) -> Any:
    """fp32 on the same backend (``reference``), or the variant a budget names (``min_speedup(reference="int8")``)."""
    name = getattr(budget, "reference_variant", "fp32")
    backend = getattr(budget, "reference_backend", model.backend)
    return reference if (name, backend) == ("fp32", model.backend) else bench.runnable(name, backend)


@dataclasses.dataclass(frozen=True)
class Judgement:
    """What the gate said about one model: its verdicts, the reference it was compared with, and the
    failure text (each broken verdict's message, then the triage or the kept artifact; empty when it passed)."""

    verdicts: list[Verdict]
    reference: Any
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclasses.dataclass
class Gate:
    """The judge of a run: the budgets file, the baseline and the modes every result is judged under.

    ``baseline_rows``: row key (test, variant, backend) → the baseline's row (``None``: no baseline);
    ``same_hardware``: whether timing change thresholds may compare with it; ``perf``: one of
    :data:`PERF_MODES`; ``inconclusive``: one of :data:`INCONCLUSIVE_POLICIES`; ``canonical``: a variant
    written in the budgets file → its canonical id.
    """

    budgets_file: Any = None
    baseline_rows: dict[tuple[str, str, str], dict[str, Any]] | None = None
    same_hardware: bool = True
    perf: str = "enforce"
    inconclusive: str = "warn"
    canonical: Callable[[str], str] | None = None
    #: profile every judged model and its reference per op (not only broken timing gates), for the rows
    profile: bool = False

    def select(self, test: str, variant: str, backend: str,
               marked: dict[str, list[Any]] | None = None) -> tuple[list[Any], list[tuple[Any, float | None]]]:
        """The value budgets and change thresholds that apply to one result (see :func:`select`)."""
        from_file, changes = self._from_file(test, variant, backend)
        base = None if self.baseline_rows is None else self.baseline_rows.get((test, variant, backend))
        return select(marked or {}, from_file, changes, base, self.baseline_rows is not None, self.same_hardware)

    def _from_file(self, test: str, variant: str, backend: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.budgets_file is None:
            return {}, {}
        return self.budgets_file.select(test, variant, backend, self.canonical)

    def judge(self, test: str, model: Any, bench: Any, marked: dict[str, list[Any]] | None = None) -> Judgement:
        """Every budget of ``test`` on runnable ``model`` (built by workbench ``bench``), with the failure text.

        ``marked``: marker name → the budgets the test's own markers state. Accuracy is measured for the
        reports when the data has labels; a broken accuracy budget of a full-integer TFLite variant gets
        the quantization triage in its failure text.
        """
        reference = bench.reference(model.backend)
        model.begin_test(test)
        values, changes = self.select(test, model.variant, model.backend, marked)
        verdicts = judge(model, values, changes, self.perf,
                         functools.partial(reference_for, bench=bench, model=model, reference=reference))
        measure_accuracy(model, reference)
        if self.profile:  # after the gates, on runners of their own: the judged timings are not touched
            for m in (model, reference):
                with contextlib.suppress(BackendUnavailable):
                    m.profile()
        broken = self.broken(verdicts)
        if broken:  # before the row is recorded: the triage lands in the model's measurements
            broken.append(failure_note(bench, model, verdicts) or f"kept artifact: {model.path}")
        return Judgement(verdicts, reference, broken)

    def broken(self, verdicts: list[Verdict]) -> list[str]:
        """The messages of the verdicts that fail the test under the inconclusive policy."""
        broken = [v.message for v in verdicts if v.passed is False]
        if self.inconclusive == "fail":  # a gate that must decide: undecided is not green
            broken += [f"{v.message} ({setting('inconclusive', 'fail')})" for v in verdicts if v.passed is None]
        return broken

    def judge_rows(self, test: str, variant: str, backend: str, head: dict[str, Any],
                   base: dict[str, Any] | None) -> tuple[list[Verdict], list[str]]:
        """The budgets file's verdicts on saved row ``head`` against ``base`` (``tfopt compare``), and why any
        budget could not be judged from the rows (sentences; timing thresholds across hardware, missing values)."""
        values, changes = self._from_file(test, variant, backend)
        verdicts: list[Verdict] = []
        skipped: list[str] = []
        for budget in values.values():
            outcome = check_row(budget, head)
            (skipped if isinstance(outcome, str) else verdicts).append(outcome)
        for metric, change in changes.items() if base is not None else ():
            if metrics.hardware_dependent(metric) and not self.same_hardware:
                skipped.append(f"{metric} change thresholds skipped: BASE and HEAD ran on different hardware "
                               "(--ignore-hardware applies them)")
                continue
            outcome = change.check_row(base, head)
            (skipped if isinstance(outcome, str) else verdicts).append(outcome)
        return verdicts, skipped


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
