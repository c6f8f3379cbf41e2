"""Memory: peak resident memory of loading and running a model, measured in a fresh process.

In-process numbers are meaningless (TensorFlow's own footprint, and an allocator that
reuses freed memory), so a small child process loads only the runtime, reads its
resident size, loads the cached artifact, runs one batch, and reports the high-water
mark minus the resident size before, MiB. Linux (``/proc``) only.

Where the runtime reports its own tensor memory (``Runner.memory_info``: TFLite), the probe
also records it after the run: ``activations_mb`` (the arena's tensors, summed without the
planner's sharing: an upper bound on the arena proper) and ``weights_mb`` (constant tensors).
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


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def measure(backend: str, artifact_path: str, threads: int, batch_size: int, timeout_s: float = 120) -> MemoryStats:
    """Peak memory of ``backend`` loading ``artifact_path`` and running a batch, in a child process."""
    if not sys.platform.startswith("linux"):
        raise BackendUnavailable("max_memory_mb needs Linux /proc to read peak resident memory")
    cmd = [sys.executable, "-m", "pytest_tfopt.measure.memory", backend, artifact_path, str(threads), str(batch_size)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BackendUnavailable(f"memory probe of {artifact_path} did not finish in {timeout_s:.0f} s") from None
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise BackendUnavailable(f"memory probe of {artifact_path} failed: {tail}")
    data = json.loads(lines[-1])
    return MemoryStats(data["peak_mb"], data["baseline_mb"], data.get("activations_mb"), data.get("weights_mb"))


def _probe(backend_name: str, path: str, threads: int, batch_size: int) -> None:
    import numpy as np

    from ..artifact import Artifact
    from ..backends import default_registry

    backend = default_registry().get(backend_name)
    with open(path, "rb") as fh:
        content = fh.read()
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")  # reset the high-water mark to the current resident size
    runner = backend.load(Artifact(content, {"variant": "probe"}), threads)
    x = np.zeros((batch_size, *(d or 1 for d in runner.input_shape)), np.float32)
    runner.predict(x, batch_size)
    peak = _status_kb("VmHWM")
    tensors = getattr(runner, "memory_info", dict)()  # third-party runners may predate it
    result = {"peak_mb": max(0, peak - before) / 1024, "baseline_mb": before / 1024}
    if "activation_bytes" in tensors:
        result["activations_mb"] = tensors["activation_bytes"] / 2**20
    if "weight_bytes" in tensors:
        result["weights_mb"] = tensors["weight_bytes"] / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    _probe(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
