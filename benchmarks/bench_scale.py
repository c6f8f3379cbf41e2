"""Server-size model: raw toolchain vs the plugin cold, warm, and warm with ``--tfopt-remeasure``; peak RSS.

Builds (once, not timed) a ResNet50-architecture Keras model (``keras.applications.ResNet50(weights=None)``,
seeded: no download) and a data set of seeded random 224x224x3 images labelled by the model's own fp32
outputs (``--calibration`` training images, used for int8 calibration, ``--eval`` test images). Then
measures, each in a fresh subprocess (wall clock, and peak RSS from ``os.wait4``'s resource usage):

* raw toolchain: ``tf.lite.TFLiteConverter`` fp32 and full-int8 (the same calibration images), then a bare
  ``ai_edge_litert`` Interpreter (``--threads``) scoring top-1 on the test images one sample at a time;
* plugin cold: ``pytest`` on a one-test suite (``tfopt_variants("int8")`` with ``max_accuracy_drop``: builds
  fp32 and int8, evaluates both) with an empty ``--tfopt-cache-dir``;
* plugin warm: the same again (artifacts and measurements reused);
* plugin warm ``--tfopt-remeasure``: artifacts reused, every measurement taken again;
* the same three plugin runs for the example suite (``pytest examples``), unless ``--no-examples``.

Targets (issue #15): ResNet50 warm at least 10x faster than cold; cold within 10 % of the raw toolchain;
example suite warm at least 5x faster than cold. One run of each (a sitting), printed as one table.

Run:  python benchmarks/bench_scale.py [--calibration 100] [--eval 100] [--threads 2] [--no-examples]
"""

from __future__ import annotations

import argparse
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

SUITE = """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(1.0)
def test_resnet50_int8(optimized_model):
    pass
"""

SETUP = """
import sys
import numpy as np
import keras

n_cal, n_eval, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
keras.utils.set_random_seed(0)
model = keras.applications.ResNet50(weights=None)  # the architecture; seeded weights, nothing downloaded
model.save(f"{out}/resnet50.keras")
rng = np.random.default_rng(0)
x = rng.uniform(-1.0, 1.0, (n_cal + n_eval, 224, 224, 3)).astype(np.float32)
y = np.concatenate([model.predict(x[i:i + 20], verbose=0).argmax(-1) for i in range(0, len(x), 20)])
np.savez(f"{out}/data.npz", x_train=x[:n_cal], y_train=y[:n_cal], x_test=x[n_cal:], y_test=y[n_cal:])
print("classes among labels:", len(set(y.tolist())))
"""

RAW = """
import sys, time
import numpy as np
import keras
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

out, threads = sys.argv[1], int(sys.argv[2])
data = np.load(f"{out}/data.npz")
model = keras.models.load_model(f"{out}/resnet50.keras")

def convert(int8):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        cal = data["x_train"]
        conv.representative_dataset = lambda: ([cal[i:i + 1]] for i in range(len(cal)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()

def top1(content):
    interp = Interpreter(model_content=content, num_threads=threads)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    x, y, hits = data["x_test"], data["y_test"], 0
    for k in range(len(x)):
        sample = x[k:k + 1]
        if i["dtype"] != np.float32:
            scale, zero = i["quantization"]
            sample = np.clip(np.round(sample / scale + zero), -128, 127).astype(i["dtype"])
        interp.set_tensor(i["index"], sample)
        interp.invoke()
        hits += int(interp.get_tensor(o["index"]).argmax() == y[k])
    return hits / len(x)

for int8 in (False, True):
    t0 = time.perf_counter()
    content = convert(int8)
    t1 = time.perf_counter()
    acc = top1(content)
    print(f"{'int8' if int8 else 'fp32'}: convert {t1 - t0:.1f} s, evaluate {time.perf_counter() - t1:.1f} s, "
          f"top1 {acc:.3f}, {len(content)} bytes", flush=True)
"""

MEASUREMENTS = re.compile(r"measurements: (\d+) reused, (\d+) measured")
ARTIFACTS = re.compile(r"artifacts: (\d+) built \(([\d.]+) s\), (\d+) reused")
RESULT = re.compile(r"=+ (.*\b(?:passed|failed|error|skipped)\b.*) in [\d.]+s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calibration", type=int, default=100, help="calibration (training) images (default 100)")
    p.add_argument("--eval", type=int, default=100, help="evaluation (test) images (default 100)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads, raw and plugin (default 2)")
    p.add_argument("--no-examples", action="store_true", help="skip the example suite's runs")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="before each run, wait up to this many seconds for the cores to be idle (default 30)")
    p.add_argument("--verbose", action="store_true", help="print each run's output")
    return p.parse_args(argv)


def run(cmd: list[str], cwd: Path, quiet_wait: float, verbose: bool) -> dict[str, object]:
    """Run ``cmd``; wall seconds, peak RSS (MiB, of the process and the children it waited for), its output."""
    if quiet_wait > 0:
        c.wait_for_quiet(quiet_wait)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(c.ROOT)}
    others = c.OthersLoad()
    with tempfile.TemporaryFile("w+") as log:
        others.start()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        others.stop()  # os.times() counts the child: it was waited for
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read()
    if verbose or proc.returncode not in (0, 1):
        print(out[-3000:])
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "rc": proc.returncode, "out": out,
            "others": others.text()}


def plugin_row(name: str, r: dict[str, object]) -> list[str]:
    out = str(r["out"])
    arts, meas, res = ARTIFACTS.search(out), MEASUREMENTS.search(out), RESULT.search(out)
    return [name, f"{r['wall']:.1f}", f"{r['rss_mb']:.0f}",
            f"{arts.group(1)} built / {arts.group(3)} reused" if arts else "-",
            f"{meas.group(1)} reused / {meas.group(2)} measured" if meas else "-",
            res.group(1) if res else f"exit {r['rc']}", str(r["others"])]


def plugin_runs(label: str, suite: str, cwd: Path, args: argparse.Namespace, extra: list[str]) -> list[dict]:
    """Cold, warm and warm --tfopt-remeasure pytest runs of ``suite`` on one fresh cache."""
    cache = tempfile.mkdtemp(prefix="tfopt-scale-cache-")
    base = [sys.executable, "-m", "pytest", suite, "-p", "no:randomly", "-p", "no:cacheprovider",
            f"--tfopt-cache-dir={cache}", f"--tfopt-threads={args.threads}", *extra]
    runs = []
    try:
        for name, more in (("cold", []), ("warm", []), ("warm --tfopt-remeasure", ["--tfopt-remeasure"])):
            r = run(base + more, cwd, args.quiet_wait, args.verbose)
            runs.append({"name": f"{label}: plugin {name}", **r})
            print(f"  {label} {name}: {r['wall']:.1f} s", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"bench_scale: {c.machine_line()}; threads {args.threads}; ResNet50 (weights=None, seed 0), "
          f"{args.calibration} calibration + {args.eval} evaluation images 224x224x3\n")
    work = Path(tempfile.mkdtemp(prefix="tfopt-scale-"))
    try:
        setup = run([sys.executable, "-c", SETUP, str(args.calibration), str(args.eval), str(work)], work, 0, True)
        if setup["rc"] != 0:
            return 1
        (work / "pytest.ini").write_text(textwrap.dedent(f"""\
            [pytest]
            tfopt_model = resnet50.keras
            tfopt_dataset = data.npz
            tfopt_calibration_size = {args.calibration}
            """))
        (work / "test_scale.py").write_text(SUITE)
        raw = run([sys.executable, "-c", RAW, str(work), str(args.threads)], work, args.quiet_wait, args.verbose)
        print("  raw toolchain:", " | ".join(ln for ln in str(raw["out"]).splitlines() if ln[:5] in ("fp32:", "int8:")))
        scale = plugin_runs("ResNet50", "test_scale.py", work, args, [])
        examples = [] if args.no_examples else plugin_runs("examples", "examples", c.ROOT, args, [])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [["ResNet50: raw toolchain (convert + interpreter loop)", f"{raw['wall']:.1f}", f"{raw['rss_mb']:.0f}",
             "2 converted", "2 evaluated", f"exit {raw['rc']}", str(raw["others"])]]
    rows += [plugin_row(r["name"], r) for r in scale + examples]
    print()
    print(c.table(["run", "wall s", "peak RSS MiB", "artifacts", "measurements", "pytest result", "others' load"],
                  rows))
    print("(one run each; others' load = cores other processes kept busy during the run, 2 cores here)")
    cold, warm = scale[0]["wall"], scale[1]["wall"]
    print(f"\nResNet50: cold / raw = {cold / raw['wall']:.2f} (target <= 1.10); cold / warm = {cold / warm:.1f}x "
          f"(target >= 10); cold / warm --tfopt-remeasure = {cold / scale[2]['wall']:.1f}x")
    if examples:
        print(f"examples: cold / warm = {examples[0]['wall'] / examples[1]['wall']:.1f}x (target >= 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
