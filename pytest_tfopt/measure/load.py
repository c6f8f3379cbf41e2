"""Latency under load: N concurrent request streams, tail latency and throughput.

Closed loop, like Triton's ``perf_analyzer --concurrency-range`` and MLPerf's Server scenario
with a fixed number of requests in flight: each of ``concurrency`` streams is a thread that
sends its next request as soon as the previous one returns, so ``concurrency`` requests are
outstanding at all times.

Open loop with ``rate`` (requests/s), like MLPerf's Server scenario: a dispatcher issues requests
at seeded Poisson arrival times whether or not earlier ones have finished; ``concurrency`` workers
(one runner each) serve them from a queue. A request's latency runs from its *scheduled* arrival
to its completion, so queueing counts (as in MLPerf's LoadGen), and so does any lateness of the
dispatcher; when the model cannot keep up with the rate, the tail grows without bound — which is
what such a budget is for.

Runtimes like the LiteRT interpreter are not thread-safe, so every stream gets its own runner
from ``load(threads_per_stream)``; they run truly concurrently where the runtime releases the
GIL while it computes (LiteRT's invoke does). The Python around each request still takes turns
with the GIL, so a request's latency includes waiting for it, as in a Python server; for models
that run in microseconds that overhead dominates. The threads really used are
``concurrency * threads_per_stream``; :class:`LoadStats` records them with the cores there are.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .latency import LatencySettings, LatencyStats, gc_paused, request


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


def measure_open_loop(runners: list[Any], x: np.ndarray, rate: float, mode: str = "invoke",
                      settings: LatencySettings | None = None, threads: int = 1,
                      preprocess: Callable[[Any], Any] | None = None,
                      postprocess: Callable[[Any], Any] | None = None, seed: int = 0) -> LoadStats:
    """Poisson arrivals at ``rate`` requests/s served by one worker per runner (see the module docstring).

    Arrivals are issued until ``min_time_s`` has passed and ``min_runs`` requests were issued (or
    ``max_time_s``/``max_runs``); every issued request is served and counted.
    """
    s = settings or LatencySettings()
    if not runners:
        raise ValueError("measure_open_loop() needs at least one runner (one per worker)")
    calls = [request(r, x, mode, preprocess, postprocess) for r in runners]
    for call in calls:
        for _ in range(s.warmup_runs):
            call()
    clock = time.perf_counter_ns
    pending: queue.Queue[int | None] = queue.Queue()
    done: list[list[tuple[int, int]]] = [[] for _ in calls]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        call, mine = calls[i], done[i]
        while True:
            scheduled = pending.get()
            if scheduled is None:
                return
            try:
                call()
            except BaseException as exc:  # reported in the caller's thread
                errors.append(exc)
                return
            mine.append((scheduled, clock()))

    workers = [threading.Thread(target=worker, args=(i,), name=f"tfopt-load-{i}", daemon=True)
               for i in range(len(calls))]
    gaps = np.random.default_rng(seed)
    with gc_paused():
        for w in workers:
            w.start()
        start = clock()
        min_end, max_end = start + int(s.min_time_s * 1e9), start + int(s.max_time_s * 1e9)
        arrival, issued = start, 0
        while not errors:
            arrival += int(gaps.exponential(1e9 / rate))
            if arrival >= max_end or issued >= s.max_runs or (arrival >= min_end and issued >= s.min_runs):
                break
            wait = (arrival - clock()) / 1e9
            if wait > 0:
                time.sleep(wait)
            pending.put(arrival)
            issued += 1
        for _ in workers:
            pending.put(None)
        for w in workers:
            w.join()
    if errors:
        raise errors[0]
    return _stats(done, x, mode, threads, rate)


def _stats(samples: list[list[tuple[int, int]]], x: np.ndarray, mode: str, threads: int,
           rate: float | None) -> LoadStats:
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


def measure(runners: list[Any], x: np.ndarray, mode: str = "invoke", settings: LatencySettings | None = None,
            threads: int = 1, preprocess: Callable[[Any], Any] | None = None,
            postprocess: Callable[[Any], Any] | None = None) -> LoadStats:
    """Drive one closed-loop stream per runner (each sends batch ``x``) and time every request.

    ``threads``: runtime threads each runner was loaded with. Every stream warms up
    (``settings.warmup_runs``), then all start together; measuring stops once ``min_time_s``
    has passed and ``min_runs`` requests are done in all (or at ``max_time_s``/``max_runs``).
    Requests in flight at the stop are finished and counted.
    """
    s = settings or LatencySettings()
    if not runners:
        raise ValueError("measure() needs at least one runner (one per stream)")
    calls = [request(r, x, mode, preprocess, postprocess) for r in runners]
    concurrency = len(calls)
    clock = time.perf_counter_ns
    start_line = threading.Barrier(concurrency + 1)
    stop = threading.Event()
    samples: list[list[tuple[int, int]]] = [[] for _ in calls]
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        call, mine = calls[i], samples[i]
        try:
            for _ in range(s.warmup_runs):
                call()
        except BaseException as exc:  # reported in the caller's thread
            errors.append(exc)
            start_line.abort()
            return
        try:
            start_line.wait()
        except threading.BrokenBarrierError:
            return
        try:
            while not stop.is_set():
                t0 = clock()
                call()
                mine.append((t0, clock()))
                if len(mine) >= s.max_runs:
                    break
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    workers = [threading.Thread(target=stream, args=(i,), name=f"tfopt-load-{i}", daemon=True) for i in range(concurrency)]
    with gc_paused():
        for w in workers:
            w.start()
        try:
            start_line.wait()
        except threading.BrokenBarrierError:
            pass
        start = clock()
        min_end, max_end = start + int(s.min_time_s * 1e9), start + int(s.max_time_s * 1e9)
        while not stop.is_set() and any(w.is_alive() for w in workers):
            now = clock()
            if now >= max_end or (now >= min_end and sum(map(len, samples)) >= s.min_runs):
                break
            time.sleep(0.005)
        stop.set()
        for w in workers:
            w.join()
    if errors:
        raise errors[0]
    return _stats(samples, x, mode, threads, None)
