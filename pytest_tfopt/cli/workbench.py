"""How commands reach the workbench: variant and backend lists, TensorFlow settings and the workbench, loaded lazily."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any


def split(values: Sequence[str] | None, default: str) -> list[str]:
    """The variant (or backend) names of repeatable comma-separated options, deduplicated in order."""
    from ..variants import split_variants

    items = [v for value in (values or [default]) for v in split_variants(value)]
    return list(dict.fromkeys(items))


def configure_tf(threads: int | None) -> None:
    """Apply log level and thread caps before TensorFlow loads (left alone when it already has)."""
    from .. import tfenv

    if "tensorflow" not in sys.modules:
        tfenv.configure(tfenv.TfSettings(threads=threads))


def open_workbench(args: argparse.Namespace, model: str, data: str | None, threads: int | None,
                   log: Callable[[str], None], latency: Any = None, backends: Any = None) -> Any:
    """A :class:`~pytest_tfopt.workbench.Workbench` for ``model`` with the command's cache options."""
    from ..workbench import Workbench

    return Workbench(model, data, cache_dir=args.cache_dir, threads=threads, rebuild=args.rebuild,
                     calibration_size=args.calibration_size, latency=latency, log=log, backends=backends)


def needs_data(plan: Any) -> str | None:
    """Why variant ``plan`` needs a data set (``"is calibrated"``, ``"trains the model"``), or None."""
    if plan.needs_calibration:
        return "is calibrated"
    if plan.trains:
        return "trains the model"
    return None

