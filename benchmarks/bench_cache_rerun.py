"""Artifact cache: a cold run of the example suite vs a rerun with nothing changed.

Runs ``python -m pytest examples -p no:randomly --tfopt-cache-dir=<fresh temp dir>`` twice in
subprocesses (the venv's Python, from the repository root): cold (empty cache), then warm (same
cache, nothing changed). Measures each run's wall clock and parses the plugin's summary line
``artifacts: N built (X s), M reused`` from stdout. ``--repeats`` does that many cold/warm pairs,
each with its own fresh cache directory, and reports the medians.

On a shared machine each case first waits (up to ``--quiet-wait`` s) for other processes to
leave the cores idle, and the ``others' load`` column reports how many cores other processes
kept busy while it was measured (about 1.0 on 2 cores = one core was taken the whole time).

Target: the warm run builds no artifact (N = 0), and its wall time drops by at least the cold
run's conversion time: (cold wall - warm wall) >= cold conversion seconds X. With several pairs
the verdict uses the median over pairs of (cold - warm) / X, each pair's runs back to back.

Run:  python benchmarks/bench_cache_rerun.py [--repeats 3] [--python /work/venv/bin/python]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c

SUMMARY = re.compile(r"artifacts: (\d+) built \(([\d.]+) s\), (\d+) reused")
RESULT = re.compile(r"=+ (.*\b(?:passed|failed|error|skipped)\b.*) in [\d.]+s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="cold/warm pairs, each with a fresh cache (default 3)")
    p.add_argument("--python", default=sys.executable, help="interpreter running pytest (default: this one)")
    p.add_argument("--suite", default="examples", help="test path, relative to the repository root (default examples)")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="before each run, wait up to this many seconds for other processes to leave the cores "
                        "idle (under 0.25 cores busy for 2 s); 0 = don't wait (default 30)")
    p.add_argument("--keep", action="store_true", help="keep the temp cache directories")
    p.add_argument("--verbose", action="store_true", help="print each run's pytest output")
    return p.parse_args(argv)


def run_suite(python: str, suite: str, cache_dir: str, verbose: bool, quiet_wait: float) -> dict[str, object]:
    if quiet_wait > 0:
        c.wait_for_quiet(quiet_wait)
    cmd = [python, "-m", "pytest", suite, "-p", "no:randomly", f"--tfopt-cache-dir={cache_dir}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    others = c.OthersLoad()
    others.start()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=c.ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    others.stop()
    if verbose:
        print(proc.stdout)
    m = SUMMARY.search(proc.stdout)
    outcome = RESULT.search(proc.stdout)
    log = Path(cache_dir) / "builds.log"
    return {
        "wall": wall,
        "rc": proc.returncode,
        "built": int(m.group(1)) if m else None,
        "build_s": float(m.group(2)) if m else None,
        "reused": int(m.group(3)) if m else None,
        "outcome": outcome.group(1) if outcome else "?",
        "log_lines": len(log.read_text().splitlines()) if log.exists() else 0,
        "others": others,
        "tail": proc.stdout[-1500:] + proc.stderr[-1500:],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"bench_cache_rerun: {c.machine_line()}")
    print(f"command: {args.python} -m pytest {args.suite} -p no:randomly --tfopt-cache-dir=<fresh dir>  "
          f"(cwd {c.ROOT})\n")
    rows, pairs = [], []
    for i in range(args.repeats):
        cache_dir = tempfile.mkdtemp(prefix="tfopt-bench-cache-")
        try:
            cold = run_suite(args.python, args.suite, cache_dir, args.verbose, args.quiet_wait)
            log_after_cold = cold["log_lines"]
            warm = run_suite(args.python, args.suite, cache_dir, args.verbose, args.quiet_wait)
        finally:
            if not args.keep:
                shutil.rmtree(cache_dir, ignore_errors=True)
        for name, r in (("cold", cold), ("warm", warm)):
            if r["built"] is None:
                print(f"pair {i + 1} {name}: no 'artifacts: ...' summary line (exit {r['rc']}); output tail:\n{r['tail']}")
        warm_new_builds = warm["log_lines"] - log_after_cold  # builds.log lines the warm run appended
        pairs.append((cold, warm, warm_new_builds))
        for name, r in (("cold", cold), ("warm", warm)):
            rows.append([f"pair {i + 1} {name}", f"{r['wall']:.1f}", str(r["built"]), _fmt(r["build_s"], ".1f"),
                         str(r["reused"]), str(r["rc"]), str(r["outcome"]), r["others"].text()])
        print(f"  pair {i + 1}: cold {cold['wall']:.1f} s, warm {warm['wall']:.1f} s", flush=True)

    print()
    print(c.table(["run", "wall s", "built", "conversion s", "reused", "exit", "pytest result", "others' load"], rows))

    ok_pairs = [(cold, warm, extra) for cold, warm, extra in pairs if cold["built"] is not None and warm["built"] is not None]
    if not ok_pairs:
        print("\nTARGET NOT MET: could not parse the summary line (see the output above)")
        return 0
    cold_wall = c.median([p[0]["wall"] for p in ok_pairs])
    warm_wall = c.median([p[1]["wall"] for p in ok_pairs])
    conv = c.median([p[0]["build_s"] for p in ok_pairs])
    # paired, per cold/warm pair (the two runs are back to back), then the median over pairs
    saved = c.median([p[0]["wall"] - p[1]["wall"] for p in ok_pairs])
    ratio = c.median([(p[0]["wall"] - p[1]["wall"]) / p[0]["build_s"] for p in ok_pairs if p[0]["build_s"]] or [0.0])
    no_builds = all(p[1]["built"] == 0 and p[2] == 0 for p in ok_pairs)
    drop_ok = ratio >= 1.0
    print()
    print(c.table(["median over pairs", "value"], [
        ["cold wall s", f"{cold_wall:.1f}"],
        ["warm wall s", f"{warm_wall:.1f}"],
        ["cold conversion s", f"{conv:.1f}"],
        ["cold - warm s (paired)", f"{saved:.1f}"],
        ["(cold - warm) / conversion (paired)", f"{ratio:.2f}"],
        ["pairs with (cold - warm) >= conversion",
         f"{sum(p[0]['wall'] - p[1]['wall'] >= p[0]['build_s'] for p in ok_pairs)}/{len(ok_pairs)}"],
        ["cold built / reused", f"{ok_pairs[0][0]['built']} / {ok_pairs[0][0]['reused']}"],
        ["warm built / reused", f"{ok_pairs[0][1]['built']} / {ok_pairs[0][1]['reused']}"],
        ["warm builds in builds.log", str(sum(p[2] for p in ok_pairs))],
        ["(cold - warm) >= conversion", "yes" if drop_ok else "NO"],
    ]))
    met = no_builds and drop_ok
    print(f"\nTARGET {'MET' if met else 'NOT MET'}: warm rerun built {'no' if no_builds else 'some'} artifacts; "
          f"it saved {saved:.1f} s for {conv:.1f} s of cold conversion (ratio {ratio:.2f}, needs >= 1.00)")
    return 0


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
