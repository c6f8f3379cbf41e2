"""``tfopt optimize``: build one variant of a model and write its artifact."""

from __future__ import annotations

import argparse
import time

from ..errors import UsageError
from .console import EXIT_OK, Console
from .files import check_writable, existing, write_atomic
from .workbench import configure_tf, needs_data, open_workbench

#: file name endings of model formats: an artifact written under another format's name misleads every reader
MODEL_SUFFIXES = (".tflite", ".h5", ".hdf5", ".keras", ".onnx", ".xml", ".pb", ".zip", ".engine", ".plan", ".trt")


def _check_suffix(output: str, suffix: str, backend: str) -> None:
    """``-o out.h5`` for a ``.tflite`` artifact is a usage error (a name without a model ending is only noted)."""
    lower = output.lower()
    if lower.endswith(suffix.lower()):
        return
    foreign = next((s for s in MODEL_SUFFIXES if lower.endswith(s)), None)
    if foreign is not None:
        stem = output[: len(output) - len(foreign)]
        raise UsageError(f"-o {output}: backend {backend!r} writes a {suffix} artifact, not a {foreign} file: "
                         f"name it {stem}{suffix}")


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
    wb = open_workbench(args, args.model, args.calibration, None, log=progress)
    backend = wb.backend(args.backend)  # unknown → usage error, unavailable → failure
    _check_suffix(args.output, backend.artifact_suffix, backend.name)
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

