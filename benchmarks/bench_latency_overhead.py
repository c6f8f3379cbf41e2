"""Latency overhead: what pytest-tfopt reports vs a bare LiteRT invoke() loop.

Measures, for fp32 and int8 of the shipped digits CNN (models/digits_cnn.h5) and of a
compute-bound CNN built here (tf_keras, random weights, 56,970 parameters, 32x32x3 input):

* plugin: ``Workbench(...).runnable(variant).latency(batch_size=1)`` -> p50_ms, mean_ms
  (re-measured every round by passing the Workbench's own ``LatencySettings``, because
  ``latency()`` memoizes its first result);
* bare:   an ``ai_edge_litert.interpreter.Interpreter`` built from the same artifact bytes
  (``runnable.artifact.content``), same ``num_threads``, same delegate, same input (the first
  evaluation sample, which is what the plugin times), ``set_tensor`` once, then ``invoke()``
  timed one call at a time with ``time.perf_counter_ns`` (same warm-up, minimum time and
  minimum count as the plugin, garbage collector off like the plugin).

The two are interleaved for ``--rounds`` rounds (plugin, bare / bare, plugin / ...: the order
alternates so neither always runs first) and the table reports the median over rounds of each
side's p50 and mean, and the ratio plugin / bare two ways: paired (plugin/bare within each
round, median over rounds: robust when other processes slow a whole round down) and as the
ratio of the two medians.

On a shared machine each case first waits (up to ``--quiet-wait`` s) for other processes to
leave the cores idle, and the ``others' load`` column reports how many cores other processes
kept busy while it was measured (about 1.0 on 2 cores = one core was taken the whole time).

Target: the latency the plugin reports is within 10 % of the bare loop, i.e.
0.90 <= plugin/bare (paired) <= 1.10 for both p50 and mean, in every row.

Each case runs at ``--threads`` 1 and at the Workbench default (``auto``: the cores of this process).

Run:  python benchmarks/bench_latency_overhead.py [--rounds 5] [--threads 1,auto] [--models digits,compute]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import _common as c
import numpy as np

TOLERANCE = 0.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=5,
                   help="interleaved plugin/bare rounds (default 5)")
    p.add_argument("--threads", default="1,auto",
                   help="comma list of runtime thread counts, same on both sides; 'auto' = the Workbench "
                        "default (the cores here) (default 1,auto)")
    p.add_argument("--models", default="digits,compute", help="comma list of digits, compute (default both)")
    p.add_argument("--variants", default="fp32,int8", help="comma list of float-I/O variants (default fp32,int8)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds per measurement, both sides (default: the plugin's LatencySettings, 0.5)")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="before each case, wait up to this many seconds for other processes to leave the cores "
                        "idle (under 0.25 cores busy for 2 s); 0 = don't wait (default 30)")
    p.add_argument("--cache-dir", default=None, help="artifact cache (default: a fresh temp dir)")
    return p.parse_args(argv)


def workbench(model: str, cache_dir: str, threads: int | None, settings) -> object:
    """A Workbench for ``model``; the source model is loaded once and shared by every thread count."""
    from pytest_tfopt import Workbench

    if model not in _SOURCES:
        if model == "digits":
            _SOURCES[model] = (str(c.DIGITS_MODEL), str(c.DIGITS_DATA))
        elif model == "compute":
            _SOURCES[model] = (c.build_compute_cnn(), c.compute_dataset())
        else:
            raise SystemExit(f"unknown model {model!r}: use digits or compute")
        wb = Workbench(*_SOURCES[model], cache_dir=cache_dir, threads=threads, latency=settings)
        _SOURCES[model] = (wb.source, wb.dataset)
        return wb
    return Workbench(*_SOURCES[model], cache_dir=cache_dir, threads=threads, latency=settings)


_SOURCES: dict[str, tuple[object, object]] = {}


def interleaved(r, interp, x: np.ndarray, settings, rounds: int):
    """``rounds`` rounds of plugin and bare measurements, order alternating; p50s and means in ms."""
    from pytest_tfopt.measure.latency import LatencyStats

    plugin_p50, plugin_mean, bare_p50, bare_mean = [], [], [], []

    def plugin() -> None:
        s = r.latency(batch_size=1, settings=settings)  # settings given: measured again, not memoized
        plugin_p50.append(s.p50_ms)
        plugin_mean.append(s.mean_ms)

    def bare() -> None:
        ns = c.bare_latency_ns(interp, x, settings.warmup_runs, settings.min_runs, settings.min_time_s,
                               settings.max_runs, settings.max_time_s)
        s = LatencyStats.from_ns(ns, 1)
        bare_p50.append(s.p50_ms)
        bare_mean.append(s.mean_ms)

    others = c.OthersLoad()
    others.start()
    for i in range(rounds):
        for step in ((plugin, bare) if i % 2 == 0 else (bare, plugin)):
            step()
    others.stop()
    return plugin_p50, plugin_mean, bare_p50, bare_mean, others


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pytest_tfopt.measure.latency import LatencySettings

    settings = LatencySettings() if args.min_time is None else LatencySettings(min_time_s=args.min_time)
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="tfopt-bench-lat-")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]

    print(f"bench_latency_overhead: {c.machine_line()}")
    t0 = time.perf_counter()
    from pytest_tfopt import tfenv

    thread_counts: list[int] = []
    for t in args.threads.split(","):
        n = tfenv.default_threads() if t.strip() == "auto" else int(t)
        if n not in thread_counts:
            thread_counts.append(n)
    cases = []
    for model in models:
        for threads in thread_counts:
            wb = workbench(model, cache_dir, threads, settings)
            x = np.resize(wb.eval_dataset.x, (1, *wb.eval_dataset.x.shape[1:])).astype(np.float32)
            for variant in variants:
                r = wb.runnable(variant)
                interp = c.bare_interpreter(r, int(r.info["threads"]))
                cases.append((model, variant, r, interp, x, int(r.info["threads"])))
    print(f"built/loaded {len(cases)} runnables in {time.perf_counter() - t0:.1f} s (cache {cache_dir}); "
          f"{args.rounds} interleaved rounds, {settings.min_time_s} s per measurement\n")

    rows, verdicts = [], []
    for model, variant, r, interp, x, threads in cases:
        if args.quiet_wait > 0:
            c.wait_for_quiet(args.quiet_wait)
        plugin_p50, plugin_mean, bare_p50, bare_mean, others = interleaved(r, interp, x, settings, args.rounds)
        p50_p, p50_b = c.median(plugin_p50), c.median(bare_p50)
        mean_p, mean_b = c.median(plugin_mean), c.median(bare_mean)
        # paired: plugin/bare within each round (both sides saw the same machine state), median over rounds
        paired_p50 = c.median([a / b for a, b in zip(plugin_p50, bare_p50, strict=True)])
        paired_mean = c.median([a / b for a, b in zip(plugin_mean, bare_mean, strict=True)])
        ok = all(abs(ratio - 1) <= TOLERANCE for ratio in (paired_p50, paired_mean))
        verdicts.append(ok)
        rows.append([f"{model} {variant}", str(threads), r.info.get("delegate", "?"),
                     f"{p50_p:.4f}", f"{p50_b:.4f}", f"{paired_p50:.3f}", f"{p50_p / p50_b:.3f}",
                     f"{mean_p:.4f}", f"{mean_b:.4f}", f"{paired_mean:.3f}", f"{mean_p / mean_b:.3f}",
                     "yes" if ok else "NO", others.text()])
        per_round = ", ".join(f"{a / b:.3f}" for a, b in zip(plugin_p50, bare_p50, strict=True))
        print(f"  {model} {variant} t{threads}: per-round p50 ratio plugin/bare: {per_round}", flush=True)

    print()
    print(c.table(["model variant", "threads", "delegate", "plugin p50 ms", "bare p50 ms", "p50 ratio",
                   "of medians", "plugin mean ms", "bare mean ms", "mean ratio", "of medians", "within 10%",
                   "others' load"], rows))
    print("\n(plugin/bare ms: medians over rounds; ratio = median over rounds of plugin/bare measured in the\n"
          " same round (paired: what the target is judged on); of medians = median plugin / median bare;\n"
          " others' load = cores other processes kept busy during the row's rounds)")
    met = bool(verdicts) and all(verdicts)
    print(f"TARGET {'MET' if met else 'NOT MET'}: plugin latency within 10% of bare invoke loop "
          f"(p50 and mean) in {sum(verdicts)}/{len(verdicts)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
