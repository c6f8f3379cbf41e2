"""Backends: runtimes that turn a variant of a source model into something that runs.

Every backend implements :class:`Backend`; the built-ins register in
:func:`default_registry` through the same :meth:`BackendRegistry.register` a
third party uses (see ``hookspecs.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UsageError


class Runner:
    """A loaded artifact that runs batches. ``info`` records how (delegate, threads, fallbacks)."""

    info: dict[str, Any]
    input_shape: tuple[int | None, ...]

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Float outputs for float inputs ``x`` (first axis = samples)."""
        raise NotImplementedError

    def prepare(self, x: np.ndarray) -> Callable[[], None]:
        """Load the batch ``x`` and return a function that runs one invocation only."""
        raise NotImplementedError


class Backend:
    """A runtime. Subclasses set ``name`` and override the methods."""

    name = "?"
    artifact_suffix = ".tflite"

    def unavailable_reason(self) -> str | None:
        """``None`` when the backend can run here, else what is missing (one line)."""
        return None

    def build(self, source: Any, recipe: Any, calibration: Any, params: dict[str, Any]) -> Any:
        """Build the artifact of ``recipe`` for ``source``."""
        return recipe.build(source, calibration, params)

    def load(self, artifact: Any, threads: int) -> Runner:
        """A :class:`Runner` for ``artifact`` using ``threads`` threads."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {}


class BackendRegistry:
    """Name → backend factory."""

    def __init__(self) -> None:
        self._factories: dict[str, Callable[[], Backend]] = {}
        self._instances: dict[str, Backend] = {}

    def register(self, name: str, factory: Callable[[], Backend]) -> None:
        self._factories[name] = factory
        self._instances.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Backend:
        if name not in self._factories:
            raise UsageError(f"unknown backend {name!r}: valid backends are {', '.join(self.names())}")
        if name not in self._instances:
            self._instances[name] = self._factories[name]()
        return self._instances[name]


ENTRY_POINT_GROUP = "pytest_tfopt.backends"


def default_registry() -> BackendRegistry:
    """A registry holding the built-in backends and those of installed packages (entry points)."""
    from .onnx import OnnxRuntimeBackend
    from .tensorrt import TensorRTBackend
    from .tf import TFBackend, XLABackend
    from .tflite import TFLiteBackend

    registry = BackendRegistry()
    registry.register("tflite", TFLiteBackend)
    registry.register("tensorrt", TensorRTBackend)
    registry.register("tf", TFBackend)
    registry.register("xla", XLABackend)
    registry.register("onnxruntime", OnnxRuntimeBackend)
    from ..variants import load_entry_points

    load_entry_points(registry, ENTRY_POINT_GROUP)
    return registry
