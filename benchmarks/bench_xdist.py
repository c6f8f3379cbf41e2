"""pytest-xdist: ``-n 2 --dist loadgroup`` and ``-n 2`` (plain load) vs ``-n 0``, cold and warm, and where the time goes.

Two suites, each run in subprocesses (``python -m pytest SUITE -p no:cacheprovider -p no:randomly``):

* ``examples``: the example suite (``pytest examples``: the digits CNN and, in ``examples/multitask``, the
  multi-task model);
* ``mobilenet``: a suite generated in a temp directory on ``models/mobilenet_v2_035_96.h5`` with the digits
  upscaled to 96x96 RGB (as in bench_backends.py: 400 train, 200 test samples), ``--variants`` (default
  dynamic,float16,int8), two tests per variant (a size + accuracy-drop budget, a p95 latency budget), so the
  two tests of one variant share an artifact.

For each repeat and each mode (``-n 0``, ``-n 2 --dist loadgroup``, ``-n 2``; the order rotates between
repeats) a **cold** run (fresh ``--tfopt-cache-dir``) and right after it a **warm** run (the same cache, nothing
changed). Medians over ``--repeats``. Each run's ``artifacts: N built (X s), M reused`` line gives the build
seconds (summed over the workers under xdist). A probe plugin (``PYTEST_PLUGINS``, loaded in the controller and
in every worker) records per process whether TensorFlow ended up in ``sys.modules`` and how many tests it ran.

The split, measured apart (medians of ``--repeats``):

* **TF import**: wall of ``python -c 'import tensorflow, tf_keras'`` in a fresh subprocess (the .h5 models load
  through tf_keras) minus ``python -c pass``;
* **identity cold**: in a subprocess with TensorFlow already imported, ``Workbench(model).identity`` on an
  empty cache: loading the model and hashing config + weights (every model of the suite, summed);
* **identity warm**: in a fresh subprocess, the same on a cache a cold run filled: the file's sha256 and the
  identity record (no TensorFlow).

``Σ TF+id+build`` adds, over the processes of a run, TF import (for each process that imported TensorFlow),
identity (cold or warm, for each process that ran tests) and the build seconds; under ``-n 0`` ``rest`` = wall
minus that sum (measuring, evaluation, pytest and interpreter start-up). Under ``-n 2`` the processes overlap
on the two cores, so only the sum is shown.

Run:  python benchmarks/bench_xdist.py [--repeats 3] [--suites examples,mobilenet] [--quiet-wait 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import _common as c
import numpy as np

MOBILENET_MODEL = c.ROOT / "models" / "mobilenet_v2_035_96.h5"
MODES = {"-n 0": ["-n", "0"], "-n 2 loadgroup": ["-n", "2", "--dist", "loadgroup"], "-n 2 load": ["-n", "2"]}
SUMMARY = re.compile(r"artifacts: (\d+) built \(([\d.]+) s\), (\d+) reused")
RESULT = re.compile(r"=+ (.*\b(?:passed|failed|error|skipped)\b.*) in [\d.]+s")

PROBE = '''
"""Benchmark probe: per pytest process, did TensorFlow get imported, how many tests ran."""
import json, os, sys

_ran = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        _ran.append(report.nodeid)


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput") or not session.config.pluginmanager.has_plugin("dsession"):
        who = getattr(session.config, "workerinput", {}).get("workerid", "main")
    else:
        who = "controller"
    doc = {"who": who, "tf": "tensorflow" in sys.modules, "tests": len(_ran) if who != "controller" else 0}
    with open(os.path.join(os.environ["TFOPT_PROBE_OUT"], who + ".json"), "w") as fh:
        json.dump(doc, fh)
'''

MOBILENET_SUITE = '''
import pytest


@pytest.mark.max_size_kb(1200)
@pytest.mark.max_accuracy_drop(0.10)
def test_mobilenet_size_and_accuracy(optimized_model):
    assert optimized_model.size_bytes > 0


@pytest.mark.max_latency_ms(50.0, percentile=95)
def test_mobilenet_latency(optimized_model):
    assert optimized_model.latency().p95_ms > 0
'''

IDENTITY = '''
import json, sys, time
if sys.argv[1] == "cold":
    import tensorflow, tf_keras  # noqa: F401  (imported first: the TF import is timed apart)
from pytest_tfopt import Workbench
out = {}
for model in sys.argv[3:]:
    t0 = time.perf_counter()
    ident = Workbench(model, cache_dir=sys.argv[2]).identity
    out[model] = time.perf_counter() - t0
print(json.dumps({"seconds": sum(out.values()), "tf": "tensorflow" in sys.modules, "hash": ident.hash[:12]}))
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="cold/warm pairs per suite and mode (default 3)")
    p.add_argument("--suites", default="examples,mobilenet", help="comma list of examples, mobilenet")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--variants", default="dynamic,float16,int8", help="mobilenet suite variants")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="before each run wait up to this many seconds for the cores to be idle; 0 = don't")
    p.add_argument("--verbose", action="store_true", help="print each run's output tail")
    return p.parse_args(argv)


def make_mobilenet_suite(work: Path, variants: str) -> None:
    import bench_backends as bb  # its digits96 (the training script's upscaling)

    with np.load(c.DIGITS_DATA) as d:
        np.savez(work / "digits96.npz", x_train=bb.digits96(d["x_train"][:400]), y_train=d["y_train"][:400],
                 x_test=bb.digits96(d["x_test"][:200]), y_test=d["y_test"][:200])
    (work / "pytest.ini").write_text(textwrap.dedent(f"""\
        [pytest]
        tfopt_model = {MOBILENET_MODEL}
        tfopt_dataset = digits96.npz
        tfopt_variants = {variants}
        tfopt_calibration_size = 100
        """))
    (work / "test_mobilenet.py").write_text(MOBILENET_SUITE)


def run_pytest(suite: str, cwd: Path, mode: str, cache: str, probe_dir: Path, args: argparse.Namespace) -> dict:
    if args.quiet_wait > 0:
        c.wait_for_quiet(args.quiet_wait)
    out_dir = Path(tempfile.mkdtemp(prefix="probe-", dir=probe_dir))
    cmd = [sys.executable, "-m", "pytest", suite, "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--tfopt-cache-dir={cache}", *MODES[mode]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTEST_PLUGINS": "tfopt_xdist_probe",
           "PYTHONPATH": os.pathsep.join([str(probe_dir), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "TFOPT_PROBE_OUT": str(out_dir)}
    others = c.OthersLoad()
    others.start()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    others.stop()
    if args.verbose or SUMMARY.search(proc.stdout) is None:
        print(proc.stdout[-2500:] + proc.stderr[-1500:])
    m, res = SUMMARY.search(proc.stdout), RESULT.search(proc.stdout)
    procs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    return {"wall": wall, "built": int(m.group(1)) if m else None, "build_s": float(m.group(2)) if m else 0.0,
            "reused": int(m.group(3)) if m else None, "result": res.group(1) if res else f"exit {proc.returncode}",
            "procs": procs, "others": others.cores}


def time_cmd(code: list[str], repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *code], check=True, capture_output=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        walls.append(time.perf_counter() - t0)
    return c.median(walls)


def identity_seconds(kind: str, cache: str, models: list[str], repeats: int) -> tuple[float, bool]:
    """Median seconds of ``Workbench(model).identity`` over the models (``kind`` cold: empty cache, TF imported
    first; warm: ``cache``, a filled one); and whether TensorFlow was imported."""
    runs = []
    for _ in range(repeats):
        where = tempfile.mkdtemp(prefix="tfopt-xdist-id-") if kind == "cold" else cache
        try:
            out = subprocess.run([sys.executable, "-c", IDENTITY, kind, where, *models], check=True,
                                 capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        finally:
            if kind == "cold":
                shutil.rmtree(where, ignore_errors=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return c.median([r["seconds"] for r in runs]), any(r["tf"] for r in runs)


def suite_runs(name: str, args: argparse.Namespace, probe_dir: Path) -> tuple[dict, str | None]:
    """{(mode, cold|warm): [run, ...]} over the repeats; and a cold-filled cache kept for the identity timing."""
    cwd, suite = c.ROOT, "examples"
    if name == "mobilenet":
        cwd = Path(tempfile.mkdtemp(prefix="tfopt-xdist-suite-", dir=probe_dir))
        make_mobilenet_suite(cwd, args.variants)
        suite = "test_mobilenet.py"
    modes = [m.strip() for m in args.modes.split(",")]
    runs: dict[tuple[str, str], list[dict]] = {}
    kept = None
    for i in range(args.repeats):
        for mode in modes[i % len(modes):] + modes[:i % len(modes)]:  # rotate the order between repeats
            cache = tempfile.mkdtemp(prefix="tfopt-xdist-cache-", dir=probe_dir)
            for kind in ("cold", "warm"):
                r = run_pytest(suite, cwd, mode, cache, probe_dir, args)
                runs.setdefault((mode, kind), []).append(r)
                print(f"  {name} repeat {i + 1} {mode} {kind}: {r['wall']:.1f} s, built {r['built']} "
                      f"({r['build_s']:.1f} s), {procs_text(r['procs'])}, {r['result']}", flush=True)
            if kept is None:
                kept = cache
            else:
                shutil.rmtree(cache, ignore_errors=True)
    return runs, kept


def procs_text(procs: list[dict]) -> str:
    """``gw0 TF 4t, gw1 - 3t`` (TF: TensorFlow was imported; Nt: tests run); the controller is ``ctl``."""
    parts = []
    for p in procs:
        who = "ctl" if p["who"] == "controller" else p["who"]
        parts.append(f"{who} {'TF' if p['tf'] else '-'}" + ("" if who == "ctl" else f" {p['tests']}t"))
    return ", ".join(parts) or "no probe"


def table_rows(name: str, runs: dict, split: dict) -> list[list[str]]:
    rows = []
    for (mode, kind), rs in runs.items():
        wall = c.median([r["wall"] for r in rs])
        build = c.median([r["build_s"] for r in rs])
        tf_procs = c.median([sum(p["tf"] for p in r["procs"]) for r in rs])
        test_procs = c.median([sum(p["tests"] > 0 for p in r["procs"]) for r in rs])
        work = tf_procs * split["tf"] + test_procs * split[f"id_{kind}"] + build
        rest = f"{wall - work:.1f}" if mode == "-n 0" else "-"
        others = [r["others"] for r in rs if r["others"] is not None]
        rows.append([f"{name} {mode} {kind}", f"{wall:.1f}", f"{rs[0]['built']}/{rs[0]['reused']}", f"{build:.1f}",
                     f"{tf_procs:g} of {test_procs:g}", f"{work:.1f}", rest, procs_text(rs[0]["procs"]),
                     rs[0]["result"], f"{max(others):.2f}" if others else "-"])
    return rows


def speedups(name: str, runs: dict) -> list[str]:
    lines = []
    for kind in ("cold", "warm"):
        base = runs.get(("-n 0", kind))
        for mode in ("-n 2 loadgroup", "-n 2 load"):
            if base and (mode, kind) in runs:
                ratio = c.median([b["wall"] / r["wall"] for b, r in zip(base, runs[(mode, kind)], strict=False)])
                lines.append(f"{name} {kind}: -n 0 / {mode} = {ratio:.2f}x (paired by repeat, median)")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    if "mobilenet" in suites and not MOBILENET_MODEL.exists():
        print(f"skipping mobilenet: {MOBILENET_MODEL} is missing (make it with models/train_mobilenet_v2.py)")
        suites.remove("mobilenet")
    print(f"bench_xdist: {c.machine_line()}; load average {os.getloadavg()[0]:.2f} (1 min); "
          f"repeats {args.repeats}\n")
    probe_dir = Path(tempfile.mkdtemp(prefix="tfopt-xdist-"))
    rows, notes, split_rows = [], [], []
    try:
        (probe_dir / "tfopt_xdist_probe.py").write_text(PROBE)
        bare = time_cmd(["-c", "pass"], args.repeats)
        tf_s = time_cmd(["-c", "import tensorflow, tf_keras"], args.repeats) - bare
        tf_only = time_cmd(["-c", "import tensorflow"], args.repeats) - bare
        split_rows += [["python -c 'import tensorflow'", f"{tf_only:.2f}"],
                       ["python -c 'import tensorflow, tf_keras' (TF import)", f"{tf_s:.2f}"],
                       ["python -c pass (subtracted)", f"{bare:.2f}"]]
        for name in suites:
            runs, cache = suite_runs(name, args, probe_dir)
            models = [str(MOBILENET_MODEL)] if name == "mobilenet" else [
                str(c.DIGITS_MODEL), str(c.ROOT / "models" / "diabetes_multitask.keras")]
            id_cold, _ = identity_seconds("cold", "", models, args.repeats)
            id_warm, warm_tf = identity_seconds("warm", cache or "", models, args.repeats)
            split = {"tf": tf_s, "id_cold": id_cold, "id_warm": id_warm}
            split_rows += [[f"{name}: identity cold (load + hash)", f"{id_cold:.2f}"],
                           [f"{name}: identity warm (sha256 + record){' TF!' if warm_tf else ''}", f"{id_warm:.3f}"]]
            rows += table_rows(name, runs, split)
            notes += speedups(name, runs)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    print()
    print(c.table(["time split, measured apart (median)", "s"], split_rows))
    print()
    print(c.table(["suite mode run", "wall s", "built/reused", "build s", "TF procs", "Σ TF+id+build", "rest s",
                   "processes (repeat 1)", "pytest result", "others' load"], rows))
    print("(medians over repeats; build s summed over workers; TF procs: processes that imported TensorFlow, of "
          "those that ran tests; others' load: max over repeats, cores)")
    print()
    print("\n".join(notes))
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
