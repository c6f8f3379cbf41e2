"""Per-op profiles: what each runtime's profile accounts for, and what taking it costs.

For each (model, backend, variant) it measures, one thread:

* ``judged p50``: the latency pytest-tfopt judges (``runnable.latency(1)``, no profiling);
* ``profiled whole``: the whole inference as the profile timed it (``Profile.model_ms``: with the runtime's
  counters on, or, on LiteRT, the backend's own runner before the op-by-op runs);
* ``sum of ops``: the ops' times added up (``Profile.sum_ms``) and ``sum/whole``: how much of the inference the
  per-op figures account for (LiteRT: > 1 when one-op models lose XNNPACK's fusion and pay one Python invoke
  each; TF: < 1, the executor's dispatch between kernels is in no op);
* ``profile s``: wall time to take the profile (runner creation and, on LiteRT, every one-op model included).

Models: the shipped digits CNN (models/digits_cnn.h5 + fixtures/digits.npz) on tflite, onnxruntime, openvino
and tf, and a PReLU CNN built here (5 Conv2D+PReLU blocks, 48x48x3, random weights and data) on tflite, where
int8 is slower than fp32. Every figure is the median of ``--rounds`` rounds, all in one sitting.

Run:  python benchmarks/bench_profile.py [--rounds 3] [--backends tflite,onnxruntime,openvino,tf]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time

import numpy as np
from _common import DIGITS_DATA, DIGITS_MODEL, machine_line, median, table

RUNTIME = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tf": "tensorflow", "tflite": "ai_edge_litert"}


def prelu_cnn():
    """The PReLU CNN of tests/test_explain_profile.py (int8 slower than fp32 on LiteRT), built by that module."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "test_explain_profile.py")
    spec = importlib.util.spec_from_file_location("_prelu_test_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._prelu_cnn()


def measure(bench, variant: str, backend: str, rounds: int) -> list[float]:
    """[judged p50, profiled whole, sum of ops, profile s], medians over ``rounds``."""
    from pytest_tfopt.measure.latency import LatencySettings

    model = bench.runnable(variant, backend)
    cols: list[list[float]] = [[], [], [], []]
    for _ in range(rounds):
        judged = model.latency(1, LatencySettings(min_time_s=0.3)).p50_ms
        model._profiles.clear()  # profile() memoizes: take it anew each round
        start = time.perf_counter()
        prof = model.profile()
        took = time.perf_counter() - start
        for col, value in zip(cols, (judged, prof.model_ms, prof.sum_ms, took), strict=True):
            col.append(value)
    return [median(c) for c in cols]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="tflite,onnxruntime,openvino,tf")
    args = parser.parse_args()
    from pytest_tfopt import Workbench

    cache = tempfile.mkdtemp(prefix="tfopt-bench-profile-")
    rng = np.random.default_rng(0)
    prelu_data = (rng.random((32, 48, 48, 3), dtype=np.float32), rng.integers(0, 10, 32))
    cases = [("digits", Workbench(DIGITS_MODEL, DIGITS_DATA, cache_dir=cache, threads=1), b)
             for b in args.backends.split(",") if importlib.util.find_spec(RUNTIME[b])]
    if "tflite" in args.backends:
        cases.append(("prelu", Workbench(prelu_cnn(), prelu_data, cache_dir=cache, threads=1), "tflite"))
    rows = []
    for name, bench, backend in cases:
        for variant in ("fp32",) if backend == "tf" else ("fp32", "int8"):
            judged, whole, summed, took = measure(bench, variant, backend, args.rounds)
            rows.append([name, backend, variant, f"{judged:.3f}", f"{whole:.3f}", f"{summed:.3f}",
                         f"{summed / whole:.2f}", f"{took:.2f}"])
    print(machine_line())
    print(table(["model", "backend", "variant", "judged p50 ms", "profiled whole ms", "sum of ops ms", "sum/whole",
                 "profile s"], rows))


if __name__ == "__main__":
    main()
