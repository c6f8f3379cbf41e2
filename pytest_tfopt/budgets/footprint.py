"""Footprint budgets: artifact size, compression, memory, and the sparsity and clusters transforms leave.

Sizes are KB = 1024 bytes; memory is MiB. A broken size or compression verdict carries, under its first line,
where the artifact's bytes go (:func:`pytest_tfopt.explain.explain_size`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..explain import explain_memory, explain_size
from ..runnable import RunnableModel
from .verdict import Verdict, about, about_row


def _explained(verdict: Verdict, model: RunnableModel, budget_bytes: float | None = None,
               reference: RunnableModel | None = None, compressed: bool = False) -> Verdict:
    """``verdict`` with the size explanation of ``model`` under its message when it is broken (else as is)."""
    if verdict.passed is not False:
        return verdict
    report = explain_size(model, compressed=compressed)
    ref = explain_size(reference) if reference is not None else None
    text = report.summary(budget_bytes=budget_bytes, reference=ref)
    return dataclasses.replace(verdict, message=f"{verdict.message}\n{text}")


@dataclass(frozen=True)
class MaxSize:
    """The artifact may be at most ``limit_kb`` KB (1 KB = 1024 bytes)."""

    limit_kb: float
    marker: str = "max_size_kb"
    kind: ClassVar[str] = "footprint"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        verdict = self.judge(about(model), model.size_bytes / 1024, reference.size_bytes / 1024)
        return _explained(verdict, model, budget_bytes=self.limit_kb * 1024)

    def check_row(self, row: dict[str, Any]) -> Verdict | str:
        """The verdict from a result row's ``size_bytes``, or why it cannot be given."""
        if row.get("size_bytes") is None:
            return f"{self.marker} skipped where rows have no size"
        ref = row.get("reference_size_bytes")
        return self.judge(about_row(row), row["size_bytes"] / 1024, None if ref is None else ref / 1024)

    def judge(self, who: str, value: float, ref: float | None) -> Verdict:
        """The verdict on a ``value`` KB artifact; ``ref``: fp32's KB (not shown when unknown)."""
        passed = value <= self.limit_kb
        fp32 = f" (fp32 {ref:.1f} KB)" if ref else ""
        text = (
            f"max_size_kb({self.limit_kb:g}) {'holds' if passed else 'broken'}: {who}: "
            f"{value:.1f} KB{fp32} {'<=' if passed else '>'} budget {self.limit_kb:g} KB"
        )
        return Verdict(self.marker, passed, value, ref, self.limit_kb, text)


@dataclass(frozen=True)
class MinCompression:
    """fp32 bytes / variant bytes must be at least ``ratio`` (gzip bytes when ``compressed``)."""

    ratio: float
    compressed: bool = False
    marker: str = "min_compression_ratio"
    kind: ClassVar[str] = "footprint"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        if self.compressed:
            ours, theirs = model.gzip_size_bytes, reference.gzip_size_bytes
        else:
            ours, theirs = model.size_bytes, reference.size_bytes
        verdict = self.judge(about(model), model.variant, ours, theirs)
        if self.compressed:  # gzip shrinks the overhead too: no raw-size forecast or cap, what gzip recovered instead
            return _explained(verdict, model, compressed=True)
        return _explained(verdict, model, budget_bytes=theirs / self.ratio, reference=reference)

    def check_row(self, row: dict[str, Any]) -> Verdict | str:
        """The verdict from a result row's (gzip) size and fp32 reference size, or why it cannot be given."""
        field = "gzip_size_bytes" if self.compressed else "size_bytes"
        ours, theirs = row.get(field), row.get(f"reference_{field}")
        if not ours or not theirs:
            return f"{self.marker} skipped where rows have no fp32 reference size"
        return self.judge(about_row(row), row["variant"], ours, theirs)

    def judge(self, who: str, variant: str, ours: int, theirs: int) -> Verdict:
        """The verdict on ``variant``'s ``ours`` bytes against fp32's ``theirs`` (gzip bytes when ``compressed``)."""
        unit = "gzip B" if self.compressed else "B"
        value = theirs / ours
        passed = value >= self.ratio
        flag = ", compressed=True" if self.compressed else ""
        text = (
            f"min_compression_ratio({self.ratio:g}{flag}) {'holds' if passed else 'broken'}: {who}: "
            f"ratio {value:.2f}x (fp32 {theirs} {unit} / {variant} {ours} {unit}) "
            f"{'>=' if passed else '<'} budget {self.ratio:g}x"
        )
        return Verdict(self.marker, passed, value, float(theirs), self.ratio, text)


@dataclass(frozen=True)
class MaxMemory:
    """Peak resident memory loading + running the variant adds (fresh process), at most ``limit_mb`` MiB.

    The message adds the runtime's own tensor account where it gives one (TFLite: activation
    tensors, an upper bound on the interpreter's arena, and constant weight tensors); a broken one adds
    the breakdown of the peak into weights, arena and overhead (:func:`pytest_tfopt.explain.explain_memory`).
    """

    limit_mb: float
    marker: str = "max_memory_mb"
    kind: ClassVar[str] = "footprint"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        stats = model.memory()
        value = stats.peak_mb
        ref = reference.memory().peak_mb
        passed = value <= self.limit_mb
        tensors = ""
        if stats.activations_mb is not None:
            tensors = (f"; {model.variant}'s interpreter tensors: activations {stats.activations_mb:.3f} MiB (arena upper bound), "
                       f"weights {stats.weights_mb or 0:.3f} MiB")
        text = (
            f"max_memory_mb({self.limit_mb:g}) {'holds' if passed else 'broken'}: {about(model)}: peak "
            f"{value:.2f} MiB added by load + run (fp32 {ref:.2f} MiB{tensors}) {'<=' if passed else '>'} "
            f"budget {self.limit_mb:g} MiB"
        )
        if not passed:  # where the peak goes: weights, arena, overhead (they sum to it)
            text += "\n" + explain_memory(stats).summary()
        return Verdict(self.marker, passed, value, ref, self.limit_mb, text)


def _stage_stats(model: RunnableModel, key: str) -> dict[str, float]:
    """Per-layer statistics ``key`` recorded by the variant's transforms (merged over stages)."""
    out: dict[str, float] = {}
    for stage in model.artifact.metadata.get("stages", []):
        out.update(stage.get(key, {}))
    return out


@dataclass(frozen=True)
class MinSparsity:
    """Every layer the pruning touched must have at least ``limit`` zero weights (fraction)."""

    limit: float
    marker: str = "min_sparsity"
    kind: ClassVar[str] = "footprint"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        per_layer = _stage_stats(model, "sparsity")
        if not per_layer:
            return Verdict(self.marker, False, 0.0, None, self.limit,
                           f"min_sparsity({self.limit:g}) broken: {about(model)} records no sparsity: "
                           "only pruned(...) variants do (e.g. pruned(sparsity=0.8)+int8)")
        layer, value = min(per_layer.items(), key=lambda kv: kv[1])
        passed = value >= self.limit - 1e-9
        text = (
            f"min_sparsity({self.limit:g}) {'holds' if passed else 'broken'}: {about(model)}: "
            f"lowest layer sparsity {value:.3f} ({layer}) {'>=' if passed else '<'} budget {self.limit:g}"
        )
        return Verdict(self.marker, passed, value, None, self.limit, text)


@dataclass(frozen=True)
class MaxUniqueWeights:
    """Every layer the clustering touched may hold at most ``limit`` distinct weight values."""

    limit: int
    marker: str = "max_unique_weights"
    kind: ClassVar[str] = "footprint"

    def check(self, model: RunnableModel, reference: RunnableModel) -> Verdict:
        per_layer = _stage_stats(model, "unique_weights")
        if not per_layer:
            return Verdict(self.marker, False, 0.0, None, float(self.limit),
                           f"max_unique_weights({self.limit}) broken: {about(model)} records no weight clusters: "
                           "only clustered(...) variants do (e.g. clustered(clusters=16)+int8)")
        layer, value = max(per_layer.items(), key=lambda kv: kv[1])
        passed = value <= self.limit
        text = (
            f"max_unique_weights({self.limit}) {'holds' if passed else 'broken'}: {about(model)}: "
            f"most unique weights {value} ({layer}) {'<=' if passed else '>'} budget {self.limit}"
        )
        return Verdict(self.marker, passed, float(value), None, float(self.limit), text)
