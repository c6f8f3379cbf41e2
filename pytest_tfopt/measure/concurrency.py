"""Latency under concurrency: N request streams at once, their tail latency and throughput.

Closed loop, like Triton's ``perf_analyzer --concurrency-range`` and MLPerf's Server scenario
with a fixed number of requests in flight: each of ``concurrency`` streams is a thread that
sends its next request as soon as the previous one returns, so ``concurrency`` requests are
outstanding at all times.

Open loop with ``rate`` (requests/s), like MLPerf's Server scenario: requests arrive at seeded
Poisson times whether or not earlier ones have finished, and ``concurrency`` workers (one runner
each) serve them first come, first served: a free worker takes the next arrival, waits for it if
it is still to come, and serves it. A request's latency runs from its *scheduled* arrival to its
completion, so queueing counts (as in MLPerf's LoadGen), and so does a worker's late wake-up; when
the model cannot keep up with the rate, the tail grows without bound — which is what such a budget
is for.

Runtimes like the LiteRT interpreter are not thread-safe, so every stream gets its own runner
from ``load(threads_per_stream)``; they run truly concurrently where the runtime releases the
GIL while it computes (LiteRT's invoke does). The Python around each request still takes turns
with the GIL, so a request's latency includes waiting for it, as in a Python server; for models
that run in microseconds that overhead dominates. The threads really used are
``concurrency * threads_per_stream``; :class:`LoadStats` records them with the cores there are.

Both loops read and wait on a :class:`Clock`: the :mod:`time` module, or a fake one in tests.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .latency import LatencySettings, LatencyStats, gc_paused, request

#: one timed request: (start, end) in ns of the clock; the start is the scheduled arrival in the open loop
Span = tuple[int, int]


class Clock(Protocol):
    """What measuring reads and waits on: the :mod:`time` module, or a fake clock in tests."""

    def perf_counter_ns(self) -> int: ...

    def sleep(self, secs: float, /) -> None: ...


@dataclass(frozen=True)
class LoadStats:
    """Per-request latency (ms) and throughput (samples/s) of ``concurrency`` closed-loop streams.

    ``latency`` summarizes every timed request of every stream; ``wall_s`` runs from the first
    timed request's start to the last one's end; ``throughput = requests * batch_size / wall_s``.
    """

    concurrency: int
    threads_per_stream: int
    cores: int
    batch_size: int
    mode: str
    requests: int
    wall_s: float
    throughput: float
    latency: LatencyStats
    #: requests per stream (how evenly the streams were served)
    per_stream: tuple[int, ...] = ()
    #: every request's latency in ms, in order of completion
    latencies_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)
    #: open loop: the offered Poisson arrival rate (requests/s); None = closed loop
    rate: float | None = None

    @property
    def total_threads(self) -> int:
        """Runtime threads in use at once: streams x threads per stream."""
        return self.concurrency * self.threads_per_stream

    @property
    def oversubscribed(self) -> bool:
        return self.total_threads > self.cores

    def describe(self) -> str:
        """``4 streams x 1 thread on 2 cores (oversubscribed), 1234 samples/s`` (for messages)."""
        threads = f"{self.threads_per_stream} thread{'s' if self.threads_per_stream != 1 else ''}"
        over = " (oversubscribed)" if self.oversubscribed else ""
        who = "streams" if self.rate is None else f"workers serving Poisson arrivals at {self.rate:g}/s,"
        return (f"{self.concurrency} {who} x {threads} on {self.cores} cores{over}, "
                f"{self.requests} requests in {self.wall_s:.2f} s, {self.throughput:.0f} samples/s")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_stream(threads: int, concurrency: int) -> int:
    """Split ``threads`` runtime threads among ``concurrency`` streams, at least one each."""
    return max(1, threads // concurrency)


def measure(runners: list[Any], x: np.ndarray, mode: str = "invoke", settings: LatencySettings | None = None,
            threads: int = 1, preprocess: Callable[[Any], Any] | None = None,
            postprocess: Callable[[Any], Any] | None = None, *, clock: Clock = time) -> LoadStats:
    """Drive one closed-loop stream per runner (each sends batch ``x``) and time every request.

    ``threads``: runtime threads each runner was loaded with. Every stream warms up
    (``settings.warmup_runs``), then all start together; measuring stops once ``min_time_s``
    has passed and ``min_runs`` requests are done in all (or at ``max_time_s``, or when every
    stream has done ``max_runs``). Requests in flight at the stop are finished and counted.
    """
    s = settings or LatencySettings()
    calls = _requests("measure()", "stream", runners, x, mode, preprocess, postprocess)
    return _stats(_run(calls, s.warmup_runs, _ClosedLoop(s, clock)), x, mode, threads, None)


def measure_open_loop(runners: list[Any], x: np.ndarray, rate: float, mode: str = "invoke",
                      settings: LatencySettings | None = None, threads: int = 1,
                      preprocess: Callable[[Any], Any] | None = None,
                      postprocess: Callable[[Any], Any] | None = None, seed: int = 0, *,
                      clock: Clock = time) -> LoadStats:
    """Poisson arrivals at ``rate`` requests/s served by one worker per runner (see the module docstring).

    Every worker warms up (``settings.warmup_runs``) before the first arrival. Arrivals are offered
    until ``min_time_s`` has passed and ``min_runs`` requests were offered (or ``max_time_s``/``max_runs``);
    every offered request is served and counted.
    """
    s = settings or LatencySettings()
    calls = _requests("measure_open_loop()", "worker", runners, x, mode, preprocess, postprocess)
    return _stats(_run(calls, s.warmup_runs, _OpenLoop(s, clock, rate, seed)), x, mode, threads, rate)


def _requests(caller: str, role: str, runners: list[Any], x: np.ndarray, mode: str,
              preprocess: Callable[[Any], Any] | None, postprocess: Callable[[Any], Any] | None,
              ) -> list[Callable[[], object]]:
    """One request callable per runner (see :func:`~pytest_tfopt.measure.latency.request`)."""
    if not runners:
        raise ValueError(f"{caller} needs at least one runner (one per {role})")
    return [request(r, x, mode, preprocess, postprocess) for r in runners]


class _Pacing:
    """When each stream's next request starts, and when they all stop."""

    def __init__(self, s: LatencySettings, clock: Clock) -> None:
        self.s, self.clock = s, clock
        self.stop = threading.Event()  # set: no stream starts another request
        self.min_end = self.max_end = 0

    def begin(self, start: int) -> None:
        """In the caller's thread: the streams are warm and start at ``start`` (ns)."""
        self.min_end, self.max_end = start + int(self.s.min_time_s * 1e9), start + int(self.s.max_time_s * 1e9)

    def next_start(self, done: list[Span]) -> int | None:
        """In a stream's thread, ``done`` its requests so far: when its next one starts (ns), or None to stop."""
        raise NotImplementedError

    def watch(self, samples: list[list[Span]], streams: list[threading.Thread]) -> None:
        """In the caller's thread while the streams run (nothing to do unless the caller decides when to stop)."""


class _ClosedLoop(_Pacing):
    """A stream starts its next request as soon as the last one returned; the caller's thread stops them."""

    def next_start(self, done: list[Span]) -> int | None:
        if self.stop.is_set() or len(done) >= self.s.max_runs:
            return None
        return self.clock.perf_counter_ns()

    def watch(self, samples: list[list[Span]], streams: list[threading.Thread]) -> None:
        while not self.stop.is_set() and any(t.is_alive() for t in streams):
            now = self.clock.perf_counter_ns()
            if now >= self.max_end or (now >= self.min_end and sum(map(len, samples)) >= self.s.min_runs):
                break
            self.clock.sleep(0.005)
        self.stop.set()


class _OpenLoop(_Pacing):
    """Seeded Poisson arrivals at ``rate``/s: a free stream takes the next one and waits until it is due."""

    def __init__(self, s: LatencySettings, clock: Clock, rate: float, seed: int) -> None:
        super().__init__(s, clock)
        self.mean_gap_ns = 1e9 / rate
        self.gaps = np.random.default_rng(seed)
        self.taking = threading.Lock()  # one stream at a time takes the next arrival, so they come in order
        self.arrival = self.offered = 0

    def begin(self, start: int) -> None:
        super().begin(start)
        self.arrival = start

    def next_start(self, done: list[Span]) -> int | None:
        s = self.s
        with self.taking:
            if self.stop.is_set():
                return None
            arrival = self.arrival + int(self.gaps.exponential(self.mean_gap_ns))
            if arrival >= self.max_end or self.offered >= s.max_runs or (
                    arrival >= self.min_end and self.offered >= s.min_runs):
                self.stop.set()
                return None
            self.arrival, self.offered = arrival, self.offered + 1
        wait = (arrival - self.clock.perf_counter_ns()) / 1e9
        if wait > 0:
            self.clock.sleep(wait)
        return arrival


def _run(calls: list[Callable[[], object]], warmup_runs: int, pacing: _Pacing) -> list[list[Span]]:
    """Each call in its own thread: warm up, then time requests at ``pacing``'s starts; each stream's spans.

    The streams start together once all are warm, the garbage collector off. The first error in any
    stream (warm-up included) stops them all and is raised here.
    """
    clock = pacing.clock
    samples: list[list[Span]] = [[] for _ in calls]
    errors: list[BaseException] = []
    warm = threading.Barrier(len(calls) + 1)
    go = threading.Event()

    def stream(call: Callable[[], object], mine: list[Span]) -> None:
        try:
            for _ in range(warmup_runs):
                call()
            warm.wait()
            go.wait()
            while (t0 := pacing.next_start(mine)) is not None:
                call()
                mine.append((t0, clock.perf_counter_ns()))
        except threading.BrokenBarrierError:  # another stream failed while warming up
            return
        except BaseException as exc:  # reported in the caller's thread
            errors.append(exc)
            warm.abort()
            pacing.stop.set()

    streams = [threading.Thread(target=stream, args=(call, mine), name=f"tfopt-stream-{i}", daemon=True)
               for i, (call, mine) in enumerate(zip(calls, samples, strict=True))]
    with gc_paused():
        for t in streams:
            t.start()
        try:
            warm.wait()
        except threading.BrokenBarrierError:
            pass
        else:
            pacing.begin(clock.perf_counter_ns())
            go.set()
            pacing.watch(samples, streams)
        for t in streams:
            t.join()
    if errors:
        raise errors[0]
    return samples


def _stats(samples: list[list[Span]], x: np.ndarray, mode: str, threads: int, rate: float | None) -> LoadStats:
    """LoadStats from each stream's (start, end) ns pairs."""
    spans = sorted((t for per in samples for t in per), key=lambda t: t[1])
    if not spans:
        raise RuntimeError("no request finished under load")
    wall_s = max(1e-9, (spans[-1][1] - min(t0 for t0, _ in spans)) / 1e9)
    batch = len(x)
    stats = LatencyStats.from_ns([t1 - t0 for t0, t1 in spans], batch)
    return LoadStats(
        concurrency=len(samples), threads_per_stream=threads, cores=available_cores(), batch_size=batch, mode=mode,
        requests=len(spans), wall_s=wall_s, throughput=len(spans) * batch / wall_s, latency=stats,
        per_stream=tuple(len(per) for per in samples),
        latencies_ms=tuple((t1 - t0) / 1e6 for t0, t1 in spans), rate=rate,
    )
