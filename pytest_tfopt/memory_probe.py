"""The child process of the memory probe (:mod:`pytest_tfopt.measure.memory`): ``python -m pytest_tfopt.memory_probe``.

Loads only the backend's runtime, reads its resident size, loads the artifact, runs one batch and prints
one JSON line: the high-water mark minus the resident size before, MiB, the part of it reached by loading alone,
the artifact's size, and the runtime's own tensor account.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from .artifact import Artifact
from .backends import default_registry


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def probe(backend_name: str, path: str, threads: int, batch_size: int) -> None:
    """Print the peak memory of ``backend_name`` loading ``path`` and running a ``batch_size`` batch (JSON line)."""
    backend = default_registry().get(backend_name)
    with open(path, "rb") as fh:
        content = fh.read()
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")  # reset the high-water mark to the current resident size
    runner = backend.load(Artifact(content, {"variant": "probe"}), threads)
    loaded = _status_kb("VmHWM")  # the high-water mark once loaded: what the run adds is measured on top of it
    x = np.zeros((batch_size, *(d or 1 for d in runner.input_shape)), np.float32)
    runner.predict(x, batch_size)
    peak = _status_kb("VmHWM")
    tensors = getattr(runner, "memory_info", dict)()  # third-party runners may predate it
    result = {"peak_mb": max(0, peak - before) / 1024, "baseline_mb": before / 1024,
              "load_mb": max(0, loaded - before) / 1024, "artifact_mb": len(content) / 2**20}
    if "activation_bytes" in tensors:
        result["activations_mb"] = tensors["activation_bytes"] / 2**20
    if "weight_bytes" in tensors:
        result["weights_mb"] = tensors["weight_bytes"] / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    probe(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
