"""``tfopt optimize``: build one variant of a model and write its artifact."""

from __future__ import annotations

import argparse
import time

from ..errors import UsageError
from .console import EXIT_OK, Console
from .core import configure_tf, needs_data, workbench
from .files import check_writable, existing, write_atomic


def cmd_optimize(args: argparse.Namespace, console: Console) -> int:
    from ..variants import default_registry

    plan = default_registry().resolve(args.variant)  # unknown variants fail before anything loads
    existing(args.model, "model", "MODEL")
    if args.calibration:
        existing(args.calibration, "calibration data", "--calibration")
    need = needs_data(plan)
    if need and not args.calibration:
        raise UsageError(f"variant {plan.id!r} {need}: give a data set with --calibration data.npz")
    check_writable(args.output, "-o")
    configure_tf(None)
    progress = console.progress(1)
    wb = workbench(args, args.model, args.calibration, None, log=progress.update)
    backend = wb.backend(args.backend)  # unknown → usage error, unavailable → failure
    progress.start(f"{plan.id} for {backend.name}")
    start = time.perf_counter()
    artifact = wb.build(plan.id, backend.name)
    took = time.perf_counter() - start
    progress.done(f"built in {took:.1f} s" if wb.cache.stats.built else "from the cache")
    written = write_atomic(args.output, artifact.content)
    suffix = artifact.suffix
    if not written.lower().endswith(suffix):
        console.note(f"{written} holds a {suffix} artifact ({backend.name}); its name does not end in {suffix}")
    size, gz = artifact.size_bytes, artifact.gzip_size_bytes
    console.out(f"variant:  {plan.id}")
    console.out(f"backend:  {backend.name}")
    console.out(f"size:     {size / 1024:.1f} KB ({size} bytes)")
    console.out(f"gzip:     {gz / 1024:.1f} KB ({gz} bytes)")
    console.out(f"written:  {written}")
    return EXIT_OK

