"""Helpers shared by the benchmark scripts (not a benchmark itself).

Each ``bench_*.py`` puts this directory on ``sys.path`` (Python does that for a
script run as ``python benchmarks/NAME.py``) and imports from here.
"""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ logging before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIGITS_MODEL = ROOT / "models" / "digits_cnn.h5"
DIGITS_DATA = ROOT / "fixtures" / "digits.npz"

COMPUTE_INPUT = (32, 32, 3)


def build_compute_cnn(seed: int = 0) -> Any:
    """A compute-bound tf_keras CNN with random weights, 56,970 parameters.

    Input(32, 32, 3) -> Conv2D(32, 3, relu, same) -> Conv2D(64, 3, relu, same)
    -> MaxPool(2) -> Conv2D(64, 3, relu, same) -> GlobalAveragePooling -> Dense(10).
    About 29 M multiply-adds per sample, nearly all in the two full-resolution convs.
    """
    import tensorflow as tf  # noqa: F401  (tf_keras needs TensorFlow loaded first)
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    layers = tf_keras.layers
    inputs = tf_keras.Input(COMPUTE_INPUT, name="image")
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(inputs)
    x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name="compute_cnn")


def compute_dataset(n_train: int = 200, n_test: int = 256, seed: int = 0) -> Any:
    """Seeded random inputs in [0, 1) and random labels for the compute-bound CNN."""
    from pytest_tfopt import Dataset

    rng = np.random.default_rng(seed)
    x_train = rng.random((n_train, *COMPUTE_INPUT), dtype=np.float32)
    x_test = rng.random((n_test, *COMPUTE_INPUT), dtype=np.float32)
    y_train = rng.integers(0, 10, n_train)
    y_test = rng.integers(0, 10, n_test)
    return Dataset.from_arrays(x_train, y_train, x_test=x_test, y_test=y_test)


def bare_interpreter(runnable: Any, threads: int) -> Any:
    """A LiteRT interpreter on the same artifact bytes as ``runnable``, same delegate choice."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs: dict[str, Any] = {"model_content": runnable.artifact.content, "num_threads": threads}
    if runnable.info.get("delegate") == "builtin":  # the plugin fell back from XNNPACK: do the same
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(**kwargs)
    interp.allocate_tensors()
    return interp


def bare_latency_ns(interp: Any, x: np.ndarray, warmup_runs: int, min_runs: int, min_time_s: float,
                    max_runs: int, max_time_s: float) -> list[int]:
    """Set ``x`` once, then time ``interp.invoke()`` one call at a time with ``perf_counter_ns``."""
    inp = interp.get_input_details()[0]
    if tuple(inp["shape"]) != tuple(x.shape):
        interp.resize_tensor_input(inp["index"], list(x.shape), strict=False)
        interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    from pytest_tfopt.measure.latency import LatencySettings, sample_ns

    settings = LatencySettings(warmup_runs=warmup_runs, min_time_s=min_time_s, min_runs=min_runs,
                               max_runs=max_runs, max_time_s=max_time_s)
    return sample_ns(interp.invoke, settings)  # the plugin's own loop, so both sides are timed alike


def per_sample_predict(interp: Any, x: np.ndarray) -> np.ndarray:
    """Float outputs of ``x`` one sample at a time: set_tensor / invoke / get_tensor (float I/O only)."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    if tuple(inp["shape"][1:]) != tuple(x.shape[1:]) or int(inp["shape"][0]) != 1:
        interp.resize_tensor_input(inp["index"], [1, *x.shape[1:]], strict=False)
        interp.allocate_tensors()
        out = interp.get_output_details()[0]
    in_index, out_index = inp["index"], out["index"]
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor
    results = []
    for i in range(len(x)):
        set_tensor(in_index, x[i : i + 1])
        invoke()
        results.append(get_tensor(out_index))  # get_tensor returns a copy
    return np.concatenate(results)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def table(header: list[str], rows: list[list[str]]) -> str:
    """An aligned plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def machine_line() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    return (f"cores available: {cores}; tensorflow {version('tensorflow')}, ai-edge-litert {version('ai-edge-litert')}, "
            f"numpy {version('numpy')}")


class OthersLoad:
    """How many cores other processes kept busy while this meter ran (Linux ``/proc/stat``).

    ``(all CPUs' busy time - this process's and its children's CPU time) / wall time``: about 0 on an idle
    machine; on 2 cores, 1.0 means another process held one core the whole time. ``None``
    where ``/proc/stat`` is unavailable.
    """

    def __init__(self) -> None:
        self._busy0 = self._own0 = self._wall0 = 0.0
        self._busy = self._own = self._wall = 0.0

    @staticmethod
    def _system_busy_s() -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        t = os.times()  # children count once waited for (subprocess.run waits)
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> None:
        self._busy0 = self._system_busy_s() or 0.0
        self._own0, self._wall0 = self._own_s(), time.perf_counter()

    def stop(self) -> None:
        busy = self._system_busy_s()
        if busy is None:
            self._busy = float("nan")
            return
        self._busy += busy - self._busy0
        self._own += self._own_s() - self._own0
        self._wall += time.perf_counter() - self._wall0

    @property
    def cores(self) -> float | None:
        if not self._wall or self._busy != self._busy:
            return None
        return max(0.0, (self._busy - self._own) / self._wall)

    def text(self) -> str:
        return "-" if self.cores is None else f"{self.cores:.2f}"


def wait_for_quiet(max_wait_s: float, threshold: float = 0.25, window_s: float = 2.0) -> float | None:
    """Wait (up to ``max_wait_s``) until other processes use under ``threshold`` cores for ``window_s``.

    Returns their load over the last window (``None`` without ``/proc/stat``). On a shared
    machine this keeps a measurement from starting while another job holds a core.
    """
    deadline = time.perf_counter() + max_wait_s
    while True:
        meter = OthersLoad()
        meter.start()
        time.sleep(window_s)
        meter.stop()
        load = meter.cores
        if load is None or load < threshold or time.perf_counter() >= deadline:
            return load
