"""LiteRT per-op profile, measured op by op: the model cut into one-op models, each timed on its real inputs.

The LiteRT Python ``Interpreter`` has no profiler (nor does ``CompiledModel`` in ai-edge-litert 2.3), so:

1. the whole model is timed as the backend runs it (XNNPACK applied, the judged configuration): ``model_ms``;
2. one invocation on builtin kernels with ``experimental_preserve_all_tensors=True`` keeps every intermediate
   tensor (a delegate would not keep the ones inside its partitions);
3. every op of the main graph becomes a model of its own (its tensors, constant buffers and shapes at the run's
   shapes; flatbuffer object API), is fed the intermediates of step 2 and timed twice: with XNNPACK (LiteRT's
   default delegate; the op is *on XNNPACK* when the delegate takes it) and on the builtin kernels;
4. an op's time is its XNNPACK time when XNNPACK takes it and the whole model runs on XNNPACK, else its builtin
   time (the "reference kernels" the model falls back to).

What it does not see: fusion and cache reuse across ops inside one XNNPACK partition, and one Python ``invoke``
call per op (a few µs each); the profile's ``sum_ms`` against ``model_ms`` shows the difference. Ops that call
subgraphs (WHILE, IF, ...) are listed untimed.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from ..backends.tflite import TFLiteRunner
from ..litert import interpreter_class
from .profile import QUANT_OPS, OpTime, Profile

#: ops that call other subgraphs: they cannot be cut out alone
_CALLS_SUBGRAPHS = frozenset({"WHILE", "IF", "CALL_ONCE", "CALL", "STABLEHLO_WHILE", "STABLEHLO_CASE",
                              "STABLEHLO_REDUCE", "STABLEHLO_SCATTER", "STABLEHLO_SORT"})
#: seconds of timing per op and kernel (at least MIN_RUNS, at most MAX_RUNS invocations, in CHUNKS chunks)
TARGET_S, MIN_RUNS, MAX_RUNS, CHUNKS = 0.02, 5, 200, 5
METHOD = "LiteRT op by op: one-op models on the run's intermediate tensors, XNNPACK or builtin kernels"


def _timed(invoke: Any) -> tuple[float, int]:
    """(ms per call, calls timed): three warm-up calls, then about :data:`TARGET_S` seconds of calls in
    :data:`CHUNKS` chunks; the median of the chunks' means, so one preemption (shared cores) does not count."""
    for _ in range(2):
        invoke()
    start = time.perf_counter()
    invoke()
    once = time.perf_counter() - start
    per = max(1, int(min(MAX_RUNS, max(MIN_RUNS, TARGET_S / max(once, 1e-7)))) // CHUNKS)
    means = []
    for _ in range(CHUNKS):
        start = time.perf_counter()
        for _ in range(per):
            invoke()
        means.append((time.perf_counter() - start) * 1000 / per)
    return float(np.median(means)), per * CHUNKS


def _op_names(model: Any) -> list[str]:
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fu

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    return [names.get(fu.get_builtin_code_from_operator_code(c), "CUSTOM") for c in model.operatorCodes]


def _one_op_model(model: Any, op: Any, shapes: dict[int, tuple[int, ...]]) -> tuple[bytes, list[int]]:
    """A flatbuffer running only ``op`` of subgraph 0, and the original indices of its graph inputs, in order."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fu

    graph = model.subgraphs[0]
    used = [i for i in [*op.inputs, *op.outputs, *(op.intermediates if op.intermediates is not None else [])] if i >= 0]
    remap = {old: new for new, old in enumerate(dict.fromkeys(used))}
    buffers, tensors, inputs = [fb.BufferT()], [], []
    for old in remap:
        t = copy.copy(graph.tensors[old])
        data = model.buffers[t.buffer].data if t.buffer else None
        if data is not None and len(data):
            buffers.append(model.buffers[t.buffer])
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
            if old in op.inputs and not t.isVariable:
                inputs.append(old)
        if old in shapes:
            t.shape, t.shapeSignature = list(shapes[old]), None
        tensors.append(t)
    one = copy.copy(op)
    one.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
    one.outputs = [remap[i] for i in op.outputs]
    one.intermediates = [remap[i] for i in op.intermediates] if op.intermediates is not None else None
    sub = fb.SubGraphT()
    sub.tensors, sub.operators = tensors, [one]
    sub.inputs, sub.outputs = [remap[i] for i in inputs], list(one.outputs)
    m = fb.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = model.version, model.operatorCodes, [sub], buffers
    return bytes(fu.convert_object_to_bytearray(m)), inputs


def _time_op(content: bytes, inputs: list[int], values: dict[int, np.ndarray], threads: int,
             xnnpack: bool) -> tuple[float, bool]:
    """(mean ms of the one-op model ``content``, whether XNNPACK took its op) with the given kernels."""
    Interpreter, resolver = interpreter_class()
    kind = resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    for detail, original in zip(interp.get_input_details(), inputs, strict=True):
        interp.set_tensor(detail["index"], values[original])
    delegated = any(o["op_name"] == "DELEGATE" for o in interp._get_ops_details())  # no public API says it
    return _timed(interp.invoke)[0], delegated


def _intermediates(content: bytes, threads: int, feed: dict[int, np.ndarray]) -> tuple[dict[int, np.ndarray], Any]:
    """Every tensor of one builtin-kernel invocation on ``feed`` (tensor index → value) and that interpreter."""
    Interpreter, resolver = interpreter_class()
    interp = Interpreter(model_content=content, num_threads=threads, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    for index, value in feed.items():
        interp.resize_tensor_input(index, list(value.shape), strict=False)
    interp.allocate_tensors()
    for index, value in feed.items():
        interp.set_tensor(index, value)
    interp.invoke()
    values = {}
    for d in interp.get_tensor_details():
        try:
            values[int(d["index"])] = interp.get_tensor(int(d["index"]))
        except ValueError:  # a tensor without data (an optional or freed one)
            continue
    return values, interp


def profile(content: bytes, threads: int, x: Any, variant: str) -> Profile:
    """The op-by-op profile of the ``.tflite`` ``content`` on input batch ``x`` (see the module docstring)."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    runner = TFLiteRunner(content, threads, name=variant)
    model_ms, runs = _timed(runner.prepare(x))
    interp = runner.interpreter
    feed = {int(d["index"]): interp.get_tensor(int(d["index"])) for d in interp.get_input_details()}  # quantized
    on_xnnpack = runner.info.get("delegate") == "XNNPACK"
    values, _ = _intermediates(content, threads, feed)
    model = fu.read_model_from_bytearray(bytearray(content))
    kinds, graph = _op_names(model), model.subgraphs[0]
    ops, untimed = [], []
    for op in graph.operators:
        kind = kinds[op.opcodeIndex]
        name = graph.tensors[op.outputs[0]].name.decode(errors="replace") if len(op.outputs) else kind
        if kind in _CALLS_SUBGRAPHS or any(i >= 0 and i not in values for i in op.inputs):
            untimed.append(kind)
            ops.append(OpTime(kind, name, 0.0, "not timed", None, kind in QUANT_OPS))
            continue
        one, inputs = _one_op_model(model, op, {i: v.shape for i, v in values.items()})
        builtin_ms, _ = _time_op(one, inputs, values, threads, xnnpack=False)
        fast_ms, delegated = _time_op(one, inputs, values, threads, xnnpack=True) if on_xnnpack else (0.0, False)
        if delegated:
            ops.append(OpTime(kind, name, fast_ms, "XNNPACK", True, kind in QUANT_OPS))
        else:
            ops.append(OpTime(kind, name, builtin_ms, "builtin", False if on_xnnpack else None, kind in QUANT_OPS))
    notes = [] if on_xnnpack else [f"XNNPACK refused the whole graph: {runner.info.get('xnnpack_fallback')}"]
    if untimed:
        notes.append(f"{len(untimed)} ops not timed (they call subgraphs or read tensors the run did not keep): "
                     f"{', '.join(sorted(set(untimed)))}")
    return Profile(variant, "tflite", METHOD, tuple(ops), model_ms, runs, tuple(notes))
