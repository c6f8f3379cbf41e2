"""TensorFlow per-op profile (backends ``tf`` and ``xla``), from the TensorFlow profiler's trace.

A runner of its own (the judged one is never profiled) runs the batch :data:`RUNS` times, after warm-up, inside
``tf.profiler.experimental.start``/``stop``; the trace (``*.xplane.pb``) holds, on the executor's threads, one event
per op kernel run, named ``<node name>:<kernel>`` (``_MklNativeFusedConv2D`` is a oneDNN kernel). An op's time is
the summed duration of its events / :data:`RUNS`; ``model_ms`` is the mean duration of the runs'
``TFE_Py_ExecuteCancelable`` events (the call from Python, executor overhead included). Under XLA the kernels of the compiled executable
(``Conv2D.2``, ``broadcast_maximum_fusion.2``: XLA's fused ops) run on the calling thread and are the ops.
Ops reading variables (``ReadVariableOp``) are kept: they run every call.
"""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any

from .. import tfenv
from ..backends.tf import TFRunner
from ..errors import BackendUnavailable, first_line
from .profile import OpTime, Profile

WARM_UP, RUNS = 3, 20
METHOD = "TensorFlow profiler: summed kernel events per op"
#: trace events of the executor and thread pools, not ops
_FRAMEWORK = ("ThreadpoolListener", "ExecutorState", "ExecutorDoneCallback")
#: the event of one run of an XLA executable on the CPU, and the kernel name its kernels get here
_XLA_RUN, _XLA = "CpuExecutable::ExecuteAsyncOnStream", "XLA"
#: the event of one call of the function on the calling thread (its duration is ``model_ms``)
_CALLER = "TFE_Py_ExecuteCancelable"


def _trace(runner: TFRunner, x: Any, logdir: str) -> Any:
    """The XSpace of :data:`RUNS` runs of ``x`` on ``runner``, after warm-up."""
    tf = tfenv.tensorflow()
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # TensorFlow's own copy of the trace schema

    invoke = runner.prepare(x)
    for _ in range(WARM_UP):
        invoke()
    try:
        tf.profiler.experimental.start(logdir)
    except Exception as exc:  # another profiler session of this process is running
        raise BackendUnavailable(f"the TensorFlow profiler cannot start: {first_line(exc)} (stop the other "
                                 "profiling session first)") from None
    try:
        for _ in range(RUNS):
            invoke()
    finally:
        tf.profiler.experimental.stop()
    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        raise BackendUnavailable("the TensorFlow profiler wrote no trace: no per-op profile on backend tf here")
    space = xplane_pb2.XSpace()
    with open(files[0], "rb") as fh:
        space.ParseFromString(fh.read())
    return space


def _xla_kernels(events: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """The XLA kernels among the Python thread's events (those inside ``CpuExecutable::ExecuteAsyncOnStream``),
    renamed ``<kernel>:XLA`` (XLA on the CPU runs its compiled kernels on the calling thread)."""
    windows = [(start, start + d) for name, start, d in events if name == _XLA_RUN]
    return [(f"{name}:{_XLA}", start, d) for name, start, d in events
            if name != _XLA_RUN and not name.startswith("end: ") and ":" not in name
            and any(lo <= start and start + d <= hi for lo, hi in windows)]


def _op_type(kernel: str, node: str) -> str:
    """``FusedConv2D`` for the oneDNN kernel ``_MklNativeFusedConv2D``; ``Conv2D`` for the XLA kernel ``Conv2D.2``."""
    if kernel == _XLA:
        return node.rsplit(".", 1)[0] if node.rsplit(".", 1)[-1].isdigit() else node
    return kernel.removeprefix("_MklNative").removeprefix("_Mkl")


def _profile(content: bytes, threads: int, x: Any, variant: str, jit_compile: bool) -> Profile:
    runner = TFRunner(content, threads, name=variant, jit_compile=jit_compile)
    try:
        with tempfile.TemporaryDirectory(prefix="tfopt-tf-profile-") as logdir:
            space = _trace(runner, x, logdir)
    finally:
        runner.close()
    nodes: dict[str, dict[str, Any]] = {}
    calls: list[float] = []
    for plane in space.planes:
        meta = plane.event_metadata
        for line in plane.lines:
            events = [(meta[e.metadata_id].name, e.offset_ps, e.duration_ps) for e in line.events]
            if any(name == _CALLER for name, _, _ in events):  # the calling (Python) thread
                calls += [d / 1e9 for name, _, d in events if name == _CALLER]
                events = _xla_kernels(events)
            for name, _, duration in events:
                if ":" not in name or ": " in name or "__inference" in name or name.startswith(_FRAMEWORK):
                    continue
                node, kernel = name.rsplit(":", 1)
                entry = nodes.setdefault(node, {"kernel": kernel, "ms": 0.0})
                entry["ms"] += duration / 1e9
    ops = tuple(OpTime(_op_type(v["kernel"], k), k.rsplit("StatefulPartitionedCall/", 1)[-1], v["ms"] / RUNS,
                       "XLA" if v["kernel"] == _XLA else "oneDNN" if v["kernel"].startswith("_Mkl") else "TensorFlow")
                for k, v in nodes.items())
    model_ms = sum(calls[-RUNS:]) / max(1, len(calls[-RUNS:]))
    return Profile(variant, "xla" if jit_compile else "tf", METHOD, ops, model_ms, RUNS)


def profile(content: bytes, threads: int, x: Any, variant: str) -> Profile:
    """The per-op profile of the packed SavedModel ``content`` on backend ``tf`` (ms per inference)."""
    return _profile(content, threads, x, variant, jit_compile=False)


def profile_xla(content: bytes, threads: int, x: Any, variant: str) -> Profile:
    """The same under XLA (backend ``xla``): the ops are the XLA executable's kernels (fusions)."""
    return _profile(content, threads, x, variant, jit_compile=True)
