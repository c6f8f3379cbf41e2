"""LiteRT (``ai_edge_litert``) helpers shared by the model loader, the TFLite backend and the int8 layer search.

Reading a ``.tflite`` flatbuffer's named inputs and outputs and the interpreter classes live here,
below models, variants and backends, so each of them can read a flatbuffer without importing the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ModelLoadError
from .signature import Signature, TensorInfo


def interpreter_class() -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter, OpResolverType


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
