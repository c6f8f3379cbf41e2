"""What a measured peak memory is made of: weights, the runtime's tensor arena, and the framework's overhead.

The total is the probe's measurement (:class:`pytest_tfopt.measure.memory.MemoryStats`: the resident high-water
mark loading + one run add, MiB). It is split by kind, from the runtime's own account where it gives one:

* ``weights``: the runtime's constant tensors (TFLite), else the artifact's size (an estimate: ONNX Runtime and
  OpenVINO report no tensor account);
* ``arena``: the activation tensors (TFLite: summed without the arena planner's sharing, so an upper bound),
  0 where the runtime reports none;
* ``overhead``: the rest — runtime code and allocator pages, delegate workspaces (XNNPACK's packed weights),
  what loading the framework itself touched.

Each part is capped so the three sum to the measured total exactly (a weight or arena account larger than the
total, e.g. weights the runtime maps but never touches, is cut to what is left and says so). The time split
(``load`` then ``first run``) comes from the high-water mark after loading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class MemoryPart:
    """One part of a peak, MiB, and where its figure comes from."""

    name: str
    mb: float
    source: str


@dataclass(frozen=True)
class MemoryBreakdown:
    """A measured peak (``total_mb``) split by kind (``parts``, summing to it) and in time (``load_mb``)."""

    total_mb: float
    parts: tuple[MemoryPart, ...]
    load_mb: float | None = None

    def summary(self) -> str:
        """Two lines: the parts with their shares, and the time split when known."""
        total = self.total_mb or 1.0
        parts = ", ".join(f"{p.name} {p.mb:.2f} MiB ({p.mb / total:.0%}, {p.source})" for p in self.parts)
        lines = [f"memory breakdown of {self.total_mb:.2f} MiB: {parts}"]
        if self.load_mb is not None:
            first_run = max(0.0, self.total_mb - self.load_mb)
            lines.append(f"  in time: loading {self.load_mb:.2f} MiB, first run {first_run:.2f} MiB more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain_memory(stats: Any) -> MemoryBreakdown:
    """The breakdown of ``stats`` (a :class:`~pytest_tfopt.measure.memory.MemoryStats`); the parts sum to its peak."""
    total = float(stats.peak_mb)
    if stats.weights_mb is not None:
        weights, source = float(stats.weights_mb), "the runtime's constant tensors"
    elif getattr(stats, "artifact_mb", None) is not None:
        weights, source = float(stats.artifact_mb), "estimate: the artifact's size"
    else:
        weights, source = 0.0, "not reported"
    if weights > total:
        weights, source = total, f"{source}, cut to the measured total"
    arena = float(stats.activations_mb) if stats.activations_mb is not None else 0.0
    arena_source = "activation tensors, an upper bound" if stats.activations_mb is not None else "not reported"
    if arena > total - weights:
        arena, arena_source = total - weights, f"{arena_source}, cut to what is left"
    parts = (MemoryPart("weights", weights, source), MemoryPart("arena", arena, arena_source),
             MemoryPart("overhead", total - weights - arena, "the rest: runtime, allocator, delegate workspaces"))
    return MemoryBreakdown(total, parts, getattr(stats, "load_mb", None))
