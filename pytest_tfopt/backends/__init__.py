"""Backends: runtimes that turn a variant of a source model into something that runs.

Every backend implements :class:`Backend`; the built-ins register in
:func:`default_registry` through the same :meth:`BackendRegistry.register` a
third party uses (see ``hookspecs.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..entry_points import load_entry_points
from ..errors import BackendUnavailable, UsageError


class Runner:
    """A loaded artifact that runs batches. ``info`` records how (delegate, threads, fallbacks).

    ``signature`` names its inputs and outputs (:mod:`pytest_tfopt.signature`); ``input_shape`` is
    the first input's per-sample shape.
    """

    info: dict[str, Any]
    input_shape: tuple[int | None, ...]
    signature: Any = None

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """Float outputs for inputs ``x`` (an array, or a mapping input name → array; first axis = samples).

        Returns an array for a one-output model, else a dict output name → array.
        """
        raise NotImplementedError

    def prepare(self, x: Any) -> Callable[[], None]:
        """Load the batch ``x`` (array or mapping by input name) and return a function that runs one invocation only."""
        raise NotImplementedError

    def memory_info(self) -> dict[str, int]:
        """What the runtime reports about its own tensor memory, bytes (``{}`` when it reports nothing).

        TFLite: ``activation_bytes`` (non-constant tensors) and ``weight_bytes`` (constant ones).
        """
        return {}


class Backend:
    """A runtime. Subclasses set ``name`` and override the methods."""

    name = "?"
    artifact_suffix = ".tflite"

    def unavailable_reason(self) -> str | None:
        """``None`` when the backend can run here, else what is missing (one line)."""
        return None

    def unsupported_reason(self, variant: str, params: dict[str, Any] | None = None) -> str | None:
        """Why precision ``variant`` (with ``params``) cannot be built here; ``None`` when it can.

        Checked before any model-level transform runs, so ``pruned(...)+int8`` on a backend
        without int8 skips at once instead of after a fine-tune.
        """
        return None

    def refuse_unsupported(self, variant: str, params: dict[str, Any]) -> None:
        """Raise :class:`~pytest_tfopt.errors.BackendUnavailable` when :meth:`unsupported_reason` says so.

        The workbench asks before any work; backends call this again first thing in :meth:`build`
        for callers that build directly.
        """
        reason = self.unsupported_reason(variant, params)
        if reason:
            raise BackendUnavailable(reason)

    def build(self, source: Any, recipe: Any, calibration: Any, params: dict[str, Any]) -> Any:
        """Build the artifact of ``recipe`` for ``source``: refuse a variant this backend cannot build, check
        that the calibration data fits the model, then :meth:`convert`. Backends override :meth:`convert`."""
        self.refuse_unsupported(recipe.name, params)
        if calibration is not None:
            source.check_inputs(calibration.x, "calibration data")
        return self.convert(source, recipe, calibration, params)

    def convert(self, source: Any, recipe: Any, calibration: Any, params: dict[str, Any]) -> Any:
        """This backend's conversion of ``source`` at ``recipe``'s precision (default: the recipe's own build,
        the TFLite converter). ``calibration`` (or ``None``) already fits the model's inputs."""
        return recipe.build(source, calibration, params)

    def load(self, artifact: Any, threads: int) -> Runner:
        """A :class:`Runner` for ``artifact`` using ``threads`` threads."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {}


def tflite_only_reason(backend: str, variant: str, params: dict[str, Any] | None) -> str | None:
    """Why ``variant`` with ``params`` cannot be built on ``backend`` for want of an accuracy-aware search
    (``int8(max_drop=...)``: TFLite's QuantizationDebugger layer search on ``tflite``, NNCF's
    ``quantize_with_accuracy_control`` on ``openvino``), else ``None``."""
    if variant == "int8" and (params or {}).get("max_drop") is not None and backend not in ("tflite", "openvino"):
        return (
            f"variant 'int8(max_drop=...)' is not available on backend {backend!r}: the layer search uses "
            "TFLite's QuantizationDebugger (tflite) or NNCF's accuracy control (openvino); use one of those, "
            "or plain int8 here"
        )
    return None


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


# Built-in backends: name -> "module:class" (imported only when the backend is first used).
BUILTINS: dict[str, str] = {
    "tflite": "tflite:TFLiteBackend",
    "tf": "tf:TFBackend",
    "xla": "tf:XLABackend",
    "onnxruntime": "onnx:OnnxRuntimeBackend",
    "tensorrt": "tensorrt:TensorRTBackend",
    "openvino": "openvino:OpenVINOBackend",
    "serving": "serving:ServingBackend",
}


def _builtin(target: str) -> Callable[[], Backend]:
    def factory() -> Backend:
        import importlib

        module, cls = target.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)()

    return factory


def default_registry() -> BackendRegistry:
    """A registry holding the built-in backends and those of installed packages (entry points)."""
    registry = BackendRegistry()
    for name, target in BUILTINS.items():
        registry.register(name, _builtin(target))
    load_entry_points(registry, ENTRY_POINT_GROUP)
    return registry
