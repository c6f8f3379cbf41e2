"""Latency: warm-up, then timed invocations until a minimum time and count.

Two modes of what one timed call covers (:data:`MODES`):

- ``invoke``: the batch is loaded into the runtime once; each call runs the model only.
- ``end_to_end``: each call copies (and quantizes) the batch in, runs the model and reads (and
  dequantizes) the outputs: ``runner.predict(x)``, between the user's own ``preprocess`` and
  ``postprocess`` when given.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from .stats import effective_sample_size, quantile_ranks_dependent, samples_for_upper_bound

PERCENTILES = (50, 90, 95, 99)
BOOTSTRAP = 200
MODES = ("invoke", "end_to_end")


def request(runner: Any, x: np.ndarray, mode: str = "invoke", preprocess: Callable[[Any], Any] | None = None,
            postprocess: Callable[[Any], Any] | None = None) -> Callable[[], object]:
    """One request of ``mode`` on ``runner`` for the batch ``x``, as a callable to time.

    ``invoke`` loads ``x`` now (``runner.prepare``) and returns the invoke-only callable;
    ``end_to_end`` returns ``postprocess(runner.predict(preprocess(x)))`` (identity when not given).
    """
    if mode == "invoke":
        if preprocess is not None or postprocess is not None:
            raise UsageError("preprocess/postprocess are timed only in mode='end_to_end'")
        return runner.prepare(x)
    if mode != "end_to_end":
        raise UsageError(f"latency mode {mode!r}: use one of {', '.join(MODES)}")
    batch = len(x)

    def end_to_end() -> object:
        inputs = preprocess(x) if preprocess is not None else x
        out = runner.predict(np.asarray(inputs), batch)
        return postprocess(out) if postprocess is not None else out

    return end_to_end


@dataclass(frozen=True)
class LatencySettings:
    """How long to measure. Times in seconds; counts are invocations."""

    warmup_runs: int = 10
    min_time_s: float = 0.5
    min_runs: int = 50
    max_runs: int = 100_000
    max_time_s: float = 20.0


@dataclass(frozen=True)
class LatencyStats:
    """Per-invocation latency, milliseconds; ``n`` timed invocations of ``batch_size`` samples."""

    n: int
    batch_size: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    min_ms: float
    max_ms: float
    #: two-sided 95 % distribution-free intervals of the percentiles (order statistics), ms:
    #: {50: (lo, hi), 90: ..., 95: ..., 99: ...}; ``inf`` where too few runs bound it (see :meth:`runs_needed`)
    ci_ms: dict = field(default_factory=dict, compare=False)
    #: what the ``n`` runs are worth as independent samples (autocorrelation; see
    #: :func:`~pytest_tfopt.measure.stats.effective_sample_size`); the intervals use it. ``None``: ``n``.
    n_effective: float | None = field(default=None, compare=False)

    def interval(self, p: float) -> tuple[float, float]:
        """The two-sided 95 % interval of the p-th percentile, ms (each side a one-sided 97.5 % bound).

        Distribution-free: order statistics of the timed runs (:func:`~pytest_tfopt.measure.stats.quantile_ranks`),
        at the ranks that ``n_effective`` independent runs would give (autocorrelated timings are worth fewer).
        The upper end is ``inf`` while there are too few runs to bound the percentile (p95: 72, p99: 368).
        """
        self.percentile(p)
        return self.ci_ms.get(p, (self.percentile(p), self.percentile(p)))

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch_size / (self.p50_ms / 1000) if self.p50_ms > 0 else float("inf")

    def percentile(self, p: float) -> float:
        """The p-th percentile in ms (50, 90, 95 and 99 are stored; others are not)."""
        key = {50: self.p50_ms, 90: self.p90_ms, 95: self.p95_ms, 99: self.p99_ms}
        if p not in key:
            raise ValueError(f"percentile {p} is not recorded: use 50, 90, 95 or 99")
        return key[p]

    def runs_needed(self, p: float) -> int:
        """Timed runs that bound the p-th percentile from above at 97.5 % one-sided (0 when ``n`` already does).

        Independent runs: p95 needs 72, p99 368; autocorrelated ones proportionally more (``n / n_effective``).
        """
        worth = (self.n_effective or self.n) / self.n if self.n else 1.0
        need = math.ceil(samples_for_upper_bound(p / 100) / max(worth, 1e-3))
        if self.n < need:
            return need
        if self.ci_ms.get(p, (0.0, 0.0))[1] == float("inf"):  # just short, after rounding the ranks outwards
            return self.n + 1
        return 0

    @classmethod
    def from_ns(cls, samples_ns: list[int], batch_size: int) -> LatencyStats:
        ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
        p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
        ordered = np.sort(ms)
        n_effective = effective_sample_size(ms)  # in timing order: neighbours correlate
        ci = {}
        for p in PERCENTILES:
            lower, upper = quantile_ranks_dependent(len(ms), n_effective, p / 100)
            ci[p] = (float(ordered[lower - 1]) if lower else 0.0, float(ordered[upper - 1]) if upper else float("inf"))
        return cls(
            n=len(ms), batch_size=batch_size,
            p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99),
            mean_ms=float(ms.mean()), stdev_ms=float(statistics.stdev(ms)) if len(ms) > 1 else 0.0,
            min_ms=float(ms.min()), max_ms=float(ms.max()), ci_ms=ci, n_effective=n_effective,
        )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The garbage collector off for the block (a collection inside a timed call is not the model's latency)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def measure(invoke: Callable[[], object], batch_size: int = 1, settings: LatencySettings | None = None) -> LatencyStats:
    """Time ``invoke()`` one call at a time with ``perf_counter_ns``, garbage collector off."""
    return LatencyStats.from_ns(sample_ns(invoke, settings or LatencySettings()), batch_size)


def sample_ns(invoke: Callable[[], object], s: LatencySettings) -> list[int]:
    """Warm up, then the duration (ns) of each call until ``s``'s minimum time and count (GC off)."""
    for _ in range(s.warmup_runs):
        invoke()
    samples: list[int] = []
    clock = time.perf_counter_ns
    with gc_paused():
        start = clock()
        min_end = start + int(s.min_time_s * 1e9)
        max_end = start + int(s.max_time_s * 1e9)
        while True:
            t0 = clock()
            invoke()
            t1 = clock()
            samples.append(t1 - t0)
            n = len(samples)
            if n >= s.max_runs or t1 >= max_end or (n >= s.min_runs and t1 >= min_end):
                break
    return samples


@dataclass(frozen=True)
class Speedup:
    """Reference time / variant time from interleaved rounds: median ratio and its 95 % interval."""

    ratio: float
    low: float
    high: float
    rounds: int
    reference_ms: float
    variant_ms: float


#: how long one side of an interleaved round times (:func:`interleaved`)
ROUND_TIME_S = 0.05


def interleaved(variant: Callable[[], object], reference: Callable[[], object], rounds: int = 12,
                round_time_s: float = ROUND_TIME_S, min_runs: int = 5) -> Speedup:
    """Time ``variant`` and ``reference`` alternately (A B, B A, ...) so drift, noise and order hit both alike.

    Each round times each callable for about ``round_time_s`` and keeps its median; the
    speedup is the median over rounds of reference/variant, with a bootstrap interval over
    the rounds.
    """
    clock = time.perf_counter_ns

    def one(fn: Callable[[], object]) -> float:
        samples = []
        end = clock() + int(round_time_s * 1e9)
        while len(samples) < min_runs or clock() < end:
            t0 = clock()
            fn()
            samples.append(clock() - t0)
        return float(np.median(samples)) / 1e6

    for fn in (variant, reference):  # warm-up
        for _ in range(5):
            fn()
    with gc_paused():  # ABBA: every other round times the reference first, so going first favours neither
        pairs = [(one(variant), one(reference)) if i % 2 == 0 else tuple(reversed((one(reference), one(variant))))
                 for i in range(rounds)]
    ours = np.array([p[0] for p in pairs])
    theirs = np.array([p[1] for p in pairs])
    ratios = theirs / np.maximum(ours, 1e-9)
    rng = np.random.default_rng(0)
    boot = [np.median(rng.choice(ratios, len(ratios))) for _ in range(BOOTSTRAP * 5)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Speedup(float(np.median(ratios)), float(lo), float(hi), rounds, float(np.median(theirs)), float(np.median(ours)))
