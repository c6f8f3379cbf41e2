"""ONNX Runtime per-node profile, from ONNX Runtime's own profiler (``SessionOptions.enable_profiling``).

A session of its own (the judged session is never profiled) runs the batch :data:`RUNS` times after warm-up;
ONNX Runtime writes one ``*_kernel_time`` event per node and run (``dur`` in µs, ``args.op_name``,
``args.provider``) and one ``model_run`` event per run. A node's time is its mean kernel time over the timed runs;
``model_ms`` is the mean ``model_run`` duration (the session's own overhead between kernels included). In a
quantized (QDQ) graph the int8 kernels (``QLinearConv``, ``ConvInteger``, ...) are the fast ones; a float compute op
left between ``DequantizeLinear``/``QuantizeLinear`` fell back to float.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from ..backends.onnx import OnnxRuntimeRunner
from .profile import QUANT_OPS, OpTime, Profile

WARM_UP, RUNS = 3, 20
#: float compute ops that have an int8 kernel: in a quantized graph, these ran in float
_HAS_INT8_KERNEL = frozenset({"Conv", "MatMul", "Gemm", "ConvTranspose", "Add", "Mul", "AveragePool",
                              "GlobalAveragePool", "Sigmoid", "LeakyRelu", "Softmax", "Concat"})
METHOD = "ONNX Runtime profiler: mean kernel time per node"


def _fast(op_type: str, quantized: bool) -> bool | None:
    if not quantized:
        return None
    if op_type.startswith("QLinear") or op_type.endswith("Integer") or op_type in ("QGemm", "QAttention"):
        return True
    return False if op_type in _HAS_INT8_KERNEL else None


def profile(content: bytes, threads: int, x: Any, variant: str) -> Profile:
    """The per-node profile of the ONNX ``content`` on input batch ``x`` (ms per inference)."""
    with tempfile.TemporaryDirectory(prefix="tfopt-ort-profile-") as tmp:
        runner = OnnxRuntimeRunner(content, threads, name=variant, profile_prefix=os.path.join(tmp, "ort"))
        invoke = runner.prepare(x)
        for _ in range(WARM_UP + RUNS):
            invoke()
        with open(runner.end_profiling(), encoding="utf-8") as fh:
            events = json.load(fh)
    runs = [e for e in events if e.get("name") == "model_run"][-RUNS:]
    start = runs[0]["ts"] if runs else 0
    nodes: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < start:
            continue
        args = e.get("args", {})
        name = e["name"][: -len("_kernel_time")]
        node = nodes.setdefault(name, {"type": args.get("op_name", "?"), "us": 0.0,
                                       "kernel": args.get("provider", "?")})
        node["us"] += float(e.get("dur", 0))
    n = max(1, len(runs))
    quantized = any(v["type"] in QUANT_OPS for v in nodes.values())
    ops = tuple(OpTime(v["type"], k, v["us"] / 1000 / n, v["kernel"], _fast(v["type"], quantized), v["type"] in QUANT_OPS)
                for k, v in nodes.items())
    model_ms = sum(float(e.get("dur", 0)) for e in runs) / 1000 / n
    return Profile(variant, "onnxruntime", METHOD, ops, model_ms, len(runs))
