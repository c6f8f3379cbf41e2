"""Readers of built artifacts, one per format: the artifact's bytes → its constant tensors and its overhead.

Each reader returns a :class:`Account`: the tensors (or archive members) that hold data and the named
overhead parts, summing to the artifact's size exactly. ``.tflite`` is read tensor by tensor from the
flatbuffer (:func:`pytest_tfopt.litert.account`); ``.onnx`` by its initializers (needs the ``onnx``
package); ``.zip`` artifacts (SavedModel, TF Serving, OpenVINO IR) by archive member only; anything
else (a TensorRT engine) is opaque. :data:`READERS` maps an artifact suffix to its reader.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from .. import litert
from ..artifact import Artifact


@dataclass(frozen=True)
class SizePart:
    """One tensor (or archive member) of an artifact and the bytes its data takes.

    ``layer``: the layer it belongs to (from its name); ``role``: ``weights``, ``bias``, ``constant`` or,
    for archive members, ``weights file`` / ``graph``; ``dtype``: ``float32``, ``int8``, ... (``""`` for an
    archive member); ``scales``: quantization scales it carries; ``distinct``: distinct values (0: not counted).
    """

    name: str
    layer: str
    role: str
    dtype: str
    nbytes: int
    shape: tuple[int, ...] = ()
    scales: int = 0
    distinct: int = 0


@dataclass(frozen=True)
class Account:
    """What a reader found: ``parts`` (largest first) plus ``overhead`` (name, bytes) sum to the artifact size.

    ``format`` names what was read (``tflite flatbuffer``); ``note`` says how coarse the account is.
    """

    format: str
    parts: tuple[SizePart, ...]
    overhead: tuple[tuple[str, int], ...]
    note: str = ""


def read_tflite(artifact: Artifact) -> Account:
    """Constant buffers tensor by tensor; quantization parameters, tensor names, metadata and structure."""
    found = litert.account(artifact.content)
    names = [c.name for c in found.constants]
    prefix = model_prefix(names)
    parts = tuple(
        SizePart(c.name, layer_of(c.name, prefix, c.used_by), c.role, c.dtype, c.nbytes, c.shape, c.scales, c.distinct)
        for c in found.constants
    )
    overhead = (("structure (operators, tensor tables, signatures, alignment)", found.structure),
                ("quantization parameters", found.quantization), ("tensor names", found.names),
                ("metadata", found.metadata))
    return Account("tflite flatbuffer", parts, overhead)


def read_onnx(artifact: Artifact) -> Account:
    """Initializers tensor by tensor (their stored bytes); the rest is the graph (nodes, names, attributes)."""
    try:
        import onnx
        from onnx import helper
    except ImportError:
        return opaque(artifact, "onnx: pip install onnx for a per-tensor account")
    model = onnx.load_from_string(artifact.content)
    inits = [t for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    prefix = model_prefix([t.name for t in inits])
    parts = []
    for t in inits:
        nbytes = len(t.raw_data) if t.raw_data else t.ByteSize()
        quant = t.name.endswith(("_scale", "_zero_point"))
        role = "quantization" if quant else "weights" if len(t.dims) >= 2 else "bias" if len(t.dims) == 1 else "constant"
        dtype = str(helper.tensor_dtype_to_np_dtype(t.data_type))
        parts.append(SizePart(t.name, layer_of(t.name, prefix), role, dtype, nbytes, tuple(int(d) for d in t.dims)))
    parts.sort(key=lambda p: -p.nbytes)
    rest = len(artifact.content) - sum(p.nbytes for p in parts)
    return Account("onnx model", tuple(parts), (("graph (nodes, names, attributes, protobuf framing)", rest),))


#: archive members that hold the weights of a SavedModel or an OpenVINO IR
_WEIGHT_FILES = re.compile(r"(^|/)variables/variables\.data-|\.bin$")


def read_zip(artifact: Artifact) -> Account:
    """Archive members by their stored (compressed) size; the rest is the zip's own headers."""
    try:
        with zipfile.ZipFile(io.BytesIO(artifact.content)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
    except zipfile.BadZipFile:
        return opaque(artifact, "not a readable zip archive")
    parts = tuple(sorted(
        (SizePart(m.filename, m.filename, "weights file" if _WEIGHT_FILES.search(m.filename) else "graph", "",
                  m.compress_size) for m in members),
        key=lambda p: -p.nbytes))
    rest = len(artifact.content) - sum(p.nbytes for p in parts)
    return Account("zip archive", parts, (("zip headers and directory", rest),),
                   "coarse: archive members as stored (compressed); the weights file is not split by tensor")


def opaque(artifact: Artifact, why: str = "") -> Account:
    """No breakdown: the whole artifact is one part."""
    note = why or f"{artifact.suffix or 'this'} artifacts are opaque (e.g. a TensorRT engine): no breakdown"
    return Account("opaque", (), (("artifact", len(artifact.content)),), note)


#: artifact suffix (its end) → reader; the longest matching suffix wins
READERS: dict[str, Callable[[Artifact], Account]] = {".tflite": read_tflite, ".onnx": read_onnx, ".zip": read_zip}


def read(artifact: Artifact) -> Account:
    """The account of ``artifact`` by its format (opaque when no reader fits or the reader cannot parse it)."""
    suffix = artifact.suffix or ""
    matches = [key for key in READERS if suffix.endswith(key)]
    if not matches:
        return opaque(artifact)
    try:
        return READERS[max(matches, key=len)](artifact)
    except Exception as exc:  # an explanation decorates a failure; a damaged artifact must not cause one
        return opaque(artifact, f"could not read the {suffix} artifact ({type(exc).__name__}: {str(exc)[:120]})")


# ---- tensor name → layer ----------------------------------------------------------------------

#: a trailing TensorFlow op segment of a tensor name (MatMul, Conv2D, BiasAdd, ReadVariableOp:0, ...)
_TF_OP = re.compile(r"^[A-Z][A-Za-z0-9]*(_\d+)?(:\d+)?(_[a-z_]+)?$")


def model_prefix(names: list[str]) -> str:
    """The first name segment most tensor names share (the model's own scope, ``digits_cnn``), or ``""``."""
    firsts = [n.split(";")[0].split("/")[0] for n in names if "/" in n]
    if not firsts:
        return ""
    top = max(set(firsts), key=firsts.count)
    return top if firsts.count(top) * 2 > len(firsts) else ""


def layer_of(name: str, prefix: str = "", fallback: str = "") -> str:
    """The layer a tensor name belongs to: ``digits_cnn/dense/MatMul`` → ``dense``.

    Of a fused name (``a;b``) the first part counts; the model's scope ``prefix`` and trailing TF op
    segments are dropped. A name without scopes (``arith.constant``) takes ``fallback``'s layer (the name
    of the op output reading it), else stays as it is.
    """
    segments = name.split(";")[0].split("/")
    if segments and prefix and segments[0] == prefix and len(segments) > 1:
        segments = segments[1:]
    while len(segments) > 1 and _TF_OP.match(segments[-1]):
        segments = segments[:-1]
    if len(segments) == 1 and "/" not in name and fallback and fallback != name:
        return layer_of(fallback, prefix)
    return "/".join(segments)
