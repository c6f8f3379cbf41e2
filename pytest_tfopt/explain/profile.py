"""Per-op profiles: where one inference's time goes, by op, and why a variant is slower than its reference.

One :class:`Profile` per (variant, backend), from the runtime's own counters (ONNX Runtime profiling, OpenVINO
``PERF_COUNT``) or, on LiteRT, which has no profiler reachable from Python, from one-op models timed one by one
(:mod:`.profile_litert`), or the TensorFlow profiler's trace (:mod:`.profile_tf`). Each profiler is a function
``(content, threads, x, variant) -> Profile``; they are
found by backend name in :data:`PROFILERS` and imported only when used (each imports its runtime). Times are ms per
inference (the mean over the profiled runs); profiles are taken in runs of their own, never inside a judged
latency measurement. See docs/profiling.md for what each runtime's profile measures and costs.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BackendUnavailable

#: backend name → ``module:function`` of :mod:`pytest_tfopt.explain` that profiles it
PROFILERS = {"tflite": "profile_litert:profile", "onnxruntime": "profile_ort:profile",
             "openvino": "profile_openvino:profile", "tf": "profile_tf:profile", "xla": "profile_tf:profile_xla"}
#: quantize/dequantize op types the converters insert, on every runtime
QUANT_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                       "FakeQuantize"})


@dataclass(frozen=True)
class OpTime:
    """One op of one inference: ``ms`` per inference, the kernel that ran it and whether that is the fast one.

    ``type``: the runtime's op type (``CONV_2D``, ``Conv``, ``Convolution``); ``name``: the op's name (LiteRT: its
    first output tensor); ``kernel``: ``XNNPACK``/``builtin`` (LiteRT), the execution provider (ONNX Runtime), the
    implementation (OpenVINO: ``jit_avx2_I8``, ``ref_any_FP32``); ``fast``: ran on the accelerated kernels (False:
    fell back to reference/builtin kernels; None: the runtime does not say); ``quant``: an inserted
    quantize/dequantize op.
    """

    type: str
    name: str
    ms: float
    kernel: str
    fast: bool | None = None
    quant: bool = False


@dataclass(frozen=True)
class Profile:
    """Where one inference of ``variant`` on ``backend`` spends its time, op by op (ms).

    ``model_ms``: the whole inference timed alongside the profile (same runs, same instrumentation where the
    runtime has any); ``sum_ms`` / ``model_ms`` shows how much the per-op method adds or misses (1.0: every ms
    accounted for). ``method``: what was measured, one line; ``runs``: inferences the figures average over.
    """

    variant: str
    backend: str
    method: str
    ops: tuple[OpTime, ...]
    model_ms: float
    runs: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sum_ms(self) -> float:
        return sum(o.ms for o in self.ops)

    def by_type(self) -> list[dict[str, Any]]:
        """Op types, slowest first: ``type``, ``count``, ``ms``, ``share`` (of :attr:`sum_ms`), ``slow`` (ops that
        fell back to reference kernels), ``kernels`` (the kernels seen)."""
        groups: dict[str, dict[str, Any]] = {}
        for o in self.ops:
            g = groups.setdefault(o.type, {"type": o.type, "count": 0, "ms": 0.0, "slow": 0, "slow_ms": 0.0,
                                           "kernels": []})
            g["count"] += 1
            g["ms"] += o.ms
            if o.fast is False:
                g["slow"] += 1
                g["slow_ms"] += o.ms
            if o.kernel not in g["kernels"]:
                g["kernels"].append(o.kernel)
        total = self.sum_ms or 1.0
        for g in groups.values():
            g["share"] = g["ms"] / total
        return sorted(groups.values(), key=lambda g: -g["ms"])

    def top(self, n: int = 8) -> list[OpTime]:
        """The ``n`` slowest ops."""
        return sorted(self.ops, key=lambda o: -o.ms)[:n]

    def render(self, n: int = 8) -> str:
        """The profile as text: a header line and the ``n`` slowest ops (type, name, ms, share, kernel)."""
        total = self.sum_ms or 1.0
        lines = [f"{self.variant} on {self.backend}: {len(self.ops)} ops, {self.sum_ms:.3f} ms summed over ops, "
                 f"{self.model_ms:.3f} ms whole model ({self.method}; {self.runs} runs)"]
        for o in self.top(n):
            mark = " (fell back)" if o.fast is False else ""
            lines.append(f"  {o.type:<22} {_short(o.name):<36} {o.ms:8.3f} ms {o.ms / total:6.1%}  {o.kernel}{mark}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: every field, the ops as dicts, plus ``sum_ms`` and ``by_type``."""
        out = asdict(self)
        out["ops"] = [asdict(o) for o in self.ops]
        out["notes"] = list(self.notes)
        out["sum_ms"] = self.sum_ms
        out["by_type"] = self.by_type()
        return out


def _short(name: str, width: int = 36) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def profile_artifact(backend: str, content: bytes, threads: int, x: Any, variant: str) -> Profile:
    """The per-op profile of an artifact's ``content`` on ``backend`` with input batch ``x`` (ms per inference).

    Raises :class:`BackendUnavailable` for a backend without a profiler here.
    """
    where = PROFILERS.get(backend)
    if where is None:
        raise BackendUnavailable(
            f"no per-op profile for backend {backend!r}: profiles exist for {', '.join(sorted(PROFILERS))} "
            "(profile the same variant on one of them, e.g. tflite)")
    module, function = where.split(":")
    return getattr(importlib.import_module(f".{module}", __package__), function)(content, threads, x, variant)


def compare(variant: Profile, reference: Profile | None, n: int = 6) -> str:
    """The variant's and the reference's op types side by side (count, ms, share, kernels), then a diagnosis."""
    ref_types = {g["type"]: g for g in reference.by_type()} if reference is not None else {}
    head = f"per-op profile ({variant.method}):"
    lines = [head, f"  {'op type':<22} {variant.variant:>24}  {reference.variant if reference else '':>24}"]
    for g in variant.by_type()[:n]:
        r = ref_types.get(g["type"])
        theirs = f"{r['count']:>3} x {r['ms']:7.3f} ms {r['share']:6.1%}" if r else f"{'–':>24}"
        slow = f"  {g['slow']} fell back" if g["slow"] else ""
        lines.append(f"  {g['type']:<22} {g['count']:>3} x {g['ms']:7.3f} ms {g['share']:6.1%}  {theirs}"
                     f"  [{', '.join(g['kernels'])}]{slow}")
    totals = f"  {'all ops':<22} {len(variant.ops):>3} x {variant.sum_ms:7.3f} ms"
    if reference is not None:
        totals += f"          {len(reference.ops):>3} x {reference.sum_ms:7.3f} ms"
    lines.append(totals + f"   (whole model {variant.model_ms:.3f} ms" +
                 (f" vs {reference.model_ms:.3f} ms)" if reference is not None else ")"))
    quant = [o for o in variant.ops if o.quant]
    if quant:
        lines.append(f"  inserted quantize/dequantize ops: {len(quant)} ({sum(o.ms for o in quant):.3f} ms)")
    lines += [f"  note: {note}" for note in variant.notes]
    diagnosis = diagnose(variant, reference)
    if diagnosis:
        lines.append(f"  diagnosis: {diagnosis}")
    return "\n".join(lines)


def diagnose(variant: Profile, reference: Profile | None) -> str:
    """One line naming the ops that make ``variant`` slow, when one cause is clear (else ``""``).

    Ops on reference (fallback) kernels taking at least a quarter of the time are named first; else, against a
    reference, the op type whose time grew most when it accounts for at least half of the difference.
    """
    total = variant.sum_ms or 1.0
    slow = [g for g in variant.by_type() if g["slow"]]
    if slow and sum(g["slow_ms"] for g in slow) >= 0.25 * total:
        g = max(slow, key=lambda s: s["slow_ms"])
        ref = {r["type"]: r for r in reference.by_type()} if reference is not None else {}
        was = ref.get(g["type"])
        before = f" ({was['ms']:.3f} ms in {reference.variant})" if was and reference is not None else ""
        return (f"{g['slow']} {g['type']} ops ran on fallback kernels ({', '.join(g['kernels'])}) in {variant.variant}, "
                f"not the fast ones: {g['slow_ms'] / total:.0%} "
                f"of the time, {g['slow_ms']:.3f} ms{before}; keep them float (int8(max_drop=...) keeps the worst "
                f"layers float) or use float16/dynamic, which run them on the fast kernels")
    if reference is None or variant.sum_ms <= reference.sum_ms:
        return ""
    ref = {r["type"]: r["ms"] for r in reference.by_type()}
    grew = sorted(((g["ms"] - ref.get(g["type"], 0.0), g) for g in variant.by_type()), key=lambda t: -t[0])
    extra, g = grew[0]
    if extra >= 0.5 * (variant.sum_ms - reference.sum_ms):
        return (f"{g['count']} {g['type']} ops take {extra:.3f} ms more in {variant.variant} than in "
                f"{reference.variant} ({g['ms']:.3f} vs {ref.get(g['type'], 0.0):.3f} ms), most of the difference")
    return ""
