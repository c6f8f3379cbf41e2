"""Budgets: the thresholds a variant must meet, and their verdicts.

Each budget comes from one marker (``max_accuracy_drop``, ``max_latency_ms``,
``max_size_kb``, ``min_compression_ratio``, ``min_sparsity``, ``max_unique_weights``;
``min_accuracy_drop`` is an alias of ``max_accuracy_drop``). :func:`parse_marker` validates the arguments;
``Budget.check(model, reference)`` measures and returns a :class:`Verdict`.
Sizes are KB = 1024 bytes; latencies are ms; accuracy drops are in the metric's
units (fractions for top-1: 0.01 = 1 point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UsageError
from .measure import accuracy as acc
from .measure import fidelity
from .measure.latency import MODES, LatencyStats
from .measure.stats import mcnemar_exact, paired_bootstrap, tango_interval
from .runnable import RunnableModel

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one budget on one (variant, backend)."""

    budget: str
    passed: bool | None  # None: inconclusive (the measurement's interval straddles the budget)
    measured: float
    reference: float | None
    limit: float
    message: str
    #: how it was measured when not the default, for tables: "end_to_end", "concurrency=4", "mcnemar"
    detail: str = ""


def _show(value: Any) -> str:
    """``repr(value)``, bounded (a 5000-digit int has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any, what: str, *, positive: bool = True, allow_zero: bool = False) -> float:
    try:
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite:
        raise UsageError(f"{what} must be a finite number, got {_show(value)}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise UsageError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {_show(value)}")
    return float(value)


def _head(model: RunnableModel) -> str:
    return f"{model.variant} on {model.backend}"


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
        drop = m.drop(ref, value, self.relative)
        unit = " (relative)" if self.relative else ""
        args = f"{self.limit:g}{', relative=True' if self.relative else ''}"
        interval, note = "", ""
        decisive = drop
        if self.confidence is not None:
            lo, hi, detail = self._interval(model, reference, m)
            decisive = hi
            interval = f" [{lo:.4f}, {hi:.4f}] at {self.confidence:.0%}{detail}"
            args += f", confidence={self.confidence:g}"
            if self.method != "bootstrap":
                args += f", method={self.method!r}"
            n = len(model.eval_dataset) if model.eval_dataset is not None else 0
            if m.correct is not None and not self.relative and n and 1 / n > self.limit:
                note = f" (warning: {n} samples cannot resolve a budget below {1 / n:.4f}: evaluate on more data)"
        passed = decisive <= self.limit + 1e-12
        text = (
            f"{self.marker}({args}) {'holds' if passed else 'broken'}: {_head(model)}: {m.name} {value:.4f} vs fp32 "
            f"{ref:.4f}, drop {drop:.4f}{unit}{interval} {'<=' if passed else '>'} budget {self.limit:g}{note}"
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
            f"{_head(model)}: {fm.name} vs fp32 {value:.4f} {op} budget {self.limit:g}"
        )
        return Verdict(self.marker, passed, value, None, self.limit, text)


@dataclass(frozen=True)
class MaxLatency:
    """The ``percentile`` latency of a ``batch_size`` batch must be at most ``limit_ms``.

    ``mode``: ``"invoke"`` (the model only) or ``"end_to_end"`` (input copy/quantization, invoke,
    output read/dequantization, between ``preprocess`` and ``postprocess`` when given).
    ``concurrency`` > 1: per-request latency while that many closed-loop streams run at once, each on
    its own runner; the message reports the throughput reached with it.
    """

    limit_ms: float
    percentile: int = 50
    batch_size: int = 1
    marker: str = "max_latency_ms"
    mode: str = "invoke"
    concurrency: int = 1
    preprocess: Any = None
    postprocess: Any = None

    def _measure(self, model: RunnableModel) -> tuple[LatencyStats, Any]:
        if self.concurrency > 1:
            load = model.load(self.concurrency, self.batch_size, self.mode, preprocess=self.preprocess,
                              postprocess=self.postprocess)
            return load.latency, load
        return model.latency(self.batch_size, mode=self.mode, preprocess=self.preprocess,
                             postprocess=self.postprocess), None

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        stats, load = self._measure(model)
        value = stats.percentile(self.percentile)
        lo, hi = stats.interval(self.percentile)
        ref_stats, ref_load = self._measure(reference)
        ref = ref_stats.percentile(self.percentile)
        passed = _decide(value <= self.limit_ms, hi <= self.limit_ms, lo > self.limit_ms)
        args = f"{self.limit_ms:g}, percentile={self.percentile}"
        args += f", batch_size={self.batch_size}" if self.batch_size != 1 else ""
        args += f", mode={self.mode!r}" if self.mode != "invoke" else ""
        args += f", concurrency={self.concurrency}" if self.concurrency != 1 else ""
        under = f" under load: {load.describe()}" if load is not None else ""
        ref_text = f"fp32 {ref:.3f} ms" + (f", {ref_load.throughput:.0f} samples/s" if ref_load is not None else "")
        text = (
            f"max_latency_ms({args}) {_word(passed)}: "
            f"{_head(model)}: p{self.percentile} {value:.3f} ms [{lo:.3f}, {hi:.3f}]{under} ({ref_text}) "
            f"{_op(passed, '<=', '>')} budget {self.limit_ms:g} ms"
        )
        detail = ", ".join(([self.mode] if self.mode != "invoke" else []) +
                           ([f"concurrency={self.concurrency}"] if self.concurrency != 1 else []))
        return Verdict(self.marker, passed, value, ref, self.limit_ms, text, detail)


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
                           f"max_output_diff broken: {_head(model)} outputs {ours.shape} but fp32 on "
                           f"{reference.backend} outputs {theirs.shape}")
        diff = np.abs(ours.astype(np.float64) - theirs)
        beyond = int(np.sum(diff > self.atol + self.rtol * np.abs(theirs)))
        worst, mean = float(diff.max()), float(diff.mean())
        cos, agree = fidelity.cosine(theirs, ours), fidelity.top1_agreement(theirs, ours)
        model.measurements.update({f"parity_{reference.backend}_max_abs": worst, f"parity_{reference.backend}_mean_abs": mean,
                                   f"parity_{reference.backend}_cosine": cos, f"parity_{reference.backend}_top1_agreement": agree})
        passed = beyond == 0
        text = (
            f"max_output_diff(atol={self.atol:g}, rtol={self.rtol:g}, reference={self.reference_backend!r}) "
            f"{'holds' if passed else 'broken'}: {_head(model)} vs fp32 on {reference.backend}: max |diff| {worst:.3g}, "
            f"mean {mean:.3g}, cosine {cos:.6f}, top-1 agreement {agree:.2%}; "
            f"{beyond} of {diff.size} outputs beyond atol + rtol*|ref|"
        )
        return Verdict(self.marker, passed, worst, None, self.atol, text)


@dataclass(frozen=True)
class MaxMemory:
    """Peak resident memory loading + running the variant adds (fresh process), at most ``limit_mb`` MiB.

    The message adds the runtime's own tensor account where it gives one (TFLite: activation
    tensors, an upper bound on the interpreter's arena, and constant weight tensors).
    """

    limit_mb: float
    marker: str = "max_memory_mb"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        stats = model.memory()
        value = stats.peak_mb
        ref = reference.memory().peak_mb
        passed = value <= self.limit_mb
        tensors = ""
        if stats.activations_mb is not None:
            tensors = (f"; {model.variant}'s interpreter tensors: activations {stats.activations_mb:.3f} MiB (arena upper bound), "
                       f"weights {stats.weights_mb or 0:.3f} MiB")
        text = (
            f"max_memory_mb({self.limit_mb:g}) {'holds' if passed else 'broken'}: {_head(model)}: peak "
            f"{value:.2f} MiB added by load + run (fp32 {ref:.2f} MiB{tensors}) {'<=' if passed else '>'} "
            f"budget {self.limit_mb:g} MiB"
        )
        return Verdict(self.marker, passed, value, ref, self.limit_mb, text)


def _decide(point: bool, surely_holds: bool, surely_broken: bool) -> bool | None:
    """True/False when the 95 % interval is on one side of the budget; None (inconclusive) when it straddles it."""
    if surely_holds:
        return True
    if surely_broken:
        return False
    return None


def _word(passed: bool | None) -> str:
    return {True: "holds", False: "broken", None: "inconclusive"}[passed]


def _op(passed: bool | None, good: str, bad: str) -> str:
    return {True: good, False: bad, None: "~"}[passed]


@dataclass(frozen=True)
class MinThroughput:
    """At least ``limit`` samples per second with batches of ``batch_size`` (at the median latency)."""

    limit: float
    batch_size: int = 1
    marker: str = "min_throughput"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        stats = model.latency(self.batch_size)
        value = stats.throughput
        lo_ms, hi_ms = stats.interval(50)
        low, high = self.batch_size / (hi_ms / 1000), self.batch_size / (max(lo_ms, 1e-9) / 1000)
        ref = reference.latency(self.batch_size).throughput
        passed = _decide(value >= self.limit, low >= self.limit, high < self.limit)
        text = (
            f"min_throughput({self.limit:g}, batch_size={self.batch_size}) {_word(passed)}: {_head(model)}: "
            f"{value:.0f} samples/s [{low:.0f}, {high:.0f}] (fp32 {ref:.0f}) {_op(passed, '>=', '<')} budget {self.limit:g}"
        )
        return Verdict(self.marker, passed, value, ref, self.limit, text)


@dataclass(frozen=True)
class MinSpeedup:
    """``reference`` time / variant time, measured interleaved (A B A B ...) in one run, at least ``ratio``.

    Decided on the ratio's 95 % interval: robust where absolute millisecond budgets flap.
    """

    ratio: float
    reference_variant: str = "fp32"
    batch_size: int = 1
    marker: str = "min_speedup"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        from .measure.latency import interleaved

        x = model._latency_input(self.batch_size)
        s = interleaved(model.runner.prepare(x), reference.runner.prepare(x))
        model.measurements[f"speedup_vs_{reference.variant}"] = s.ratio
        passed = _decide(s.ratio >= self.ratio, s.low >= self.ratio, s.high < self.ratio)
        text = (
            f"min_speedup({self.ratio:g}, reference={self.reference_variant!r}) {_word(passed)}: {_head(model)}: "
            f"{s.ratio:.2f}x [{s.low:.2f}, {s.high:.2f}] over {reference.variant} ({s.reference_ms:.3f} ms -> "
            f"{s.variant_ms:.3f} ms, {s.rounds} interleaved rounds) {_op(passed, '>=', '<')} budget {self.ratio:g}x"
        )
        return Verdict(self.marker, passed, s.ratio, s.reference_ms, self.ratio, text)


@dataclass(frozen=True)
class MaxSize:
    """The artifact may be at most ``limit_kb`` KB (1 KB = 1024 bytes)."""

    limit_kb: float
    marker: str = "max_size_kb"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        value = model.size_bytes / 1024
        ref = reference.size_bytes / 1024
        passed = value <= self.limit_kb
        text = (
            f"max_size_kb({self.limit_kb:g}) {'holds' if passed else 'broken'}: {_head(model)}: "
            f"{value:.1f} KB (fp32 {ref:.1f} KB) {'<=' if passed else '>'} budget {self.limit_kb:g} KB"
        )
        return Verdict(self.marker, passed, value, ref, self.limit_kb, text)


@dataclass(frozen=True)
class MinCompression:
    """fp32 bytes / variant bytes must be at least ``ratio`` (gzip bytes when ``compressed``)."""

    ratio: float
    compressed: bool = False
    marker: str = "min_compression_ratio"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        if self.compressed:
            ours, theirs, unit = model.gzip_size_bytes, reference.gzip_size_bytes, "gzip B"
        else:
            ours, theirs, unit = model.size_bytes, reference.size_bytes, "B"
        value = theirs / ours
        passed = value >= self.ratio
        flag = ", compressed=True" if self.compressed else ""
        text = (
            f"min_compression_ratio({self.ratio:g}{flag}) {'holds' if passed else 'broken'}: {_head(model)}: "
            f"ratio {value:.2f}x (fp32 {theirs} {unit} / {model.variant} {ours} {unit}) "
            f"{'>=' if passed else '<'} budget {self.ratio:g}x"
        )
        return Verdict(self.marker, passed, value, float(theirs), self.ratio, text)


def _stage_stats(model: RunnableModel, key: str) -> dict[str, float]:
    """Per-layer statistics ``key`` recorded by the variant's transforms (merged over stages)."""
    out: dict[str, float] = {}
    for stage in model.artifact.metadata.get("stages", []):
        out.update(stage.get(key, {}))
    return out


@dataclass(frozen=True)
class MinSparsity:
    """Every layer the pruning touched must have at least ``limit`` zero weights (fraction)."""

    limit: float
    marker: str = "min_sparsity"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        per_layer = _stage_stats(model, "sparsity")
        if not per_layer:
            return Verdict(self.marker, False, 0.0, None, self.limit,
                           f"min_sparsity({self.limit:g}) broken: {_head(model)} records no sparsity: "
                           "only pruned(...) variants do (e.g. pruned(sparsity=0.8)+int8)")
        layer, value = min(per_layer.items(), key=lambda kv: kv[1])
        passed = value >= self.limit - 1e-9
        text = (
            f"min_sparsity({self.limit:g}) {'holds' if passed else 'broken'}: {_head(model)}: "
            f"lowest layer sparsity {value:.3f} ({layer}) {'>=' if passed else '<'} budget {self.limit:g}"
        )
        return Verdict(self.marker, passed, value, None, self.limit, text)


@dataclass(frozen=True)
class MaxUniqueWeights:
    """Every layer the clustering touched may hold at most ``limit`` distinct weight values."""

    limit: int
    marker: str = "max_unique_weights"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        per_layer = _stage_stats(model, "unique_weights")
        if not per_layer:
            return Verdict(self.marker, False, 0.0, None, float(self.limit),
                           f"max_unique_weights({self.limit}) broken: {_head(model)} records no weight clusters: "
                           "only clustered(...) variants do (e.g. clustered(clusters=16)+int8)")
        layer, value = max(per_layer.items(), key=lambda kv: kv[1])
        passed = value <= self.limit
        text = (
            f"max_unique_weights({self.limit}) {'holds' if passed else 'broken'}: {_head(model)}: "
            f"most unique weights {value} ({layer}) {'<=' if passed else '>'} budget {self.limit}"
        )
        return Verdict(self.marker, passed, float(value), None, float(self.limit), text)


METHODS = ("bootstrap", "mcnemar")


def _accuracy(marker: str, limit: Any = None, relative: bool = False, metric: Any = None,
              confidence: Any = None, method: Any = None, top_k: Any = None,
              higher_is_better: Any = None) -> AccuracyDrop:
    if limit is None:
        raise UsageError(f"{marker} needs the budget, e.g. @pytest.mark.{marker}(0.01)")
    _number(limit, f"{marker} budget", allow_zero=True)
    if not isinstance(relative, bool):
        raise UsageError(f"{marker}(relative=...) must be True or False, got {_show(relative)}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UsageError(f"{marker}(top_k={_show(top_k)}) must be a whole number >= 1, e.g. top_k=5")
        if metric is not None:
            raise UsageError(f"{marker}: give metric=... or top_k=..., not both (top_k={top_k} means metric=\"top{top_k}\")")
        metric = f"top{top_k}"
    if higher_is_better is not None and not isinstance(higher_is_better, bool):
        raise UsageError(f"{marker}(higher_is_better=...) must be True or False, got {_show(higher_is_better)}")
    if method is not None and method not in METHODS:
        raise UsageError(f"{marker}(method={_show(method)}): use one of {', '.join(map(repr, METHODS))}")
    if confidence is not None:
        value = _number(confidence, f"{marker}(confidence=...)")
        if not 0.5 <= value < 1:
            raise UsageError(f"{marker}(confidence={_show(confidence)}) must be in [0.5, 1), e.g. 0.95")
    elif method is not None:
        confidence = 0.95  # a method names an interval: 95 % unless told
    m = acc.resolve(metric, higher_is_better)
    if method == "mcnemar":
        if m.correct is None:
            raise UsageError(f"{marker}(method='mcnemar') needs a metric that scores each sample right or wrong "
                             f"(top1, top<k>), not {m.name!r}; use method='bootstrap'")
        if relative:
            raise UsageError(f"{marker}(method='mcnemar') bounds the absolute drop: drop relative=True or use "
                             "method='bootstrap'")
    return AccuracyDrop(float(limit), relative, metric, marker, None if confidence is None else float(confidence),
                        method or "bootstrap", higher_is_better)


def _fidelity(limit: Any = None, metric: Any = "top1_agreement") -> MinFidelity:
    if limit is None:
        raise UsageError("min_fidelity needs the threshold, e.g. @pytest.mark.min_fidelity(0.99, metric=\"top1_agreement\")")
    if not isinstance(metric, str):
        raise UsageError(f"min_fidelity(metric=...) must be a name, got {_show(metric)}")
    fidelity.resolve(metric)
    return MinFidelity(_number(limit, "min_fidelity threshold", positive=False), metric)


def _latency(limit_ms: Any = None, percentile: Any = 50, batch_size: Any = 1, mode: Any = "invoke",
             concurrency: Any = 1, preprocess: Any = None, postprocess: Any = None) -> MaxLatency:
    if limit_ms is None:
        raise UsageError("max_latency_ms needs the budget in ms, e.g. @pytest.mark.max_latency_ms(2.0)")
    _number(limit_ms, "max_latency_ms budget")
    if isinstance(percentile, bool) or not isinstance(percentile, int) or percentile not in PERCENTILES:
        raise UsageError(f"max_latency_ms(percentile={_show(percentile)}) must be one of {', '.join(map(str, PERCENTILES))}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"max_latency_ms(batch_size={_show(batch_size)}) must be an integer >= 1")
    if mode not in MODES:
        raise UsageError(f"max_latency_ms(mode={_show(mode)}) must be one of {', '.join(map(repr, MODES))}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"max_latency_ms(concurrency={_show(concurrency)}) must be a whole number of streams >= 1, "
                         "e.g. concurrency=4")
    for name, fn in (("preprocess", preprocess), ("postprocess", postprocess)):
        if fn is not None and not callable(fn):
            raise UsageError(f"max_latency_ms({name}=...) must be a callable(batch) -> batch, got {_show(fn)}")
        if fn is not None and mode != "end_to_end":
            raise UsageError(f"max_latency_ms({name}=...) is timed only end to end: add mode=\"end_to_end\"")
    return MaxLatency(float(limit_ms), int(percentile), batch_size, "max_latency_ms", mode, concurrency,
                      preprocess, postprocess)


def _throughput(limit: Any = None, batch_size: Any = 1) -> MinThroughput:
    if limit is None:
        raise UsageError("min_throughput needs samples/s, e.g. @pytest.mark.min_throughput(200, batch_size=32)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"min_throughput(batch_size={_show(batch_size)}) must be an integer >= 1")
    return MinThroughput(_number(limit, "min_throughput"), batch_size)


def _speedup(ratio: Any = None, reference: Any = "fp32", batch_size: Any = 1) -> MinSpeedup:
    if ratio is None:
        raise UsageError("min_speedup needs the ratio, e.g. @pytest.mark.min_speedup(1.5, reference=\"fp32\")")
    if not isinstance(reference, str) or not reference:
        raise UsageError(f"min_speedup(reference=...) must be a variant name, got {_show(reference)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"min_speedup(batch_size={_show(batch_size)}) must be an integer >= 1")
    return MinSpeedup(_number(ratio, "min_speedup"), reference, batch_size)


def _output_diff(atol: Any = 1e-3, rtol: Any = 0.0, reference: Any = "tf") -> MaxOutputDiff:
    value_atol = _number(atol, "max_output_diff(atol=...)", allow_zero=True)
    value_rtol = _number(rtol, "max_output_diff(rtol=...)", allow_zero=True)
    if not isinstance(reference, str) or not reference:
        raise UsageError(f"max_output_diff(reference=...) must be a backend name, got {_show(reference)}")
    return MaxOutputDiff(value_atol, value_rtol, reference)


def _memory(limit_mb: Any = None) -> MaxMemory:
    if limit_mb is None:
        raise UsageError("max_memory_mb needs the budget in MiB, e.g. @pytest.mark.max_memory_mb(64)")
    return MaxMemory(_number(limit_mb, "max_memory_mb budget"))


def _size(limit_kb: Any = None) -> MaxSize:
    if limit_kb is None:
        raise UsageError("max_size_kb needs the budget in KB, e.g. @pytest.mark.max_size_kb(150)")
    return MaxSize(_number(limit_kb, "max_size_kb budget"))


def _ratio(ratio: Any = None, compressed: Any = False) -> MinCompression:
    if ratio is None:
        raise UsageError("min_compression_ratio needs the ratio, e.g. @pytest.mark.min_compression_ratio(2.0)")
    if not isinstance(compressed, bool):
        raise UsageError(f"min_compression_ratio(compressed=...) must be True or False, got {_show(compressed)}")
    return MinCompression(_number(ratio, "min_compression_ratio"), compressed)


def _sparsity(limit: Any = None) -> MinSparsity:
    if limit is None:
        raise UsageError("min_sparsity needs the fraction of zero weights, e.g. @pytest.mark.min_sparsity(0.5)")
    value = _number(limit, "min_sparsity", allow_zero=True)
    if value > 1:
        raise UsageError(f"min_sparsity({_show(limit)}) is a fraction of weights: use a value in [0, 1]")
    return MinSparsity(value)


def _unique(limit: Any = None) -> MaxUniqueWeights:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"max_unique_weights needs a whole number >= 1, got {_show(limit)}; e.g. max_unique_weights(16)")
    return MaxUniqueWeights(limit)


PARSERS = {
    "max_accuracy_drop": lambda *a, **k: _accuracy("max_accuracy_drop", *a, **k),
    "min_accuracy_drop": lambda *a, **k: _accuracy("min_accuracy_drop", *a, **k),
    "max_latency_ms": _latency,
    "min_throughput": _throughput,
    "max_output_diff": _output_diff,
    "max_memory_mb": _memory,
    "min_speedup": _speedup,
    "max_size_kb": _size,
    "min_compression_ratio": _ratio,
    "min_sparsity": _sparsity,
    "min_fidelity": _fidelity,
    "max_unique_weights": _unique,
}

MARKER_DOCS = {
    "max_accuracy_drop": "max_accuracy_drop(drop, relative=False, metric=None, confidence=None, method='bootstrap', top_k=None, higher_is_better=None): the metric (top1 default, top<k>, auc, mae, rmse or a callable) may be at most `drop` worse than fp32 on eval_dataset; with confidence, the upper bound of the paired interval (method 'bootstrap' or 'mcnemar') must be.",
    "min_accuracy_drop": "min_accuracy_drop(drop, relative=False, metric=None, confidence=None, method='bootstrap', top_k=None, higher_is_better=None): alias of max_accuracy_drop (same meaning).",
    "min_fidelity": "min_fidelity(threshold, metric='top1_agreement'): label-free agreement with fp32's outputs on eval_dataset (top1_agreement, cosine, snr_db: at least; kl_divergence, max_abs_error: at most).",
    "max_latency_ms": "max_latency_ms(ms, percentile=50, batch_size=1, mode='invoke', concurrency=1, preprocess=None, postprocess=None): the variant's latency percentile must be at most `ms` (inconclusive when its 95% interval straddles `ms`); mode 'invoke' or 'end_to_end'; concurrency=N: per-request latency with N concurrent streams, throughput reported.",
    "max_output_diff": "max_output_diff(atol=1e-3, rtol=0, reference='tf'): every output within atol + rtol*|ref| of fp32 on the reference backend (same eval_dataset inputs).",
    "max_memory_mb": "max_memory_mb(mib): peak resident memory a fresh load + one run of the variant adds (Linux); reports the interpreter's tensor memory too where the runtime gives it.",
    "min_throughput": "min_throughput(samples_per_s, batch_size=1): at least this many samples/s at the median latency.",
    "min_speedup": "min_speedup(ratio, reference='fp32', batch_size=1): reference time / variant time, measured interleaved, at least `ratio` (decided on its 95% interval).",
    "max_size_kb": "max_size_kb(kb): the variant's artifact must be at most `kb` KB (1 KB = 1024 bytes).",
    "min_compression_ratio": "min_compression_ratio(ratio, compressed=False): fp32 bytes / variant bytes (gzip bytes if compressed) must be at least `ratio`.",
    "min_sparsity": "min_sparsity(fraction): every layer a pruned(...) stage touched has at least this fraction of zero weights.",
    "max_unique_weights": "max_unique_weights(n): every layer a clustered(...) stage touched has at most n distinct weight values.",
}


def parse_marker(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The budget for marker ``name`` with ``args``/``kwargs``; a :class:`UsageError` when they are bad."""
    try:
        return PARSERS[name](*args, **kwargs)
    except TypeError as exc:
        raise UsageError(f"bad arguments for {name}: {exc}; expected {MARKER_DOCS[name].split(':')[0]}") from None


# ---- change thresholds against a baseline ---------------------------------------------
CHANGE_METRICS = {
    # name: (higher is better, unit and format, how to measure)
    "accuracy": (True, ("", ".4f"), lambda m: m.evaluate()),
    "size": (False, (" B", ".0f"), lambda m: float(m.size_bytes)),
    "gzip_size": (False, (" B", ".0f"), lambda m: float(m.gzip_size_bytes)),
    "latency_p50": (False, (" ms", ".3f"), lambda m: m.latency(1).p50_ms),
    "latency_p95": (False, (" ms", ".3f"), lambda m: m.latency(1).p95_ms),
}


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
        return float(CHANGE_METRICS[self.metric][2](model))

    def check(self, model: RunnableModel, baseline_value: float, value: float | None = None) -> Verdict:
        higher, (unit, fmt), _ = CHANGE_METRICS[self.metric]
        value = self.measure(model) if value is None else value
        worse = baseline_value - value if higher else value - baseline_value
        amount = worse / abs(baseline_value) if self.relative and baseline_value else worse
        passed = amount <= self.allowed + 1e-12
        delta = value - baseline_value
        shown = f"{delta / baseline_value:+.1%}" if self.relative and baseline_value else f"{delta:+{fmt}}{unit}"
        text = (
            f"{self.metric} = {self.spec!r} {'holds' if passed else 'broken'}: {_head(model)}: "
            f"{value:{fmt}}{unit} vs baseline {baseline_value:{fmt}}{unit} ({shown}) "
            f"{'within' if passed else 'beyond'} the allowed change {self.spec}"
        )
        return Verdict(self.marker, passed, value, baseline_value, self.allowed, text)


def parse_change(metric: str, spec: Any) -> ChangeBudget:
    """A :class:`ChangeBudget` from ``"+10%"``, ``"-0.005"``, ``"+0%"``; usage errors say how to write it."""
    if metric not in CHANGE_METRICS:
        raise UsageError(f"unknown change metric {_show(metric)}: use one of {', '.join(CHANGE_METRICS)}")
    higher = CHANGE_METRICS[metric][0]
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
        raise UsageError(f"{metric} = {_show(spec)} is not a change threshold: write e.g. {example}") from None
    if not math.isfinite(number):
        raise UsageError(f"{metric} = {_show(spec)} must be finite: write e.g. {example}")
    sign = body[:1]
    if sign in "+-" and sign != worse_sign and number != 0:
        raise UsageError(
            f"{metric} = {_show(spec)}: a change threshold says how much worse it may get, and worse is "
            f"{'lower' if higher else 'higher'} for {metric}: write e.g. {example}"
        )
    allowed = abs(number) / 100 if relative else abs(number)
    return ChangeBudget(metric, allowed, relative, text)
