"""Why an artifact is as big as it is: bytes by layer and tensor, what dominates, what int8 would save.

:func:`explain_size` reads a built artifact (:mod:`.formats`: tensor by tensor for ``.tflite`` and ``.onnx``,
member by member for zip archives) into a :class:`SizeReport`. The footprint budgets (``max_size_kb``,
``min_compression_ratio``) append its :meth:`SizeReport.summary` to their failure messages. Sizes are bytes;
messages show KB = 1024 bytes. Tensor data plus overhead sum to the artifact size exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..artifact import Artifact
from ..errors import UsageError
from .formats import Account, SizePart, read

#: how many times smaller int8 weights are than weights of this type
INT8_SHRINK = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
#: weight types that are already integer (nothing for int8 to shrink)
INTEGER_WEIGHTS = ("int8", "uint8", "int4", "int2", "int16")


@dataclass(frozen=True)
class LayerBytes:
    """One layer's tensors and their bytes (weights, bias, other constants)."""

    layer: str
    nbytes: int
    parts: tuple[SizePart, ...]


@dataclass(frozen=True)
class SizeReport:
    """Where the bytes of one built variant go (see :func:`explain_size`).

    ``total_bytes``: the artifact size; ``account``: its tensors and overhead parts; ``gzip_bytes``: its
    gzip -9 size when asked for.
    """

    variant: str
    backend: str
    total_bytes: int
    account: Account
    gzip_bytes: int | None = None

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data (or archive members)."""
        return sum(p.nbytes for p in self.account.parts)

    @property
    def overhead_bytes(self) -> int:
        """Bytes that are not tensor data: the format's structure, names, quantization parameters, metadata."""
        return self.total_bytes - self.tensor_bytes

    def layers(self) -> list[LayerBytes]:
        """The layers by bytes, largest first (their tensors largest first)."""
        grouped: dict[str, list[SizePart]] = {}
        for part in self.account.parts:
            grouped.setdefault(part.layer, []).append(part)
        layers = [LayerBytes(name, sum(p.nbytes for p in parts), tuple(parts)) for name, parts in grouped.items()]
        return sorted(layers, key=lambda g: -g.nbytes)

    def by_dtype(self) -> dict[str, int]:
        """Bytes of tensor data by element type, largest first."""
        out: dict[str, int] = {}
        for part in self.account.parts:
            if part.dtype:
                out[part.dtype] = out.get(part.dtype, 0) + part.nbytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def weights(self, dtypes: tuple[str, ...]) -> list[SizePart]:
        """The weight tensors (weights, or constants of rank 2 and more) of element types ``dtypes``."""
        return [p for p in self.account.parts if p.dtype in dtypes and _is_weight(p)]

    def int8_estimate(self) -> int:
        """The artifact size, bytes, were every float weight tensor int8 (scales and the rest unchanged)."""
        saved = sum(p.nbytes - p.nbytes // INT8_SHRINK[p.dtype] for p in self.weights(tuple(INT8_SHRINK)))
        return self.total_bytes - saved

    def diagnosis(self, budget_bytes: float | None = None) -> str:
        """One sentence on what dominates and what to do, or ``""`` when nothing stands out."""
        for rule in (_float_weights, _format_overhead, _integer_weights):
            said = rule(self, budget_bytes)
            if said:
                return said
        return ""

    def summary(self, budget_bytes: float | None = None, reference: SizeReport | None = None, top: int = 4) -> str:
        """A few lines for a failure message: totals, the ``top`` layers, types, overhead, gzip, the diagnosis.

        ``budget_bytes``: the size the budget allows (for the diagnosis' forecast); ``reference``: fp32's
        report, for how far its overhead lets a compression ratio go.
        """
        total = self.total_bytes
        head = (f"size of {self.variant}{f' on {self.backend}' if self.backend else ''} ({self.account.format}): "
                f"{kb(total)} = tensor data {kb(self.tensor_bytes)} ({share(self.tensor_bytes, total)}) + "
                f"overhead {kb(self.overhead_bytes)} ({share(self.overhead_bytes, total)})")
        lines = [head]
        if self.account.note:
            lines.append(f"  note: {self.account.note}")
        layers = self.layers()
        for i, layer in enumerate(layers[:top], 1):
            tensors = ", ".join(_tensor(p) for p in layer.parts[:3])
            lines.append(f"  {i}. {layer.layer} {kb(layer.nbytes)} ({share(layer.nbytes, total)}): {tensors}")
        if len(layers) > top:
            rest = sum(g.nbytes for g in layers[top:])
            lines.append(f"  ({len(layers) - top} more: {kb(rest)})")
        lines += self._types_and_overhead(reference)
        if self.gzip_bytes is not None:
            lines.append(f"  {_gzip(self)}")
        said = self.diagnosis(budget_bytes)
        if said:
            lines.append(f"  diagnosis: {said}")
        return "\n".join(lines)

    def _types_and_overhead(self, reference: SizeReport | None) -> list[str]:
        lines = []
        types = self.by_dtype()
        if types:
            floats = self.weights(tuple(INT8_SHRINK))
            text = ", ".join(f"{t} {kb(n)}" for t, n in types.items())
            if floats:
                text += (f"; float weights int8 would shrink: {kb(sum(p.nbytes for p in floats))} in "
                         f"{len({p.layer for p in floats})} layers")
            lines.append(f"  by type: {text}")
        parts = [f"{name} {kb(n)}" for name, n in self.account.overhead if n > 0]
        if parts and self.account.format != "opaque":
            lines.append(f"  overhead: {', '.join(parts)}")
        if reference is not None and self.overhead_bytes > 0 and not self.account.note:
            lines.append(f"  fp32 reference: {kb(reference.total_bytes)}; the {kb(self.overhead_bytes)} of overhead "
                         f"alone caps the ratio at {reference.total_bytes / self.overhead_bytes:.1f}x")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: totals, the parts and the overhead (bytes), and the diagnosis."""
        return {"variant": self.variant, "backend": self.backend, "format": self.account.format,
                "total_bytes": self.total_bytes, "tensor_bytes": self.tensor_bytes,
                "overhead_bytes": self.overhead_bytes, "gzip_bytes": self.gzip_bytes, "note": self.account.note,
                "parts": [asdict(p) for p in self.account.parts], "overhead": dict(self.account.overhead),
                "diagnosis": self.diagnosis()}


def explain_size(model: Any, *, compressed: bool = False) -> SizeReport:
    """Where the bytes of ``model`` go: a runnable model (``optimized_model``) or an :class:`Artifact`.

    ``compressed``: also give the gzip -9 size (what a download costs). Never runs the model; an artifact
    its reader cannot parse gives an opaque account (the whole size as one part) rather than an error.
    """
    artifact = getattr(model, "artifact", model)
    if not isinstance(artifact, Artifact):
        raise UsageError(f"explain_size() takes a runnable model or an Artifact, not {type(model).__name__}")
    gzip_bytes = None
    if compressed:
        gzip_bytes = getattr(model, "gzip_size_bytes", None) or artifact.gzip_size_bytes
    return SizeReport(str(getattr(model, "variant", artifact.variant)), str(getattr(model, "backend", "")),
                      artifact.size_bytes, read(artifact), gzip_bytes)


# ---- diagnosis rules: the first that speaks wins --------------------------------------------------


def _float_weights(report: SizeReport, budget: float | None) -> str:
    total = report.total_bytes
    for dtype, factor in INT8_SHRINK.items():
        parts = report.weights((dtype,))
        nbytes = sum(p.nbytes for p in parts)
        if nbytes * 4 < total:  # under a quarter of the file: not what makes it big
            continue
        layers = list(dict.fromkeys(p.layer for p in parts))
        named = ", ".join(layers[:3]) + (", ..." if len(layers) > 3 else "")
        how = "~4x" if factor == 4 else f"~{factor}x"
        estimate = report.int8_estimate()
        text = (f"{kb(nbytes)} of {kb(total)} are {dtype} weights of {len(layers)} layer{'s' * (len(layers) > 1)} "
                f"({named}): int8 or dynamic would shrink them {how}, to about {kb(estimate)} in all")
        if budget is not None and estimate > budget:
            text += f", still over {kb(budget)}: the model itself must shrink too (lowrank, distilled, fewer units)"
        return text
    return ""


def _format_overhead(report: SizeReport, budget: float | None) -> str:
    total, over = report.total_bytes, report.overhead_bytes
    if report.account.format == "opaque" or over * 10 < total * 4:
        return ""
    parts = ", ".join(f"{name.split(' (')[0]} {kb(n)}" for name, n in report.account.overhead if n > 0)
    text = (f"{kb(over)} of {kb(total)} ({share(over, total)}) are format overhead ({parts}), which quantization "
            f"does not shrink; the tensor data is only {kb(report.tensor_bytes)}")
    if budget is not None and over > budget:
        text += f"; the overhead alone is over {kb(budget)}: only a model with fewer tensors fits"
    return text


def _integer_weights(report: SizeReport, budget: float | None) -> str:
    parts = report.weights(INTEGER_WEIGHTS)
    nbytes = sum(p.nbytes for p in parts)
    if nbytes * 10 < report.total_bytes * 4:
        return ""
    big = parts[0]
    return (f"{kb(nbytes)} of {kb(report.total_bytes)} are {big.dtype} weights already (largest: {big.layer} "
            f"{kb(big.nbytes)}): to go lower the model must shrink (lowrank, distilled, fewer units); pruning and "
            "clustering shrink the gzip size only (min_compression_ratio(..., compressed=True))")


# ---- formatting ------------------------------------------------------------------------------------


def kb(nbytes: float) -> str:
    """``812 B`` under 1 KB, else ``12.3 KB`` (1 KB = 1024 bytes)."""
    return f"{int(nbytes)} B" if nbytes < 1024 else f"{nbytes / 1024:.1f} KB"


def share(part: float, total: float) -> str:
    return f"{100 * part / total:.0f} %" if total else "-"


def _is_weight(part: SizePart) -> bool:
    return part.role in ("weights", "weights file") or (part.role == "constant" and len(part.shape) >= 2)


def _tensor(part: SizePart) -> str:
    shape = f"[{', '.join(str(d) for d in part.shape)}]" if part.shape else ""
    scales = f" ({part.scales} scales)" if part.scales > 1 else ""
    return " ".join(x for x in (part.role, part.dtype, shape, kb(part.nbytes)) if x) + scales


def _gzip(report: SizeReport) -> str:
    """What gzip recovered and, for the largest weight tensor, how many distinct values it left gzip to find."""
    gz, total = report.gzip_bytes or 0, report.total_bytes
    text = f"gzip -9: {kb(total)} -> {kb(gz)} (recovered {share(total - gz, total)})"
    weights = [p for p in report.account.parts if _is_weight(p) and p.distinct]
    if weights:
        big = weights[0]
        text += f"; largest weights {big.layer} ({big.dtype}, {kb(big.nbytes)}) hold {big.distinct} distinct values"
        if "clustered" in report.variant and big.scales > 1 and big.dtype in INTEGER_WEIGHTS:
            text += (f": with {big.scales} per-channel scales, k clusters become ~k x {big.scales} distinct bytes; "
                     "int8(per_channel=False) keeps one scale per tensor, so k values")
        elif "pruned" not in report.variant and "clustered" not in report.variant:
            text += "; gzip shrinks repeats: pruned(...) zeros or clustered(...) centroids give it some"
    return text
