"""Every metric as TensorBoard scalars: one run (sub-directory) per variant and backend."""

from __future__ import annotations

import os
import re
from typing import Any

from .. import tfenv

SCALARS = ("accuracy", "accuracy_drop", "size_bytes", "gzip_size_bytes", "compression_ratio",
           "latency_b1_p50_ms", "latency_b1_p95_ms", "latency_b1_p99_ms")


def write(logdir: str, rows: list[dict[str, Any]]) -> list[str]:
    """Write one event file per (variant, backend) under ``logdir``; returns the run directories."""
    tf = tfenv.tensorflow()
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        runs.setdefault(f"{row['variant']}-{row['backend']}", []).append(row)
    written = []
    for run, run_rows in sorted(runs.items()):
        path = os.path.join(logdir, re.sub(r"[^A-Za-z0-9_.=+-]", "_", run))
        writer = tf.summary.create_file_writer(path)
        with writer.as_default():
            for step, row in enumerate(sorted(run_rows, key=lambda r: r["test"])):
                for name in SCALARS:
                    if row.get(name) is not None:
                        tf.summary.scalar(f"{name}/{row['test'].split('::')[-1]}", float(row[name]), step=0)
                        tf.summary.scalar(name, float(row[name]), step=step)
        writer.flush()
        writer.close()
        written.append(path)
    return written
