"""Output-quality budgets: the variant's accuracy, fidelity and raw outputs against fp32's.

Accuracy drops are in the metric's units (fractions for top-1: 0.01 = 1 point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import DatasetError, UsageError
from ..measure import accuracy as acc
from ..measure import fidelity
from ..measure.stats import mcnemar_exact, paired_bootstrap, tango_interval
from ..runnable import RunnableModel
from .verdict import Verdict, about, about_row, to_decide


@dataclass(frozen=True)
class AccuracyDrop:
    """The metric may get worse than fp32 by at most ``limit`` (a fraction of fp32's value if ``relative``).

    With ``confidence`` (e.g. 0.95) the verdict comes from a two-sided interval of the drop on paired
    predictions, by one rule: PASS when the whole interval is within the budget (its upper end is a one-sided
    ``(1 + confidence) / 2`` bound), FAIL when the whole interval is beyond it, INCONCLUSIVE when it straddles
    the budget — the message then says about how many evaluation samples would decide. ``method``:
    ``"mcnemar"`` (the default for absolute drops of per-sample metrics: top-1, top-k) uses Tango's score
    interval of the paired difference (McNemar's test extended to a non-zero margin) and reports the exact
    McNemar p-value of "no change"; ``"bootstrap"`` (the default otherwise: any metric, relative drops)
    resamples the samples with a fixed seed; on a per-sample metric it needs :data:`MIN_DISCORDANT` samples
    that fp32 and the variant score differently before it may PASS (fewer collapse its interval).
    """

    limit: float
    relative: bool = False
    metric: Any = None
    marker: str = "max_accuracy_drop"
    kind: ClassVar[str] = "quality"
    confidence: float | None = None
    #: ``"mcnemar"``, ``"bootstrap"`` or ``None`` (chosen by the metric; see the class docstring)
    method: str | None = None
    higher_is_better: bool | None = None
    #: the output scored on a model with several (``None``: the only one, or the only labeled one)
    output: str | None = None

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        m = acc.resolve(self.metric, self.higher_is_better)
        name = model.output_for(self.output, model.eval_dataset)
        value = model.evaluate(metric=m, output=name)
        ref = reference.evaluate(metric=m, output=name)
        who = about(model) + (f", output {name!r}" if model.suffix(name) else "")
        if self.confidence is None:
            return self.judge(who, m, value, ref)
        samples = len(model.eval_dataset) if model.eval_dataset is not None else 0
        lo, hi, note, differing = self._interval(model, reference, m, name)
        return self.judge(who, m, value, ref, (lo, hi, note), samples, differing)

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

    def method_for(self, m: acc.Metric) -> str:
        """The interval method used for metric ``m``: the one asked for, else Tango's (``"mcnemar"``) for absolute
        drops of per-sample metrics and the bootstrap otherwise."""
        if self.method is not None:
            return self.method
        return "mcnemar" if m.correct is not None and not self.relative else "bootstrap"

    def judge(self, who: str, m: acc.Metric, value: float, ref: float,
              interval: tuple[float, float, str] | None = None, samples: int = 0,
              discordant: int | None = None) -> Verdict:
        """The verdict on metric values ``value`` (variant) and ``ref`` (fp32).

        ``interval``: (low, high, note) of the drop at ``confidence``, two-sided; ``samples``: how many it was
        measured on; ``discordant``: of those, how many fp32 and the variant score differently (per-sample metrics;
        for others, how many samples carry the difference: :func:`~pytest_tfopt.measure.stats.effective_samples`).
        """
        drop = m.drop(ref, value, self.relative)
        unit = " (relative)" if self.relative else ""
        args = f"{self.limit:g}{', relative=True' if self.relative else ''}"
        if self.output is not None:
            args += f", output={self.output!r}"
        method = self.method_for(m)
        if interval is None:
            passed: bool | None = drop <= self.limit + 1e-12
            shown = f" {'<=' if passed else '>'} budget {self.limit:g}"
        else:
            args += f", confidence={self.confidence:g}" + (f", method={self.method!r}" if self.method else "")
            passed, shown = self._three_way(drop, interval, samples, discordant, m, ref, method)
        verb = {True: "holds", False: "broken", None: "inconclusive"}[passed]
        text = (
            f"{self.marker}({args}) {verb}: {who}: {m.name} {value:.4f} vs fp32 "
            f"{ref:.4f}, drop {drop:.4f}{unit}{shown}"
        )
        detail = ", ".join(([self.output] if self.output else []) +
                           ([m.name] if m.name not in ("top1", "accuracy") else []) +
                           ([method] if self.confidence is not None and method != "bootstrap" else []))
        return Verdict(self.marker, passed, value, ref, self.limit, text, detail)

    def _three_way(self, drop: float, interval: tuple[float, float, str], samples: int, discordant: float | None,
                   m: acc.Metric, ref: float, method: str) -> tuple[bool | None, str]:
        """PASS / FAIL / INCONCLUSIVE from the interval, and the message's interval part."""
        lo, hi, note = interval
        confidence = self.confidence or 0.95
        passed: bool | None = True if hi <= self.limit + 1e-12 else False if lo > self.limit + 1e-12 else None
        level = f"two-sided {confidence:.0%} interval, upper end a one-sided {(1 + confidence) / 2:.1%} bound"
        shown = f" [{lo:.4f}, {hi:.4f}] at {confidence:.0%}{note} ({level})"
        why = ""
        if passed and method == "bootstrap" and discordant is not None and discordant < MIN_DISCORDANT:
            # the bootstrap over few differing samples collapses (none: the point [0, 0]) or under-covers
            passed = None
            absolute = self.limit * abs(ref) if self.relative else self.limit
            if m.correct is not None:
                few = f"only {discordant:.0f} of {samples} samples are scored differently from fp32"
                remedy = ("; evaluate on more data" if samples and 1 / samples > absolute else
                          "; use an absolute budget (Tango's interval) or more data")
            else:
                few = f"only about {discordant:.0f} of {samples} samples carry the difference from fp32"
                remedy = "; evaluate on more data"
            why = f"; {few}: too few for the bootstrap ({MIN_DISCORDANT} needed){remedy}"
        elif passed is None:
            why = "; " + _needed(samples, lo, hi, drop, self.limit, "discordance" if method == "mcnemar" else "spread")
        compare = {True: "<=", False: ">", None: "~"}[passed]
        return passed, f"{shown} {compare} budget {self.limit:g}{why}"

    def _interval(self, model: RunnableModel, reference: RunnableModel, m: acc.Metric,
                  output: str) -> tuple[float, float, str, float | None]:
        """(low, high, what else to say, how many samples carry the difference: the discordant pairs of a
        per-sample metric, else the jackknife's effective count) of the drop of ``output``."""
        confidence = self.confidence or 0.95
        if self.method_for(m) == "mcnemar":
            ours, theirs = model.correct(m, output=output), reference.correct(m, output=output)
            b = int(np.sum(theirs & ~ours))  # fp32 right, variant wrong
            c = int(np.sum(~theirs & ours))  # fp32 wrong, variant right
            lo, hi = tango_interval(b, c, len(ours), confidence, TANGO_CONTINUITY)
            return lo, hi, (f" (Tango score interval, continuity-corrected; {b} lost vs {c} gained, exact McNemar "
                            f"p={mcnemar_exact(b, c):.3g})"), b + c
        data = model.eval_dataset
        ours, theirs = model.output(output), reference.output(output)
        labels = model._labels(data, output)

        def stat(index):  # type: ignore[no-untyped-def]
            try:
                return m.drop(m(labels[index], theirs[index]), m(labels[index], ours[index]), self.relative)
            except DatasetError:  # undefined on this resample (an AUC without one of the classes)
                return float("nan")

        found = paired_bootstrap(len(data), stat, confidence)
        differing = self._discordant(model, reference, m, output) if m.correct is not None else found.effective
        return found[0], found[1], " (BCa bootstrap)", differing

    def _discordant(self, model: RunnableModel, reference: RunnableModel, m: acc.Metric, output: str) -> int | None:
        """How many samples fp32 and the variant score differently (per-sample metrics; else ``None``)."""
        if m.correct is None:
            return None
        return int(np.sum(model.correct(m, output=output) != reference.correct(m, output=output)))


#: differing samples (per-sample metrics) or samples carrying the difference (others: the jackknife's participation
#: ratio, :func:`~pytest_tfopt.measure.stats.effective_samples`) the bootstrap needs before its interval may PASS
MIN_DISCORDANT = 30
#: pairs by which Tango's score statistic is continuity-corrected: half a pair keeps each end of the interval at
#: its one-sided level with few discordant pairs (benchmarks/CALIBRATION.md, the exact table)
TANGO_CONTINUITY = 0.5


def _needed(samples: int, lo: float, hi: float, drop: float, limit: float, what: str = "spread") -> str:
    """What would decide a straddling interval: about how many evaluation samples, at the observed spread and drop."""
    return to_decide(samples, lo, hi, drop, limit, "evaluation samples", what)[2:]


def _outputs(model: RunnableModel, output: str | None) -> list[str]:
    """The outputs a label-free budget judges: ``output`` (checked), else every output."""
    return [model.signature.output(output)] if output is not None else model.signature.output_names


def _counterpart(model: RunnableModel, reference: RunnableModel, name: str) -> str | None:
    """The reference's output compared with ``model``'s output ``name``: the same name, or the only output
    when both have one (a runtime that names it otherwise, e.g. a third-party backend)."""
    ref_names = reference.signature.output_names
    if name in ref_names:
        return name
    if len(ref_names) == 1 and len(model.signature.outputs) == 1:
        return ref_names[0]
    return None


def _worst_note(model: RunnableModel, worst: str, values: dict[str, float], fmt: str = ".4f") -> str:
    """``, output 'box' (worst; others: face 31.2, score 40.1)`` on a model with several outputs."""
    if not model.suffix(worst):
        return ""
    others = [f"{n} {v:{fmt}}" for n, v in values.items() if n != worst]
    return f", output {worst!r}" + (f" (worst of {len(values)}; others: {', '.join(others)})" if others else "")


@dataclass(frozen=True)
class MinFidelity:
    """Label-free: the variant's outputs agree with fp32's (same inputs) at least ``limit`` on ``metric``.

    For lower-is-better metrics (``kl_divergence``, ``max_abs_error``) ``limit`` is the most allowed.
    Without ``output`` every output of a model with several is judged and the worst decides.
    """

    limit: float
    metric: str = "top1_agreement"
    marker: str = "min_fidelity"
    kind: ClassVar[str] = "quality"
    output: str | None = None

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        fm = fidelity.resolve(self.metric)
        values: dict[str, float] = {}
        for name in _outputs(model, self.output):
            value = fm.fn(reference.output(_counterpart(model, reference, name) or name), model.output(name))
            model.measurements[f"fidelity_{fm.name}{model.suffix(name)}"] = value
            values[name] = value
        pick = min if fm.higher_is_better else max
        worst = pick(values, key=lambda n: values[n])
        value = values[worst]
        passed = value >= self.limit if fm.higher_is_better else value <= self.limit
        op = (">=" if passed else "<") if fm.higher_is_better else ("<=" if passed else ">")
        args = f"{self.limit:g}, metric={self.metric!r}" + (f", output={self.output!r}" if self.output else "")
        text = (
            f"min_fidelity({args}) {'holds' if passed else 'broken'}: "
            f"{about(model)}{_worst_note(model, worst, values)}: {fm.name} vs fp32 {value:.4f} {op} budget {self.limit:g}"
        )
        return Verdict(self.marker, passed, value, None, self.limit, text, self.output or "")


@dataclass(frozen=True)
class MaxOutputDiff:
    """Every output of the variant within ``atol + rtol * |ref|`` of fp32 on ``reference_backend``.

    Same inputs (``eval_dataset``); the message also gives mean absolute error, cosine
    similarity and top-1 agreement. Without ``output`` every output of a model with several is
    checked; the message names the worst one and lists the others.
    """

    atol: float = 1e-3
    rtol: float = 0.0
    reference_backend: str = "tf"
    marker: str = "max_output_diff"
    kind: ClassVar[str] = "quality"
    output: str | None = None

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        names = _outputs(model, self.output)
        missing = [n for n in names if _counterpart(model, reference, n) is None]
        if missing:
            return Verdict(self.marker, False, float("inf"), None, self.atol,
                           f"max_output_diff broken: {about(model)} has outputs {', '.join(missing)} that fp32 on "
                           f"{reference.backend} does not have ({', '.join(reference.signature.output_names)})")
        stats = {n: self._compare(model, reference, n) for n in names}
        broken = [n for n in names if stats[n][0] is not None or stats[n][1] > 0]
        worst = max(names, key=lambda n: (stats[n][0] is not None, stats[n][1] > 0, stats[n][2]))
        passed = not broken
        args = f"atol={self.atol:g}, rtol={self.rtol:g}, reference={self.reference_backend!r}"
        args += f", output={self.output!r}" if self.output else ""
        shape_error, beyond, max_diff, text = stats[worst]
        others = ""
        if len(names) > 1:
            others = f"; other outputs: {', '.join(f'{n} max {stats[n][2]:.3g}' for n in names if n != worst)}"
        where = f", output {worst!r}" if model.suffix(worst) else ""
        message = (f"max_output_diff({args}) {'holds' if passed else 'broken'}: {about(model)}{where} vs fp32 on "
                   f"{reference.backend}: {shape_error or text}{others}")
        return Verdict(self.marker, passed, float("inf") if shape_error else max_diff, None, self.atol, message,
                       self.output or "")

    def _compare(self, model: RunnableModel, reference: RunnableModel, name: str) -> tuple[Any, int, float, str]:
        """(shape error or None, outputs beyond the budget, max |diff|, description) of output ``name``."""
        ours, theirs = model.output(name), reference.output(_counterpart(model, reference, name))
        if ours.shape != theirs.shape:
            return f"outputs {ours.shape} but fp32 outputs {theirs.shape}", 1, float("inf"), ""
        diff = np.abs(ours.astype(np.float64) - theirs)
        beyond = int(np.sum(diff > self.atol + self.rtol * np.abs(theirs)))
        worst, mean = float(diff.max()), float(diff.mean())
        cos, agree = fidelity.cosine(theirs, ours), fidelity.top1_agreement(theirs, ours)
        prefix, suffix = f"parity_{reference.backend}", model.suffix(name)
        model.measurements.update({f"{prefix}_max_abs{suffix}": worst, f"{prefix}_mean_abs{suffix}": mean,
                                   f"{prefix}_cosine{suffix}": cos, f"{prefix}_top1_agreement{suffix}": agree})
        text = (f"max |diff| {worst:.3g}, mean {mean:.3g}, cosine {cos:.6f}, top-1 agreement {agree:.2%}; "
                f"{beyond} of {diff.size} outputs beyond atol + rtol*|ref|")
        return None, beyond, worst, text
