"""Output-quality budgets: the variant's accuracy, fidelity and raw outputs against fp32's.

Accuracy drops are in the metric's units (fractions for top-1: 0.01 = 1 point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..measure import accuracy as acc
from ..measure import fidelity
from ..measure.stats import mcnemar_exact, paired_bootstrap, tango_interval
from ..runnable import RunnableModel
from .verdict import Verdict, about, about_row


@dataclass(frozen=True)
class AccuracyDrop:
    """The metric may get worse than fp32 by at most ``limit`` (a fraction of fp32's value if ``relative``).

    With ``confidence`` (e.g. 0.95) the budget holds only when the upper bound of a two-sided
    interval of the drop, on paired predictions, is within it: ``method="bootstrap"`` (default,
    any metric) resamples the samples with a fixed seed; ``method="mcnemar"`` (per-sample metrics:
    top-1, top-k) uses Tango's score interval of the paired difference, which is McNemar's test
    extended to a non-zero margin, and reports the exact McNemar p-value of "no change" too.
    """

    limit: float
    relative: bool = False
    metric: Any = None
    marker: str = "max_accuracy_drop"
    confidence: float | None = None
    method: str = "bootstrap"
    higher_is_better: bool | None = None

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        m = acc.resolve(self.metric, self.higher_is_better)
        value = model.evaluate(metric=m)
        ref = reference.evaluate(metric=m)
        if self.confidence is None:
            return self.judge(about(model), m, value, ref)
        samples = len(model.eval_dataset) if model.eval_dataset is not None else 0
        return self.judge(about(model), m, value, ref, self._interval(model, reference, m), samples)

    def check_row(self, row: dict[str, Any]) -> Verdict | str:
        """The verdict from a result row's accuracy and fp32 reference accuracy, or why it cannot be given."""
        if self.confidence is not None:
            return f"{self.marker} with confidence skipped: its interval needs paired predictions (run it under pytest)"
        missing = f"{self.marker} skipped where rows lack accuracy and fp32 reference accuracy in its metric"
        value, ref, row_metric = row.get("accuracy"), row.get("reference_accuracy"), row.get("metric")
        if value is None or ref is None or row_metric is None:
            return missing
        try:
            m = acc.resolve(self.metric, self.higher_is_better)
            stored = acc.resolve(row_metric)
        except UsageError:
            return missing
        if m.fn is not stored.fn or m.higher_is_better != stored.higher_is_better:
            return missing
        return self.judge(about_row(row), m, value, ref)

    def judge(self, who: str, m: acc.Metric, value: float, ref: float,
              interval: tuple[float, float, str] | None = None, samples: int = 0) -> Verdict:
        """The verdict on metric values ``value`` (variant) and ``ref`` (fp32); ``interval``: (low, high, note) of the drop."""
        drop = m.drop(ref, value, self.relative)
        unit = " (relative)" if self.relative else ""
        args = f"{self.limit:g}{', relative=True' if self.relative else ''}"
        shown, note = "", ""
        decisive = drop
        if interval is not None:
            lo, hi, detail = interval
            decisive = hi
            shown = f" [{lo:.4f}, {hi:.4f}] at {self.confidence:.0%}{detail}"
            args += f", confidence={self.confidence:g}"
            if self.method != "bootstrap":
                args += f", method={self.method!r}"
            if m.correct is not None and not self.relative and samples and 1 / samples > self.limit:
                note = (f" (warning: {samples} samples cannot resolve a budget below {1 / samples:.4f}: "
                        "evaluate on more data)")
        passed: bool | None = decisive <= self.limit + 1e-12
        if passed and note:
            # a bootstrap over too few samples collapses to a point (one sample: [0, 0]): not evidence
            passed = None
        verb = {True: "holds", False: "broken", None: "inconclusive"}[passed]
        text = (
            f"{self.marker}({args}) {verb}: {who}: {m.name} {value:.4f} vs fp32 "
            f"{ref:.4f}, drop {drop:.4f}{unit}{shown} {'>' if passed is False else '<='} budget {self.limit:g}{note}"
        )
        detail = ", ".join(([m.name] if m.name not in ("top1", "accuracy") else []) +
                           ([self.method] if self.confidence is not None and self.method != "bootstrap" else []))
        return Verdict(self.marker, passed, value, ref, self.limit, text, detail)

    def _interval(self, model: RunnableModel, reference: RunnableModel, m: acc.Metric) -> tuple[float, float, str]:
        """(low, high, what else to say) of the drop at ``confidence``."""
        confidence = self.confidence or 0.95
        if self.method == "mcnemar":
            ours, theirs = model.correct(m), reference.correct(m)
            b = int(np.sum(theirs & ~ours))  # fp32 right, variant wrong
            c = int(np.sum(~theirs & ours))  # fp32 wrong, variant right
            lo, hi = tango_interval(b, c, len(ours), confidence)
            return lo, hi, f" (Tango score interval; {b} lost vs {c} gained, exact McNemar p={mcnemar_exact(b, c):.3g})"
        data = model.eval_dataset
        ours, theirs = model.predictions(), reference.predictions()

        def stat(index):  # type: ignore[no-untyped-def]
            return m.drop(m(data.y[index], theirs[index]), m(data.y[index], ours[index]), self.relative)

        lo, hi = paired_bootstrap(len(data), stat, confidence)
        return lo, hi, ""


@dataclass(frozen=True)
class MinFidelity:
    """Label-free: the variant's outputs agree with fp32's (same inputs) at least ``limit`` on ``metric``.

    For lower-is-better metrics (``kl_divergence``, ``max_abs_error``) ``limit`` is the most allowed.
    """

    limit: float
    metric: str = "top1_agreement"
    marker: str = "min_fidelity"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        fm = fidelity.resolve(self.metric)
        value = fm.fn(reference.predictions(), model.predictions())
        model.measurements[f"fidelity_{fm.name}"] = value
        passed = value >= self.limit if fm.higher_is_better else value <= self.limit
        op = (">=" if passed else "<") if fm.higher_is_better else ("<=" if passed else ">")
        text = (
            f"min_fidelity({self.limit:g}, metric={self.metric!r}) {'holds' if passed else 'broken'}: "
            f"{about(model)}: {fm.name} vs fp32 {value:.4f} {op} budget {self.limit:g}"
        )
        return Verdict(self.marker, passed, value, None, self.limit, text)


@dataclass(frozen=True)
class MaxOutputDiff:
    """Every output of the variant within ``atol + rtol * |ref|`` of fp32 on ``reference_backend``.

    Same inputs (``eval_dataset``); the message also gives mean absolute error, cosine
    similarity and top-1 agreement.
    """

    atol: float = 1e-3
    rtol: float = 0.0
    reference_backend: str = "tf"
    marker: str = "max_output_diff"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        ours, theirs = model.predictions(), reference.predictions()
        if ours.shape != theirs.shape:
            return Verdict(self.marker, False, float("inf"), None, self.atol,
                           f"max_output_diff broken: {about(model)} outputs {ours.shape} but fp32 on "
                           f"{reference.backend} outputs {theirs.shape}")
        diff = np.abs(ours.astype(np.float64) - theirs)
        beyond = int(np.sum(diff > self.atol + self.rtol * np.abs(theirs)))
        worst, mean = float(diff.max()), float(diff.mean())
        cos, agree = fidelity.cosine(theirs, ours), fidelity.top1_agreement(theirs, ours)
        prefix = f"parity_{reference.backend}"
        model.measurements.update({f"{prefix}_max_abs": worst, f"{prefix}_mean_abs": mean,
                                   f"{prefix}_cosine": cos, f"{prefix}_top1_agreement": agree})
        passed = beyond == 0
        text = (
            f"max_output_diff(atol={self.atol:g}, rtol={self.rtol:g}, reference={self.reference_backend!r}) "
            f"{'holds' if passed else 'broken'}: {about(model)} vs fp32 on {reference.backend}: max |diff| {worst:.3g}, "
            f"mean {mean:.3g}, cosine {cos:.6f}, top-1 agreement {agree:.2%}; "
            f"{beyond} of {diff.size} outputs beyond atol + rtol*|ref|"
        )
        return Verdict(self.marker, passed, worst, None, self.atol, text)
