"""Stability on a shared machine: run-to-run spread of the example suite's latency, and its flake rate.

1. **Stability.** Warms one shared temp artifact cache with a single run of the example suite, then runs
   ``python -m pytest examples -p no:randomly --tfopt-cache-dir=<shared> --tfopt-report=<tmp>/run{i}.json -q``
   ``--runs`` times (default 10) in subprocesses from the repository root. From each JSON report it takes
   every (test, variant, backend) row that has a latency (``latency_b1_p50_ms``) and computes, per row, the
   coefficient of variation of p50 over the runs (sample stdev / mean). Prints the table (median p50, CV,
   min, max; plus the same for p95, which the example suite's latency budget uses) and the median CV.
   Target: median CV <= 10 %.

2. **Flake rate.** Runs the passing example suite ``--flake-runs`` times (default 20) with default
   settings (``python -m pytest examples --tfopt-cache-dir=<shared>``: the same warm cache, nothing
   else) and counts runs with a non-zero exit code; prints each failing run's FAILED/ERROR lines and
   its ``E`` message lines. Target: 0 failing runs.

The machine is shared and noisy on purpose: nothing waits for quiet (``--quiet-wait`` 0 by default),
and every run reports ``others' load``, the cores other processes kept busy meanwhile (from
``/proc/stat`` minus this process and its children; 1.0 on 2 cores = one core taken the whole time).
The plugin is installed editable and other jobs may edit the working tree meanwhile, so by default the
script copies ``pytest_tfopt/`` once at the start into its temp directory and puts that copy first on
``PYTHONPATH`` (with ``PYTHONSAFEPATH=1``) for every run (``--live`` runs the live tree instead); each run records a hash of the
sources it ran, and the script warns when they differ between runs (an edited tree is not a flake).

Two rows can share one measurement: latency is memoized per runnable model in a session, so a test
that reuses a variant an earlier test measured reports the same numbers (marked ``= <row>``).

Run:  python benchmarks/bench_stability.py [--runs 10] [--flake-runs 20] [--python /work/venv/bin/python]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c

RESULT = re.compile(r"=+ (.*\b(?:passed|failed|error|errors|skipped)\b.*) in [\d.]+s")
QUIET_RESULT = re.compile(r"^(\d+ (?:passed|failed|error|errors|skipped).*) in [\d.]+s", re.M)
SUMMARY = re.compile(r"artifacts: (\d+) built \(([\d.]+) s\), (\d+) reused")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10, help="stability runs with a JSON report (default 10)")
    p.add_argument("--flake-runs", type=int, default=20, help="default-settings runs counted for flakes (default 20)")
    p.add_argument("--python", default=sys.executable, help="interpreter running pytest (default: this one)")
    p.add_argument("--suite", default="examples", help="test path, relative to the repository root (default examples)")
    p.add_argument("--cache-dir", default=None, help="shared artifact cache (default: a fresh temp dir, removed after)")
    p.add_argument("--max-cv", type=float, default=10.0, help="stability target: median CV of p50, %% (default 10)")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="before each run, wait up to this many seconds for other processes to leave the cores idle "
                        "(default 0: the point is to measure on the noisy machine as it is)")
    p.add_argument("--live", action="store_true",
                   help="run the live working tree instead of a copy of pytest_tfopt/ taken at the start")
    p.add_argument("--keep", action="store_true", help="keep the temp directory (reports, outputs, cache)")
    p.add_argument("--verbose", action="store_true", help="print each run's pytest output")
    return p.parse_args(argv)


SRC_ROOT = c.ROOT  # where the pytest_tfopt/ the runs import lives (a snapshot unless --live)


def source_hash(root: Path | None = None) -> str:
    root = root or SRC_ROOT
    h = hashlib.sha256()
    for path in sorted((root / "pytest_tfopt").rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:8]


def snapshot(work: Path) -> Path:
    dest = work / "src"
    shutil.copytree(c.ROOT / "pytest_tfopt", dest / "pytest_tfopt",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def run_env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if SRC_ROOT != c.ROOT:
        # the copy first on the path; PYTHONSAFEPATH keeps the cwd (the repository root, which holds the
        # live pytest_tfopt/) off sys.path[0]; the editable install's finder comes after the path
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_ROOT), os.environ.get("PYTHONPATH")) if p)
        env["PYTHONSAFEPATH"] = "1"
    return env


def run_suite(cmd: list[str], total: c.OthersLoad, quiet_wait: float, verbose: bool) -> dict[str, object]:
    if quiet_wait > 0:
        c.wait_for_quiet(quiet_wait)
    env = run_env()
    code = source_hash()
    others = c.OthersLoad()
    others.start()
    total.start()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=c.ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    total.stop()
    others.stop()
    if verbose:
        print(proc.stdout, proc.stderr)
    outcome = RESULT.search(proc.stdout) or QUIET_RESULT.search(proc.stdout)
    built = SUMMARY.search(proc.stdout)
    return {"rc": proc.returncode, "wall": wall, "others": others, "code": code,
            "outcome": outcome.group(1) if outcome else "?", "built": int(built.group(1)) if built else None,
            "stdout": proc.stdout, "stderr": proc.stderr}


def failure_lines(stdout: str, stderr: str, limit: int = 40) -> list[str]:
    """The short-summary FAILED/ERROR lines and the traceback's ``E`` lines of a pytest run."""
    lines = stdout.splitlines()
    picked = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    picked += [ln for ln in lines if ln.startswith("E  ")]
    if not picked:  # no pytest failure report at all (crash, usage error): show the tails
        picked = ["(no FAILED/ERROR lines; output tail)"] + lines[-15:] + stderr.splitlines()[-15:]
    return picked[:limit]


def cv_pct(values: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    mean = statistics.mean(values)
    return 100.0 * statistics.stdev(values) / mean if mean else float("nan")


def short(test: str) -> str:
    return test.split("::", 1)[-1]


def stability(args: argparse.Namespace, cache_dir: str, work: Path, total: c.OthersLoad) -> tuple[bool, str]:
    print(f"== 1. stability: {args.runs} runs with --tfopt-report ==", flush=True)
    per_row: dict[tuple[str, str, str], dict[str, list]] = {}
    run_rows, codes, bad_runs = [], set(), 0
    for i in range(1, args.runs + 1):
        report = work / f"run{i}.json"
        cmd = [args.python, "-m", "pytest", args.suite, "-p", "no:randomly", f"--tfopt-cache-dir={cache_dir}",
               f"--tfopt-report={report}", "-q"]
        r = run_suite(cmd, total, args.quiet_wait, args.verbose)
        codes.add(r["code"])
        n_lat = 0
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError) as exc:
            data = {"rows": []}
            bad_runs += 1
            print(f"  run {i}: no readable report ({exc}); exit {r['rc']}")
            for ln in failure_lines(r["stdout"], r["stderr"]):
                print(f"    {ln}")
        for row in data.get("rows", []):
            if row.get("latency_b1_p50_ms") is None:
                continue
            n_lat += 1
            key = (row["test"], row["variant"], row["backend"])
            d = per_row.setdefault(key, {"p50": [], "p95": [], "sig": []})
            d["p50"].append(float(row["latency_b1_p50_ms"]))
            d["p95"].append(float(row["latency_b1_p95_ms"]))
            d["sig"].append((row["latency_b1_p50_ms"], row["latency_b1_p95_ms"], row.get("latency_b1_n")))
        run_rows.append([f"run {i}", str(r["rc"]), f"{r['wall']:.1f}", str(r["built"]), str(n_lat), r["outcome"],
                         r["code"], r["others"].text()])
        print(f"  run {i}: exit {r['rc']}, {r['wall']:.1f} s, others' load {r['others'].text()}", flush=True)
    print()
    print(c.table(["run", "exit", "wall s", "built", "latency rows", "pytest result", "code", "others' load"],
                  run_rows))
    if len(codes) > 1:
        print(f"\nWARNING: pytest_tfopt sources changed during the runs (hashes {sorted(codes)})")

    if not per_row:
        print("\nno row with latency in any report")
        return False, "TARGET NOT MET: stability: no latency rows to compare"

    # rows whose numbers are identical in every run share one (memoized) measurement
    keys = sorted(per_row)
    same_as: dict[tuple[str, str, str], str] = {}
    for j, k in enumerate(keys):
        for earlier in keys[:j]:
            if earlier not in same_as and per_row[earlier]["sig"] == per_row[k]["sig"]:
                same_as[k] = short(earlier[0])
                break
    table_rows, p95_rows, cvs = [], [], []
    for k in keys:
        d = per_row[k]
        p50, p95 = d["p50"], d["p95"]
        cv50, cv95 = cv_pct(p50), cv_pct(p95)
        note = f"= {same_as[k]}" if k in same_as else ""
        if k not in same_as:
            cvs.append(cv50)
        table_rows.append([short(k[0]), k[1], k[2], str(len(p50)), f"{c.median(p50):.4f}", f"{cv50:.1f}",
                           f"{min(p50):.4f}", f"{max(p50):.4f}", note])
        p95_rows.append([short(k[0]), k[1], str(len(p95)), f"{c.median(p95):.4f}", f"{cv95:.1f}",
                         f"{min(p95):.4f}", f"{max(p95):.4f}", " ".join(f"{v:.3f}" for v in p95)])
    print()
    print(c.table(["row (test)", "variant", "backend", "runs", "median p50 ms", "CV %", "min p50 ms",
                   "max p50 ms", "shares measurement with"], table_rows))
    print()
    print(c.table(["row (test)", "variant", "runs", "median p95 ms", "CV %", "min p95 ms", "max p95 ms",
                   "p95 per run (ms)"], p95_rows))
    print("\np50 per run (ms):")
    for k in keys:
        if k not in same_as:
            print(f"  {short(k[0])}: " + " ".join(f"{v:.4f}" for v in per_row[k]["p50"]))

    med_cv = c.median(cvs)
    met = med_cv <= args.max_cv and bad_runs == 0 and all(len(per_row[k]["p50"]) == args.runs for k in keys)
    print(f"\nmedian CV of p50 over {len(cvs)} distinct measurements: {med_cv:.1f} % (target <= {args.max_cv:g} %); "
          f"others' load over the stability runs: {total.text()}")
    verdict = (f"TARGET {'MET' if met else 'NOT MET'}: stability: median CV of p50 {med_cv:.1f} % over {args.runs} runs "
               f"(needs <= {args.max_cv:g} %{'' if bad_runs == 0 else f'; {bad_runs} runs without a report'})")
    return met, verdict


def flakes(args: argparse.Namespace, cache_dir: str, total: c.OthersLoad) -> tuple[bool, str]:
    print(f"\n== 2. flake rate: {args.flake_runs} runs with default settings ==", flush=True)
    cmd = [args.python, "-m", "pytest", args.suite, f"--tfopt-cache-dir={cache_dir}"]
    print("command: " + " ".join(cmd))
    rows, failed, codes = [], [], set()
    for i in range(1, args.flake_runs + 1):
        r = run_suite(cmd, total, args.quiet_wait, args.verbose)
        codes.add(r["code"])
        rows.append([f"run {i}", str(r["rc"]), f"{r['wall']:.1f}", r["outcome"], r["code"], r["others"].text()])
        print(f"  run {i}: exit {r['rc']}, {r['wall']:.1f} s, others' load {r['others'].text()}", flush=True)
        if r["rc"] != 0:
            failed.append((i, r))
    print()
    print(c.table(["run", "exit", "wall s", "pytest result", "code", "others' load"], rows))
    if len(codes) > 1:
        print(f"\nWARNING: pytest_tfopt sources changed during the runs (hashes {sorted(codes)})")
    for i, r in failed:
        print(f"\nrun {i} failed (exit {r['rc']}, others' load {r['others'].text()}):")
        for ln in failure_lines(r["stdout"], r["stderr"]):
            print(f"  {ln}")
    print(f"\nfailing runs: {len(failed)}/{args.flake_runs}; others' load over all runs so far: {total.text()}")
    met = not failed
    return met, (f"TARGET {'MET' if met else 'NOT MET'}: flake rate: {len(failed)}/{args.flake_runs} runs failed "
                 f"(needs 0)")


def main(argv: list[str] | None = None) -> int:
    global SRC_ROOT
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tfopt-bench-stability-"))
    if not args.live:
        SRC_ROOT = snapshot(work)
    ran_hash = source_hash()
    print(f"bench_stability: {c.machine_line()}")
    print(f"pytest_tfopt sources {ran_hash} "
          f"({'live working tree' if args.live else f'a copy of the working tree taken now, {SRC_ROOT}'})")
    if not args.live:  # make sure the runs import the copy, not the editable install
        where = subprocess.run([args.python, "-c", "import pytest_tfopt.plugin as m; print(m.__file__)"],
                               cwd=c.ROOT, env=run_env(), capture_output=True, text=True).stdout.strip()
        print(f"pytest_tfopt.plugin imported from {where or '?'}")
        if not where.startswith(str(SRC_ROOT)):
            print("WARNING: the runs do not import the copy; results are for the live tree")
    cache_dir = args.cache_dir or str(work / "cache")
    total = c.OthersLoad()
    try:
        print(f"warming the shared cache {cache_dir} ...", flush=True)
        warm = run_suite([args.python, "-m", "pytest", args.suite, "-p", "no:randomly",
                          f"--tfopt-cache-dir={cache_dir}", "-q"], c.OthersLoad(), 0, args.verbose)
        print(f"  warm-up: exit {warm['rc']}, {warm['wall']:.1f} s, built {warm['built']}, {warm['outcome']}, "
              f"others' load {warm['others'].text()}\n", flush=True)
        if warm["rc"] != 0:
            for ln in failure_lines(warm["stdout"], warm["stderr"]):
                print(f"  {ln}")
        verdicts = []
        if args.runs > 0:
            verdicts.append(stability(args, cache_dir, work, total)[1])
        if args.flake_runs > 0:
            verdicts.append(flakes(args, cache_dir, total)[1])
    finally:
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nothers' load over all measured runs: {total.text()} cores")
    if not args.live and source_hash(c.ROOT) != ran_hash:
        print(f"note: the working tree's pytest_tfopt/ changed during the benchmark (now {source_hash(c.ROOT)}); "
              f"the runs used the copy taken at the start")
    print()
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
