"""OpenVINO per-node profile, from the CPU plugin's own counters (``PERF_COUNT``).

A model compiled anew with ``PERF_COUNT: True`` (the judged one is never profiled) runs the batch :data:`WARM_UP`
then :data:`RUNS` more times. The infer request's ``get_profiling_info()`` gives, per node, its ``real_time``, its
type and ``exec_type`` — the implementation that ran it (``jit_avx512_I8``, ``brgconv_avx512_amx_FP32``, ...;
``ref_*`` is the plugin's reference implementation: a fallback). The CPU plugin reports each node's *mean* time
over every inference since compiling, in whole µs (measured: the figures decay run after run from the slow first
inference), so a node's time over the timed runs alone is ``((W + R) * mean_after - W * mean_before) / R``. Nodes
fused away or not run are left out. ``model_ms`` is the mean wall time of ``infer()`` with the counters on.
"""

from __future__ import annotations

import time
from typing import Any

from ..backends.openvino import OpenVINORunner
from .profile import QUANT_OPS, OpTime, Profile

WARM_UP, RUNS = 5, 50
METHOD = "OpenVINO PERF_COUNT: mean real time per executed node"


def _counters(runner: OpenVINORunner) -> dict[str, tuple[str, str, float]]:
    """Executed node name → (type, exec type, mean real time ms since compiling)."""
    return {info.node_name: (info.node_type, info.exec_type, info.real_time.total_seconds() * 1000)
            for info in runner.profiling_info() if str(info.status).rsplit(".", 1)[-1] == "EXECUTED"}


def profile(content: bytes, threads: int, x: Any, variant: str) -> Profile:
    """The per-node profile of the OpenVINO IR zip ``content`` on input batch ``x`` (ms per inference)."""
    import openvino as ov

    runner = OpenVINORunner(content, ov.Core(), threads, name=variant, extra_config={"PERF_COUNT": True})
    invoke = runner.prepare(x)
    for _ in range(WARM_UP):
        invoke()
    before = _counters(runner)
    start = time.perf_counter()
    for _ in range(RUNS):
        invoke()
    wall = time.perf_counter() - start
    after = _counters(runner)
    ops = []
    for name, (kind, kernel, mean) in after.items():
        warm = before.get(name, (kind, kernel, 0.0))[2]
        ms = max(0.0, ((WARM_UP + RUNS) * mean - WARM_UP * warm) / RUNS)
        ops.append(OpTime(kind, name, ms, kernel, not kernel.startswith("ref"), kind in QUANT_OPS))
    return Profile(variant, "openvino", METHOD, tuple(ops), wall * 1000 / RUNS, RUNS)
