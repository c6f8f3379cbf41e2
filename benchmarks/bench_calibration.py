"""Calibration of the statistical verdicts: seeded simulations through the real interval and verdict code.

Three parts, all driving the project's own functions (nothing of the statistics is re-implemented here):

1. **Accuracy drop** (``max_accuracy_drop(0.01, confidence=0.95, method=...)``). Paired correct/incorrect
   outcomes of fp32 and a variant on ``n`` samples are drawn per sample from four cells: both right, fp32 right
   and the variant wrong (``b``), fp32 wrong and the variant right (``c``), both wrong. The discordance ``d`` is
   P(b) + P(c), the true drop P(b) - P(c); fp32's accuracy is 0.95 (lower where 0.95 leaves too few fp32 errors
   for P(c): the ``fp32`` column). Grid: n 50, 100, 300, 1,000; d 2 %, 5 %, 15 %; true drop 0, 0.01 (at the
   budget), 0.02 (twice the budget). Each simulated evaluation is judged by
   ``parse_marker("max_accuracy_drop", (0.01,), {"confidence": 0.95, "method": m}).judge(...)`` with the interval
   of ``m``: ``"mcnemar"`` = ``measure.stats.tango_interval(b, c, n, 0.95, TANGO_CONTINUITY)`` (the default for top-1), and
   ``"bootstrap"`` = ``measure.stats.paired_bootstrap(n, statistic, 0.95)`` with the statistic the budget uses for
   top-1 (``metric.drop`` of the resample's fp32 and variant top-1; ``--bootstrap-reps`` data sets only, as it is
   ~100x slower: 1,000 Python-level resamples per data set). The metric is ``measure.accuracy.resolve("top1")``.
   Both methods see the same simulated data sets (the bootstrap the first ``--bootstrap-reps`` of them).

   **1b. Tango exactly** (``--parts exact``): the same budgets judged on every (b, c) the multinomial can give,
   weighted by its probability (pairs under :data:`EXACT_MASS` left out): coverage and verdict rates with no
   simulation error; there "beyond" means more than :data:`EXACT_TOLERANCE` over a 2.5 % tail.

2. **Latency percentiles** (``max_latency_ms(limit, percentile=p)``). ``n`` timings, lognormal with median 1 ms
   and log-sd sigma 0.1 or 0.5, either independent or AR(1) on the log scale (phi 0.8: the same lognormal
   marginal, neighbours correlated as drifting timings are). ``LatencyStats.from_ns(samples_ns, 1)`` gives the
   percentile and ``stats.interval(p)`` (two-sided 95 %, distribution-free order statistics at the ranks
   ``n_effective`` independent runs would give); ``parse_marker("max_latency_ms", (limit,), {"percentile": p})
   .judge(who, value, interval)`` gives the verdict for budgets 10 % below, at and 10 % above the true
   percentile. Grid: n 50, 100, 400; p50, p95, p99. Coverage does not depend on sigma (order statistics and rank
   autocorrelation are unchanged by a monotone transform): the two sigma rows replicate it. Not simulated: the real ``MaxLatency.check`` times again
   (with more runs, within the time cap) when the first interval straddles the budget; these rates are those of
   one measurement, before that retry.

Printed per method and grid cell: the empirical coverage of the two-sided 95 % interval (how often it contains
the true value), of its upper end as a one-sided 97.5 % bound (truth <= upper end) and of its lower end (truth
>= lower end), and the PASS / FAIL / INCONCLUSIVE rates; for accuracy also the PASS and FAIL rates of a budget
placed exactly at the true drop (``@truth``; for latency the ``at`` budget is that one), where a 97.5 % upper
end lets PASS happen at most 2.5 % of the time and a 97.5 % lower end FAIL at most 2.5 %.

``check`` names what is beyond simulation error (more than 3 binomial standard errors, so that ~100 cells do not
flag by chance): a PASS of a truly broken budget, a FAIL of a holding one, a PASS or FAIL at the truth above
2.5 %, a coverage below its level. A coverage miss is in parentheses, and not counted, when the verdict at the
truth still stays within 2.5 % (the verdict was INCONCLUSIVE instead, e.g. the bootstrap's guard on few differing
samples). Coverage above the level is not flagged (conservative); where the interval has no upper end (``inf``:
too few runs for that percentile), the upper end trivially covers and the verdict can only be FAIL or
INCONCLUSIVE. The last line is ``TARGET MET`` when nothing counted is flagged.

Seeded: every grid cell draws from ``numpy.random.default_rng([seed, part, cell...])``, so a cell's numbers do
not depend on which other cells run. ``paired_bootstrap`` itself always resamples with its own fixed seed.

Run:  python benchmarks/bench_calibration.py [--reps 2000] [--bootstrap-reps 400] [--seed 14] [--quick]
          [--parts accuracy,exact,latency]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import cache
from statistics import NormalDist

import _common as c
import numpy as np

from pytest_tfopt.budgets import parse_marker
from pytest_tfopt.budgets.quality import TANGO_CONTINUITY
from pytest_tfopt.measure import accuracy as acc
from pytest_tfopt.measure.latency import LatencyStats
from pytest_tfopt.measure.stats import paired_bootstrap, tango_interval

CONFIDENCE = 0.95
ONE_SIDED = (1 + CONFIDENCE) / 2  # each end of a two-sided 95 % interval
ERROR_RATE = 1 - ONE_SIDED  # what a wrong PASS (or FAIL) may reach: 2.5 %
TOLERANCE_SE = 3  # "beyond simulation error": more than 3 binomial standard errors off
EXACT_TOLERANCE = 0.005  # exact rates (no simulation error): more than half a point off a 2.5 % tail
EXACT_MASS = 1e-13  # the exact enumeration leaves out (b, c) counts less likely than this

ACC_BUDGET = 0.01
ACC_N = (50, 100, 300, 1000)
ACC_DISCORDANCE = (0.02, 0.05, 0.15)
ACC_DROPS = (0.0, 0.01, 0.02)  # unchanged, at the budget, twice the budget
FP32_ACCURACY = 0.95
ACC_METHODS = ("mcnemar", "bootstrap")

LAT_SIGMAS = (0.1, 0.5)
LAT_PHIS = (0.0, 0.8)
LAT_N = (50, 100, 400)
LAT_PERCENTILES = (50, 95, 99)
LAT_BUDGETS = (0.9, 1.0, 1.1)  # budget / true percentile: broken, at the budget, holding

WHO = "simulated on simulated"
#: the modules whose code the tables measure (their hash is printed: the working tree changes under other jobs)
MEASURED = ("measure/stats.py", "measure/latency.py", "measure/accuracy.py", "budgets/quality.py",
            "budgets/perf.py", "budgets/markers.py")


def measured_hash() -> str:
    """A short hash of :data:`MEASURED`, to tell which version of the verdict code a table comes from."""
    h = hashlib.sha256()
    for name in MEASURED:
        h.update(name.encode())
        h.update((c.ROOT / "pytest_tfopt" / name).read_bytes())
    return h.hexdigest()[:8]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=None,
                   help="simulated data sets per grid cell for Tango and for latency (default 2000; 150 with --quick)")
    p.add_argument("--bootstrap-reps", type=int, default=None,
                   help="of those, how many the accuracy bootstrap judges too: it resamples 1,000 times per data set, "
                        "~100x slower than Tango (default 400; 30 with --quick)")
    p.add_argument("--seed", type=int, default=14, help="base seed of every cell's generator (default 14)")
    p.add_argument("--parts", default="accuracy,exact,latency",
                   help="which parts to run (default accuracy,exact,latency; exact: Tango's rates by enumeration)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: few repetitions, same grid")
    args = p.parse_args(argv)
    args.reps = args.reps if args.reps is not None else (150 if args.quick else 2000)
    args.bootstrap_reps = min(args.reps, args.bootstrap_reps if args.bootstrap_reps is not None
                              else (30 if args.quick else 400))
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = set(args.parts) - {"accuracy", "exact", "latency"}
    if unknown:
        p.error(f"--parts: unknown {', '.join(sorted(unknown))} (use accuracy, exact, latency)")
    return args


# ---- tallies ---------------------------------------------------------------------------------------------
def se(level: float, reps: float) -> float:
    """Binomial standard error of a rate ``level`` estimated from ``reps`` repetitions."""
    return math.sqrt(level * (1 - level) / max(reps, 1))


class Tally:
    """Coverage and verdict counts of one interval method on one grid cell, over its repetitions.

    ``exact``: the "repetitions" are the outcomes of an exact enumeration, added with their probabilities as
    weights; then "beyond" means more than :data:`EXACT_TOLERANCE` off (there is no simulation error).
    """

    def __init__(self, budgets: int = 1, exact: bool = False) -> None:
        self.reps = 0.0
        self.covered = self.upper = self.lower = self.infinite = 0.0
        self.verdicts = [{True: 0.0, False: 0.0, None: 0.0} for _ in range(budgets)]
        self.extra: list[float] = []  # a per-repetition figure shown as its mean (discordant pairs, n_effective)
        self.exact = exact

    def add(self, lo: float, hi: float, truth: float, passed: list[bool | None], extra: float = math.nan,
            weight: float = 1.0) -> None:
        self.reps += weight
        self.covered += weight * (lo <= truth <= hi)
        self.upper += weight * (truth <= hi)
        self.lower += weight * (lo <= truth)
        self.infinite += weight * (hi == math.inf)
        for counts, verdict in zip(self.verdicts, passed, strict=True):
            counts[verdict] += weight
        self.extra.append(extra)

    def rate(self, count: float) -> float:
        return count / self.reps if self.reps else math.nan

    def margin(self, level: float) -> float:
        """How far a rate may sit from ``level`` before it counts: 3 standard errors, or the exact tolerance."""
        if self.exact:
            return EXACT_TOLERANCE * (2 if level == CONFIDENCE else 1)  # two tails for the two-sided coverage
        return TOLERANCE_SE * se(level, self.reps)

    def wrong(self, k: int, verdict: bool) -> bool:
        """The rate of ``verdict`` (True: PASS, False: FAIL) on budget ``k`` is beyond 2.5 % + the margin."""
        return self.rate(self.verdicts[k][verdict]) > ERROR_RATE + self.margin(ERROR_RATE)

    def check(self, at_truth: int, broken: dict[int, str], holding: dict[int, str]) -> list[str]:
        """What is beyond simulation error: wrong verdicts, and coverages under their level.

        ``at_truth``: the budget placed at the true value, where the interval's ends promise PASS <= 2.5 % (upper
        end) and FAIL <= 2.5 % (lower end); ``broken``/``holding``: budgets (index: label) the true value breaks /
        keeps strictly, whose PASS/FAIL is a wrong verdict. A coverage miss whose verdict at the truth stays
        within 2.5 % (the verdict was INCONCLUSIVE instead) is shown in parentheses and is not counted as a miss.
        """
        found = [f"PASS>2.5%@{name}" for k, name in broken.items() if self.wrong(k, True)]
        found += [f"FAIL>2.5%@{name}" for k, name in holding.items() if self.wrong(k, False)]
        wrong_pass, wrong_fail = self.wrong(at_truth, True), self.wrong(at_truth, False)
        found += ["PASS>2.5%@truth"] * wrong_pass + ["FAIL>2.5%@truth"] * wrong_fail
        for name, count, level, hurts in (("cover95", self.covered, CONFIDENCE, wrong_pass or wrong_fail),
                                          ("upper", self.upper, ONE_SIDED, wrong_pass),
                                          ("lower", self.lower, ONE_SIDED, wrong_fail)):
            if self.rate(count) < level - self.margin(level):
                found.append(name if hurts else f"({name})")
        return found


def misses_of(found: list[str]) -> list[str]:
    """The checks that count as misses (not the excused coverage misses in parentheses)."""
    return [f for f in found if not f.startswith("(")]


def pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}"


def pfi(t: Tally, k: int = 0) -> list[str]:
    """PASS, FAIL, INCONCLUSIVE of budget ``k`` in percent."""
    v = t.verdicts[k]
    return [pct(t.rate(v[True])), pct(t.rate(v[False])), pct(t.rate(v[None]))]


# ---- 1. accuracy drop --------------------------------------------------------------------------------------
@cache
def tango(b: int, c_: int, n: int) -> tuple[float, float]:
    """:func:`tango_interval`, memoized: it depends only on the counts, which repeat across data sets."""
    return tango_interval(b, c_, n, CONFIDENCE, TANGO_CONTINUITY)


def cell_probabilities(d: float, drop: float) -> tuple[float, list[float]]:
    """fp32's accuracy and P(both right, b, c, both wrong) for discordance ``d`` and true drop ``drop``."""
    p_b, p_c = (d + drop) / 2, (d - drop) / 2
    fp32 = min(FP32_ACCURACY, 1 - p_c - 0.02)  # keep >= 2 % of samples wrong for both
    return fp32, [fp32 - p_b, p_b, p_c, 1 - fp32 - p_c]


def accuracy_cell(n: int, d: float, drop: float, reps: int, boot_reps: int,
                  rng: np.random.Generator) -> dict[str, Tally]:
    """Tango and bootstrap tallies of ``reps`` (``boot_reps``) simulated evaluations of ``n`` paired samples.

    Two budgets judge each: :data:`ACC_BUDGET` and one placed at the true drop.
    """
    metric = acc.resolve("top1")
    budgets = {m: [parse_marker("max_accuracy_drop", (limit,), {"confidence": CONFIDENCE, "method": m})
                   for limit in (ACC_BUDGET, drop)] for m in ACC_METHODS}
    tallies = {m: Tally(2) for m in ACC_METHODS}
    _, probs = cell_probabilities(d, drop)
    labels = np.ones(n, dtype=np.int64)  # one-column outputs: 1.0 scores the label (class 1), 0.0 misses it
    for r in range(reps):
        cells = rng.choice(4, size=n, p=probs)
        theirs = cells <= 1  # fp32 right: both right, or b
        ours = (cells == 0) | (cells == 2)  # variant right: both right, or c
        b, c_ = int(np.sum(cells == 1)), int(np.sum(cells == 2))
        value, ref = metric(labels, ours.astype(np.float64)), metric(labels, theirs.astype(np.float64))
        intervals: dict[str, tuple[float, float]] = {"mcnemar": tango(b, c_, n)}
        if r < boot_reps:
            # what AccuracyDrop._interval resamples for top-1: metric.drop(top1 of fp32, top1 of the variant);
            # top-1 on a resample is the mean of its per-sample correctness (checked in check_statistic)
            ours_f, theirs_f = ours.astype(np.float64), theirs.astype(np.float64)

            def statistic(index: np.ndarray, o: np.ndarray = ours_f, t: np.ndarray = theirs_f) -> float:
                return metric.drop(float(t[index].mean()), float(o[index].mean()))

            intervals["bootstrap"] = paired_bootstrap(n, statistic, CONFIDENCE)
        for method, (lo, hi) in intervals.items():
            passed = [budget.judge(WHO, metric, value, ref, (lo, hi, ""), n, b + c_).passed
                      for budget in budgets[method]]
            tallies[method].add(lo, hi, drop, passed, b + c_)
    return tallies


def check_statistic(seed: int) -> None:
    """The bootstrap statistic above equals the budget's own (metric on labels and outputs) on resamples."""
    rng = np.random.default_rng(seed)
    metric = acc.resolve("top1")
    labels = np.ones(200, dtype=np.int64)
    ours, theirs = rng.random(200) < 0.9, rng.random(200) < 0.92
    for _ in range(5):
        i = rng.integers(0, 200, 200)
        full = metric.drop(metric(labels[i], theirs.astype(float)[i]), metric(labels[i], ours.astype(float)[i]))
        fast = metric.drop(float(theirs.astype(float)[i].mean()), float(ours.astype(float)[i].mean()))
        if abs(full - fast) > 1e-12:
            raise AssertionError(f"bootstrap statistic differs from the metric's: {full} vs {fast}")


def run_accuracy(args: argparse.Namespace) -> list[str]:
    """Print the accuracy tables; return their misses for the summary."""
    check_statistic(args.seed)
    print(f"\n== 1. accuracy drop: max_accuracy_drop({ACC_BUDGET:g}, confidence={CONFIDENCE:g}, method=...), "
          f"top1; {args.reps} data sets per cell (bootstrap: the first {args.bootstrap_reps}) ==", flush=True)
    rows: dict[str, list[list[str]]] = {m: [] for m in ACC_METHODS}
    misses: list[str] = []
    t0 = time.perf_counter()
    for i, n in enumerate(ACC_N):
        for j, d in enumerate(ACC_DISCORDANCE):
            for k, drop in enumerate(ACC_DROPS):
                rng = np.random.default_rng([args.seed, 1, i, j, k])
                tallies = accuracy_cell(n, d, drop, args.reps, args.bootstrap_reps, rng)
                fp32, _ = cell_probabilities(d, drop)
                for method, t in tallies.items():
                    name = f"{ACC_BUDGET:g}"
                    check = t.check(1, {0: name} if drop > ACC_BUDGET else {}, {0: name} if drop < ACC_BUDGET else {})
                    label = f"n={n} d={d:g} drop={drop:g}"
                    misses += [f"{method} {label}: {x}" for x in misses_of(check)]
                    at_truth = pfi(t, 1)
                    rows[method].append([str(n), f"{d:g}", f"{drop:g}", f"{fp32:.3f}", f"{t.reps:.0f}",
                                         f"{np.mean(t.extra):.1f}", pct(t.rate(t.covered)), pct(t.rate(t.upper)),
                                         pct(t.rate(t.lower)), *pfi(t, 0), at_truth[0], at_truth[1],
                                         " ".join(check) or "ok"])
    header = ["n", "d", "true drop", "fp32", "reps", "b+c", "cover95 %", "upper>=true %", "lower<=true %",
              "PASS %", "FAIL %", "INCONCL %", "PASS@truth %", "FAIL@truth %", "check"]
    for method in ACC_METHODS:
        name = {"mcnemar": "Tango score interval (method='mcnemar', the top-1 default)",
                "bootstrap": "paired BCa bootstrap, 1,000 resamples (method='bootstrap')"}[method]
        print(f"\n{name}:")
        print(c.table(header, rows[method]))
    print(f"\naccuracy part: {time.perf_counter() - t0:.0f} s")
    return misses


def exact_tango_cell(n: int, d: float, drop: float) -> Tally:
    """Tango's coverage and verdict rates on ``n`` paired samples, exactly: every (b, c) with its probability.

    b and c are multinomial counts; pairs less likely than :data:`EXACT_MASS` are left out (the tally's total
    weight says how much of the probability was enumerated). Budgets as in :func:`accuracy_cell`.
    """
    metric = acc.resolve("top1")
    budgets = [parse_marker("max_accuracy_drop", (limit,), {"confidence": CONFIDENCE, "method": "mcnemar"})
               for limit in (ACC_BUDGET, drop)]
    fp32, (_, p_b, p_c, p_w) = cell_probabilities(d, drop)
    tally = Tally(2, exact=True)

    def log_p(count: int, p: float) -> float:
        return count * math.log(p) if count else 0.0

    def reach(p: float) -> int:  # beyond mean + 12 sd a count's probability is far below EXACT_MASS
        return min(n, int(n * p + 12 * math.sqrt(n * p) + 12)) if p > 0 else 0

    log_n = math.lgamma(n + 1)
    log_rest = math.log1p(-p_b - p_c)
    for b in range(reach(p_b) + 1):
        for c_ in range(min(reach(p_c), n - b) + 1):
            rest = n - b - c_
            weight = math.exp(log_n - math.lgamma(b + 1) - math.lgamma(c_ + 1) - math.lgamma(rest + 1)
                              + log_p(b, p_b) + log_p(c_, p_c) + rest * log_rest)
            if weight < EXACT_MASS:
                continue
            wrong_both = min(rest, round(n * p_w))  # any split of the concordant pairs: only b - c decides
            value, ref = (rest - wrong_both + c_) / n, (rest - wrong_both + b) / n
            lo, hi = tango(b, c_, n)
            passed = [budget.judge(WHO, metric, value, ref, (lo, hi, ""), n, b + c_).passed for budget in budgets]
            tally.add(lo, hi, drop, passed, (b + c_) * weight, weight)
    tally.extra = [sum(tally.extra) / tally.reps, fp32]
    return tally


def run_tango_exact(args: argparse.Namespace) -> list[str]:
    """Print the exact Tango table; return its misses for the summary."""
    print(f"\n== 1b. accuracy drop, Tango (method='mcnemar'), exact: every (b, c) with its multinomial probability "
          f"(no simulation error; 'beyond' = more than {100 * EXACT_TOLERANCE:g} point off a 2.5 % tail) ==",
          flush=True)
    rows, misses = [], []
    t0 = time.perf_counter()
    for n in ACC_N:
        for d in ACC_DISCORDANCE:
            for drop in ACC_DROPS:
                t = exact_tango_cell(n, d, drop)
                name = f"{ACC_BUDGET:g}"
                check = t.check(1, {0: name} if drop > ACC_BUDGET else {}, {0: name} if drop < ACC_BUDGET else {})
                misses += [f"mcnemar exact n={n} d={d:g} drop={drop:g}: {x}" for x in misses_of(check)]
                at_truth = [f"{100 * t.rate(t.verdicts[1][v]):.2f}" for v in (True, False)]
                rows.append([str(n), f"{d:g}", f"{drop:g}", f"{t.extra[1]:.3f}", f"{t.reps:.10f}", f"{t.extra[0]:.1f}",
                             *(f"{100 * t.rate(x):.2f}" for x in (t.covered, t.upper, t.lower)),
                             *(f"{100 * t.rate(t.verdicts[0][v]):.2f}" for v in (True, False, None)), *at_truth,
                             " ".join(check) or "ok"])
    print(c.table(["n", "d", "true drop", "fp32", "mass", "b+c", "cover95 %", "upper>=true %", "lower<=true %",
                   "PASS %", "FAIL %", "INCONCL %", "PASS@truth %", "FAIL@truth %", "check"], rows))
    print(f"\nexact part: {time.perf_counter() - t0:.0f} s")
    return misses


# ---- 2. latency percentiles --------------------------------------------------------------------------------
def log_latencies(rng: np.random.Generator, reps: int, n: int, phi: float) -> np.ndarray:
    """``reps`` series of ``n`` standard normals, AR(1) with coefficient ``phi`` (stationary: N(0, 1) marginals)."""
    eps = rng.standard_normal((reps, n))
    if phi == 0:
        return eps
    z = np.empty_like(eps)
    z[:, 0] = eps[:, 0]
    scale = math.sqrt(1 - phi * phi)
    for t in range(1, n):
        z[:, t] = phi * z[:, t - 1] + scale * eps[:, t]
    return z


def latency_cell(sigma: float, phi: float, n: int, reps: int, rng: np.random.Generator) -> dict[int, Tally]:
    """Per percentile: the tally of ``reps`` simulated measurements of ``n`` lognormal timings (median 1 ms)."""
    truth = {p: math.exp(sigma * NormalDist().inv_cdf(p / 100)) for p in LAT_PERCENTILES}
    budgets = {p: [parse_marker("max_latency_ms", (truth[p] * f,), {"percentile": p}) for f in LAT_BUDGETS]
               for p in LAT_PERCENTILES}
    tallies = {p: Tally(len(LAT_BUDGETS)) for p in LAT_PERCENTILES}
    samples_ns = np.rint(np.exp(sigma * log_latencies(rng, reps, n, phi)) * 1e6).astype(np.int64)
    for row in samples_ns:
        stats = LatencyStats.from_ns(row.tolist(), 1)
        for p in LAT_PERCENTILES:
            lo, hi = stats.interval(p)
            value = stats.percentile(p)
            passed = [b.judge(WHO, value, (lo, hi)).passed for b in budgets[p]]
            tallies[p].add(lo, hi, truth[p], passed, stats.n_effective if stats.n_effective is not None else n)
    return tallies


def run_latency(args: argparse.Namespace) -> list[str]:
    """Print the latency table; return its misses for the summary."""
    print(f"\n== 2. latency percentiles: LatencyStats.from_ns(...).interval(p) and max_latency_ms(limit, "
          f"percentile=p).judge; lognormal, median 1 ms; {args.reps} measurements per cell ==", flush=True)
    print("budget columns: PASS/FAIL/INCONCLUSIVE % for a budget 10 % below (broken), at, and 10 % above (holds) "
          "the true percentile")
    rows, misses = [], []
    t0 = time.perf_counter()
    for i, sigma in enumerate(LAT_SIGMAS):
        for j, phi in enumerate(LAT_PHIS):
            for k, n in enumerate(LAT_N):
                rng = np.random.default_rng([args.seed, 2, i, j, k])
                tallies = latency_cell(sigma, phi, n, args.reps, rng)
                for p, t in tallies.items():
                    check = t.check(LAT_BUDGETS.index(1.0), {0: "-10%"}, {2: "+10%"})
                    misses += [f"sigma={sigma:g} phi={phi:g} n={n} p{p}: {x}" for x in misses_of(check)]
                    rows.append([f"{sigma:g}", f"{phi:g}", str(n), f"p{p}", f"{t.reps:.0f}", f"{np.mean(t.extra):.0f}",
                                 pct(t.rate(t.infinite)), pct(t.rate(t.covered)), pct(t.rate(t.upper)),
                                 pct(t.rate(t.lower)),
                                 *("/".join(pfi(t, b)) for b in range(len(LAT_BUDGETS))), " ".join(check) or "ok"])
    print()
    print(c.table(["sigma", "phi", "n", "pct", "reps", "n_eff", "upper inf %", "cover95 %", "upper>=true %",
                   "lower<=true %", "-10% P/F/I", "at P/F/I", "+10% P/F/I", "check"], rows))
    print(f"\nlatency part: {time.perf_counter() - t0:.0f} s")
    return misses


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"bench_calibration: {now}; {c.machine_line()}; Python {platform.python_version()}")
    print(f"verdict code: pytest_tfopt/{{{','.join(MEASURED)}}} hash {measured_hash()}")
    print(f"command: python benchmarks/bench_calibration.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"seed {args.seed}; reps {args.reps} (bootstrap {args.bootstrap_reps}); 'beyond simulation error' = "
          f"{TOLERANCE_SE} binomial standard errors: at {args.reps} reps "
          f"{100 * TOLERANCE_SE * se(CONFIDENCE, args.reps):.1f} points for 95 %, "
          f"{100 * TOLERANCE_SE * se(ONE_SIDED, args.reps):.1f} for 97.5 % and for a 2.5 % error rate"
          + (f"; at {args.bootstrap_reps} reps {100 * TOLERANCE_SE * se(CONFIDENCE, args.bootstrap_reps):.1f}, "
             f"{100 * TOLERANCE_SE * se(ONE_SIDED, args.bootstrap_reps):.1f}" if "accuracy" in args.parts else ""))
    misses: list[str] = []
    parts: dict[str, Callable[[argparse.Namespace], list[str]]] = {
        "accuracy": run_accuracy, "exact": run_tango_exact, "latency": run_latency}
    for part in args.parts:
        misses += parts[part](args)
    print(f"\ntotal: {time.perf_counter() - started:.0f} s")
    if misses:
        print(f"\nbeyond simulation error ({len(misses)}):")
        for m in misses:
            print(f"  {m}")
    print()
    print(f"TARGET {'NOT MET' if misses else 'MET'}: calibration: {len(misses)} coverage or wrong-verdict rates beyond "
          f"simulation error of their stated level")
    return 0


if __name__ == "__main__":
    sys.exit(main())
