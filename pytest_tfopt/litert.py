"""LiteRT (``ai_edge_litert``) helpers shared by the model loader, the TFLite backend and the int8 layer search.

Reading a ``.tflite`` flatbuffer's named inputs and outputs, where its bytes go (:func:`account`), and the
interpreter classes live here, below models, variants and backends, so each of them can read a flatbuffer
without importing the others.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import tfenv
from .errors import ModelLoadError
from .signature import Signature, TensorInfo


def interpreter_class() -> Any:
    """LiteRT's ``Interpreter`` (built quietly, see :func:`_quiet_interpreter`) and ``OpResolverType``."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return _quiet_interpreter(Interpreter), OpResolverType


@functools.cache
def _quiet_interpreter(base: type) -> type:
    """``base`` whose construction and first ``allocate_tensors`` keep native prints off stderr.

    The first XNNPACK interpreter of a process prints ``INFO: Created TensorFlow Lite XNNPACK delegate for
    CPU.`` straight to fd 2, where it lands in a test's captured output; a call that raises (XNNPACK refusing
    a graph) replays what it printed on ``sys.stderr`` (see :func:`tfenv.native_output`).
    """

    class QuietInterpreter(base):  # type: ignore[misc, valid-type]
        __doc__ = base.__doc__
        _tfopt_allocated = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with tfenv.native_output(replay=True):
                super().__init__(*args, **kwargs)

        def allocate_tensors(self) -> Any:
            if self._tfopt_allocated:  # the delegate prints once, on the first allocation
                return super().allocate_tensors()
            with tfenv.native_output(replay=True):
                done = super().allocate_tensors()
            self._tfopt_allocated = True
            return done

    return QuietInterpreter


def inspect_tflite(content: bytes, signature: str = "serving_default") -> tuple[Signature, str]:
    """The named inputs/outputs of a ``.tflite`` flatbuffer and the signature key used (raises if it is not one)."""
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    Interpreter, resolver = interpreter_class()
    interp = Interpreter(
        model_content=content,
        experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    key, ins, outs = io_details(interp, signature)
    return Signature(tuple(tensor_info(n, d) for n, d in ins.items()), tuple(tensor_info(n, d) for n, d in outs.items())), key


def tensor_info(name: str, detail: dict[str, Any]) -> TensorInfo:
    sig = detail.get("shape_signature", detail["shape"])
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.floating) and detail.get("quantization", (0.0, 0))[0]:
        dtype = np.dtype(np.float32)  # a quantized int8/int16 tensor: callers see floats
    return TensorInfo(name, tuple(None if d < 0 else int(d) for d in sig[1:]), dtype.name)


def io_details(interp: Any, signature: str) -> tuple[str, dict[str, dict], dict[str, dict]]:
    """(signature key, input name → tensor detail, output name → detail), names sorted.

    A flatbuffer with signatures is read through ``signature`` (or its only one); one without
    (old converters) names tensors by their graph names.
    """
    signatures = interp.get_signature_list()
    if signatures:
        key = signature if signature in signatures else (next(iter(signatures)) if len(signatures) == 1 else None)
        if key is None:
            raise ModelLoadError(f"the .tflite file has no {signature!r} signature (it has: "
                                 f"{', '.join(sorted(signatures))}): set ini tfopt_signature to one of them")
        runner = interp.get_signature_runner(key)
        ins, outs = runner.get_input_details(), runner.get_output_details()
        by_index = {int(d["index"]): d for d in interp.get_tensor_details()}
        full_in = {int(d["index"]): d for d in interp.get_input_details()}
        full_out = {int(d["index"]): d for d in interp.get_output_details()}
        ins = {n: full_in.get(int(d["index"]), by_index.get(int(d["index"]), d)) for n, d in ins.items()}
        outs = {n: full_out.get(int(d["index"]), by_index.get(int(d["index"]), d)) for n, d in outs.items()}
        return key, dict(sorted(ins.items())), dict(sorted(outs.items()))
    ins = {graph_name(d["name"]): d for d in interp.get_input_details()}
    outs = {graph_name(d["name"]): d for d in interp.get_output_details()}
    if len(ins) == 1:
        ins = {"input": next(iter(ins.values()))}
    if len(outs) == 1:
        outs = {"output_0": next(iter(outs.values()))}
    return "", dict(sorted(ins.items())), dict(sorted(outs.items()))


def graph_name(name: str) -> str:
    name = name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


# ---- where the bytes of a flatbuffer go ------------------------------------------------------

#: ops whose input 1 is a weight tensor and input 2 its bias (TRANSPOSE_CONV: weights 1, bias 3)
_WEIGHT_OPS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "CONV_3D": (1, 2),
               "TRANSPOSE_CONV": (1, 3), "BATCH_MATMUL": (1, -1), "EMBEDDING_LOOKUP": (1, -1)}


@dataclass(frozen=True)
class ConstantBuffer:
    """One constant buffer of a ``.tflite`` flatbuffer (weights, biases, shapes), by the first tensor naming it.

    ``nbytes``: the buffer's bytes; ``dtype``: the tensor type in lower case (``float32``, ``int8``, ``float16``);
    ``role``: ``weights`` / ``bias`` (from the op reading it, through a DEQUANTIZE) or ``constant``; ``op``: that op's
    type; ``used_by``: the name of that op's output tensor (names the layer when the constant's own name does not);
    ``scales``: how many quantization scales the tensor carries (one per channel when per-channel).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    role: str
    op: str
    used_by: str
    scales: int = 0
    distinct: int = 0


@dataclass(frozen=True)
class FlatbufferAccount:
    """Where the bytes of a ``.tflite`` file go; every field is bytes and they sum to ``total``.

    ``constants``: the constant buffers (largest first); ``quantization``: the scales, zero points and ranges
    kept in tensor tables (4 B per scale, 8 B per zero point); ``names``: tensor names; ``metadata``: metadata
    buffers (``min_runtime_version``, ``CONVERSION_METADATA``, ...); ``structure``: the rest (operators,
    tensor tables, signatures, offsets, alignment padding).
    """

    total: int
    constants: tuple[ConstantBuffer, ...]
    quantization: int
    names: int
    metadata: int

    @property
    def constant_bytes(self) -> int:
        return sum(c.nbytes for c in self.constants)

    @property
    def structure(self) -> int:
        return self.total - self.constant_bytes - self.quantization - self.names - self.metadata


def account(content: bytes) -> FlatbufferAccount:
    """Read where the bytes of ``content`` (a ``.tflite`` flatbuffer) go, without running it.

    A buffer shared by several tensors is counted once. ``distinct`` (distinct byte patterns of the values) is
    counted for buffers up to 4 MiB. Raises ``ValueError`` for bytes that are not a TFLite flatbuffer.
    """
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(content, 0)
    types = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    builtins = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    metadata = {model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    seen: set[int] = set()
    constants, quantization, names = [], 0, 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        readers = _readers(model, graph, builtins)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            names += len(tensor.Name() or b"")
            quantization += _quantization_bytes(tensor.Quantization())
            index = tensor.Buffer()
            if index == 0 or index in seen or index in metadata:
                continue
            data = _buffer_bytes(model.Buffers(index), content)
            if not len(data):
                continue
            seen.add(index)
            constants.append(_constant(tensor, types, data, readers.get(t, ("", -1, ""))))
    meta = sum(len(_buffer_bytes(model.Buffers(i), content)) for i in metadata if i < model.BuffersLength())
    constants.sort(key=lambda c: -c.nbytes)
    return FlatbufferAccount(len(content), tuple(constants), quantization, names, meta)


def _readers(model: Any, graph: Any, builtins: dict[int, str]) -> dict[int, tuple[str, int, str]]:
    """Tensor index → (op type, input position, op output name) of the first op reading it; a DEQUANTIZE
    (float16 and some dynamic-range weights) hands its reader on to the tensor it dequantizes."""
    first: dict[int, tuple[str, int, str]] = {}
    dequantized: dict[int, int] = {}
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = builtins.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        outputs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
        out_name = graph.Tensors(outputs[0]).Name().decode(errors="replace") if outputs else ""
        for position, i in enumerate(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else ():
            if i >= 0:
                first.setdefault(i, (kind, position, out_name))
        if kind == "DEQUANTIZE" and outputs and op.InputsLength():
            dequantized[int(op.InputsAsNumpy()[0])] = outputs[0]
    for source, output in dequantized.items():
        if output in first:
            first[source] = first[output]
    return first


def _constant(tensor: Any, types: dict[int, str], data: np.ndarray, reader: tuple[str, int, str]) -> ConstantBuffer:
    kind, position, used_by = reader
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    weight, bias = _WEIGHT_OPS.get(kind, (-2, -2))
    role = "weights" if position == weight else "bias" if position == bias else "constant"
    q = tensor.Quantization()
    width = max(1, len(data) // max(1, int(np.prod(shape)) if shape else 1))
    distinct = 0
    if len(data) <= 4 << 20 and width in (1, 2, 4, 8) and len(data) % width == 0:
        distinct = len(np.unique(data.view(f"u{width}")))
    return ConstantBuffer((tensor.Name() or b"").decode(errors="replace"), types.get(tensor.Type(), "?"), shape,
                          len(data), role, kind, used_by, q.ScaleLength() if q is not None else 0, distinct)


def _buffer_bytes(buffer: Any, content: bytes) -> np.ndarray:
    """A buffer's bytes (a uint8 view): inside the flatbuffer, or after it (offset/size, models over 2 GB)."""
    if buffer.DataLength():
        return buffer.DataAsNumpy()
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1 and size and offset + size <= len(content):
        return np.frombuffer(content, np.uint8, size, offset)
    return np.zeros(0, np.uint8)


def _quantization_bytes(q: Any) -> int:
    if q is None:
        return 0
    return 4 * q.ScaleLength() + 8 * q.ZeroPointLength() + 4 * q.MinLength() + 4 * q.MaxLength()
