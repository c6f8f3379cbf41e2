"""Performance budgets: latency, throughput and speedup, decided outside the noise band.

A timing budget holds or breaks only when the 95 % interval of the measurement lies on one side
of it; an interval that straddles the budget makes the verdict inconclusive (``passed`` None).
Latencies are ms, throughput samples/s. A broken timing verdict carries, under its first line, the per-op
profiles of the variant and its reference side by side (:func:`pytest_tfopt.explain.compare`), taken after the
judged measurement on runners of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..errors import TfoptError, first_line
from ..explain import compare
from ..measure.latency import ROUND_TIME_S, LatencyStats, interleaved
from ..runnable import RunnableModel, load_key
from .verdict import INTERVAL_LEVEL, Verdict, about, about_row, deciding_count, op, to_decide, word


def _profiled(verdict: Verdict, model: RunnableModel, reference: RunnableModel, batch_size: int = 1) -> Verdict:
    """``verdict`` with the per-op profiles of ``model`` and ``reference`` side by side under its message when it
    is broken (else as is: a gate that holds costs no profile). The profiles run after the judged measurement, on
    runners of their own; a backend without a profiler says so in one line."""
    if verdict.passed is not False:
        return verdict
    try:
        text = compare(model.profile(batch_size), reference.profile(batch_size))
    except TfoptError as exc:
        text = f"(no per-op profile: {first_line(exc)})"
    return replace(verdict, message=f"{verdict.message}\n{text}")


def decide(point: bool, surely_holds: bool, surely_broken: bool) -> bool | None:
    """True/False when the 95 % interval is on one side of the budget; None (inconclusive) when it straddles it."""
    if surely_holds:
        return True
    if surely_broken:
        return False
    return None


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
    kind: ClassVar[str] = "perf"
    mode: str = "invoke"
    concurrency: int = 1
    preprocess: Any = None
    postprocess: Any = None
    rate: float | None = None

    def _measure(self, model: RunnableModel, settings: Any = None) -> tuple[LatencyStats, Any]:
        if self.concurrency > 1 or self.rate is not None:
            load = model.under_load(self.concurrency, self.batch_size, self.mode, settings,
                                    preprocess=self.preprocess, postprocess=self.postprocess, rate=self.rate)
            return load.latency, load
        return model.latency(self.batch_size, settings, mode=self.mode, preprocess=self.preprocess,
                             postprocess=self.postprocess), None

    def _undecided(self, stats: LatencyStats) -> bool:
        lo, hi = stats.interval(self.percentile)
        return hi > self.limit_ms >= lo

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        stats, load = self._measure(model)
        if self._undecided(stats):
            # adaptive: time again with enough runs to bound the percentile (p99 needs 368), or four times as many,
            # within the measurement's time cap; still undecided stays INCONCLUSIVE, never PASS
            s = model.latency_settings
            runs = min(s.max_runs, max(stats.runs_needed(self.percentile), 4 * stats.n))
            stats, load = self._measure(model, replace(s, min_runs=runs))
        value = stats.percentile(self.percentile)
        ref_stats, ref_load = self._measure(reference)
        ref = ref_stats.percentile(self.percentile)
        under = f" under load: {load.describe()}" if load is not None else ""
        ref_text = f"fp32 {ref:.3f} ms" + (f", {ref_load.throughput:.0f} samples/s" if ref_load is not None else "")
        need = stats.runs_needed(self.percentile)
        if need:
            under += f"; {stats.n} timed runs cannot bound p{self.percentile} from above: it needs at least {need}"
        verdict = self.judge(about(model), value, stats.interval(self.percentile), f"{under} ({ref_text})", ref,
                             runs=stats.n)
        return _profiled(verdict, model, reference, self.batch_size)

    def check_row(self, row: dict[str, Any]) -> Verdict | str:
        """The verdict from the row's recorded percentile (a point value: no interval), or why it cannot be given."""
        e2e = "_e2e" if self.mode == "end_to_end" else ""
        streams = self.concurrency
        if streams > 1 or self.rate is not None:
            where = load_key(streams, self.batch_size, self.mode, self.rate)
        else:
            where = f"latency_b{self.batch_size}{e2e}"
        value = row.get(f"{where}_p{self.percentile}_ms")
        if value is None:
            return (f"{self.marker} skipped where rows have no batch-{self.batch_size} p{self.percentile} latency"
                    f"{' end to end' if e2e else ''}{f' under {streams} streams' if streams > 1 else ''}")
        return self.judge(about_row(row), value)

    def judge(self, who: str, value: float, interval: tuple[float, float] | None = None, context: str = "",
              ref: float | None = None, runs: int = 0) -> Verdict:
        """The verdict on a ``value`` ms percentile; with its 95 % ``interval`` it may be inconclusive.

        ``context``: what the message adds after the value (load, fp32's figures). A point value
        without an interval (a saved row's) is decided as is; its message names only the limit,
        percentile and batch size.
        """
        args = f"{self.limit_ms:g}, percentile={self.percentile}"
        args += f", batch_size={self.batch_size}" if self.batch_size != 1 else ""
        if interval is None:
            passed: bool | None = value <= self.limit_ms
            shown = ""
        else:
            lo, hi = interval
            passed = decide(value <= self.limit_ms, hi <= self.limit_ms, lo > self.limit_ms)
            shown = f" [{lo:.3f}, {hi:.3f}]"
            args += f", mode={self.mode!r}" if self.mode != "invoke" else ""
            args += f", concurrency={self.concurrency}" if self.concurrency != 1 else ""
            args += f", rate={self.rate:g}" if self.rate is not None else ""
        text = (
            f"max_latency_ms({args}) {word(passed)}: {who}: p{self.percentile} {value:.3f} ms{shown}{context} "
            f"{op(passed, '<=', '>')} budget {self.limit_ms:g} ms{INTERVAL_LEVEL if interval is not None else ''}"
        )
        if passed is None and interval is not None and runs and interval[1] != float("inf"):
            text += to_decide(runs, interval[0], interval[1], value, self.limit_ms, "timed runs")
        detail = ", ".join(([self.mode] if self.mode != "invoke" else []) +
                           ([f"concurrency={self.concurrency}"] if self.concurrency != 1 else []) +
                           ([f"rate={self.rate:g}/s"] if self.rate is not None else []))
        return Verdict(self.marker, passed, value, ref, self.limit_ms, text, detail)


@dataclass(frozen=True)
class MinThroughput:
    """At least ``limit`` samples per second with batches of ``batch_size`` (at the median latency)."""

    limit: float
    batch_size: int = 1
    marker: str = "min_throughput"
    kind: ClassVar[str] = "perf"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        stats = model.latency(self.batch_size)
        value = stats.throughput
        lo_ms, hi_ms = stats.interval(50)
        low, high = self.batch_size / (hi_ms / 1000), self.batch_size / (max(lo_ms, 1e-9) / 1000)
        ref = reference.latency(self.batch_size).throughput
        passed = decide(value >= self.limit, low >= self.limit, high < self.limit)
        text = (
            f"min_throughput({self.limit:g}, batch_size={self.batch_size}) {word(passed)}: {about(model)}: "
            f"{value:.0f} samples/s [{low:.0f}, {high:.0f}] (fp32 {ref:.0f}) {op(passed, '>=', '<')} budget {self.limit:g}"
            f"{INTERVAL_LEVEL}" + (to_decide(stats.n, low, high, value, self.limit, "timed runs") if passed is None else "")
        )
        return _profiled(Verdict(self.marker, passed, value, ref, self.limit, text), model, reference, self.batch_size)


@dataclass(frozen=True)
class MinSpeedup:
    """``reference`` time / variant time, measured interleaved (A B A B ...) in one run, at least ``ratio``.

    Decided on the ratio's 95 % interval: robust where absolute millisecond budgets flap.
    """

    ratio: float
    reference_variant: str = "fp32"
    batch_size: int = 1
    marker: str = "min_speedup"
    kind: ClassVar[str] = "perf"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        x = model._latency_input(self.batch_size)
        ours, theirs = model.runner.prepare(x), reference.runner.prepare(x)
        s = interleaved(ours, theirs)
        passed = decide(s.ratio >= self.ratio, s.low >= self.ratio, s.high < self.ratio)
        needed = deciding_count(s.rounds, s.low, s.high, s.ratio, self.ratio) if passed is None else None
        if needed is not None:  # adaptive, as latency: more rounds within the time cap; undecided stays INCONCLUSIVE
            cap = int(model.latency_settings.max_time_s / (2 * ROUND_TIME_S))
            rounds = int(min(cap, max(needed, 4 * s.rounds)))
            if rounds > s.rounds:
                s = interleaved(ours, theirs, rounds=rounds)
                passed = decide(s.ratio >= self.ratio, s.low >= self.ratio, s.high < self.ratio)
        model.measurements[f"speedup_vs_{reference.variant}"] = s.ratio
        text = (
            f"min_speedup({self.ratio:g}, reference={self.reference_variant!r}) {word(passed)}: {about(model)}: "
            f"{s.ratio:.2f}x [{s.low:.2f}, {s.high:.2f}] over {reference.variant} ({s.reference_ms:.3f} ms -> "
            f"{s.variant_ms:.3f} ms, {s.rounds} interleaved rounds) {op(passed, '>=', '<')} budget {self.ratio:g}x"
            f"{INTERVAL_LEVEL}" + (to_decide(s.rounds, s.low, s.high, s.ratio, self.ratio, "interleaved rounds")
                                   if passed is None else "")
        )
        verdict = Verdict(self.marker, passed, s.ratio, s.reference_ms, self.ratio, text)
        return _profiled(verdict, model, reference, self.batch_size)
