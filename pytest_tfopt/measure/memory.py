"""Memory: peak resident memory of loading and running a model, measured in a fresh process.

In-process numbers are meaningless (TensorFlow's own footprint, and an allocator that
reuses freed memory), so a small child process (:mod:`pytest_tfopt.memory_probe`) loads only the runtime, reads its
resident size, loads the cached artifact, runs one batch, and reports the high-water
mark minus the resident size before, MiB. Linux (``/proc``) only.

Where the runtime reports its own tensor memory (``Runner.memory_info``: TFLite), the probe
also records it after the run: ``activations_mb`` (the arena's tensors, summed without the
planner's sharing: an upper bound on the arena proper) and ``weights_mb`` (constant tensors). ``load_mb`` splits the
peak in time (loading alone, then the first run); :func:`pytest_tfopt.explain.explain_memory` splits it by kind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from ..errors import BackendUnavailable


@dataclass(frozen=True)
class MemoryStats:
    """Peak resident memory added by loading + running one batch, and the runtime process before it, MiB.

    ``activations_mb``/``weights_mb``: the runtime's own account of its tensors (None where it gives none).
    """

    peak_mb: float
    baseline_mb: float
    activations_mb: float | None = None
    weights_mb: float | None = None
    #: the high-water mark loading alone reached (the rest of ``peak_mb`` came with the first run), MiB
    load_mb: float | None = None
    #: the artifact's size, MiB (the weights' estimate on runtimes that give no tensor account)
    artifact_mb: float | None = None


def measure(backend: str, artifact_path: str, threads: int, batch_size: int, timeout_s: float = 120) -> MemoryStats:
    """Peak memory of ``backend`` loading ``artifact_path`` and running a batch, in a child process."""
    if not sys.platform.startswith("linux"):
        raise BackendUnavailable("max_memory_mb needs Linux /proc to read peak resident memory")
    cmd = [sys.executable, "-m", "pytest_tfopt.memory_probe", backend, artifact_path, str(threads), str(batch_size)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BackendUnavailable(f"memory probe of {artifact_path} did not finish in {timeout_s:.0f} s") from None
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise BackendUnavailable(f"memory probe of {artifact_path} failed: {tail}")
    data = json.loads(lines[-1])
    return MemoryStats(data["peak_mb"], data["baseline_mb"], data.get("activations_mb"), data.get("weights_mb"),
                       data.get("load_mb"), data.get("artifact_mb"))
