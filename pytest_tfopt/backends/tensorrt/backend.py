"""The tensorrt backend itself: :class:`TensorRTBackend` wires the stages together.

``build`` makes the ONNX graph for the precision (:mod:`.export`), its optimization profile and
engine cache key (:mod:`.engine`), then either builds the engine (TensorRT Python route: the engine
is the artifact, ``.engine``) or keeps the ONNX bytes (ONNX Runtime route, ``.onnx``: ORT builds
the engine on load). ``load`` checks the GPU matches the one the engine was built for and returns
the route's runner (:mod:`.runtime` or :mod:`.ort`). :meth:`TensorRTBackend.versions` puts the
TensorRT version, GPU name, compute capability and profile limits in the cache key.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from ... import tfenv
from ...artifact import Artifact
from ...dataset import Dataset
from ...errors import BackendUnavailable, UsageError, setting
from ...models import SourceModel
from ...security import private_dir, user_cache_dir
from .. import Backend, Runner, tflite_only_reason
from ..onnx_convert import graph_feed, missing_packages, opset_from_env
from . import engine, machine  # probes called as machine.X: replacing one there reaches every caller
from .engine import Profile, build_engine, engine_cache_key, input_shapes, optimization_profile
from .export import PRECISIONS, onnx_for_tensorrt, onnx_precision, unsupported_message
from .machine import Gpu
from .ort import ROUTE_ORT, OrtTensorRTRunner, ort_provider_options, ort_tensorrt_session
from .runtime import ROUTE_TENSORRT, TensorRTRunner


def _env_int(name: str, default: int) -> int:
    """The positive integer in environment variable ``name`` (``default`` when unset); a UsageError otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{name}={raw!r} is not a positive integer: e.g. {name}={default}")
    return int(raw)


class TensorRTBackend(Backend):
    """TensorRT on an NVIDIA GPU (TensorRT Python API, or ONNX Runtime's TensorRT execution provider)."""

    name = "tensorrt"

    def __init__(self, opset: int | None = None, workspace_bytes: int | None = None, max_batch: int | None = None,
                 engine_cache_dir: str | None = None, max_axis: int | None = None) -> None:
        self._opset = opset
        self._workspace = workspace_bytes
        self._max_batch = max_batch
        self._max_axis = max_axis
        self._engine_cache_dir = engine_cache_dir
        self._probed: tuple[Gpu | None, str] | None = None

    # settings (read when used, so env vars set by a conftest apply)
    @property
    def opset(self) -> int:
        return int(self._opset) if self._opset is not None else opset_from_env()

    @property
    def workspace_bytes(self) -> int:
        return self._workspace or _env_int(engine.WORKSPACE_ENV, engine.DEFAULT_WORKSPACE_MB) << 20

    @property
    def max_batch(self) -> int:
        return self._max_batch or _env_int(engine.MAX_BATCH_ENV, engine.DEFAULT_MAX_BATCH)

    @property
    def max_axis(self) -> int:
        """Largest size of a free non-batch axis (height, width, length) in the optimization profile."""
        return self._max_axis or _env_int(engine.MAX_AXIS_ENV, engine.DEFAULT_MAX_AXIS)

    def profile(self, onnx_bytes: bytes, calibration: Dataset | None = None) -> Profile:
        """The optimization profile of ``onnx_bytes``'s inputs (graph names): free axes tuned at ``calibration``'s shapes."""
        import onnx

        proto = onnx.load_from_string(onnx_bytes)
        seen = None
        if calibration is not None:
            seen = {k: v.shape[1:] for k, v in graph_feed(proto, calibration.x).items()}
        return optimization_profile(input_shapes(proto), self.max_batch, self.max_axis, seen)

    @property
    def engine_cache_dir(self) -> str:
        # engines can carry plugins that run on load: only from a directory private to this user
        return private_dir(self._engine_cache_dir or os.environ.get(engine.ENGINE_CACHE_ENV)
                           or user_cache_dir("trt-engines"))

    def gpu(self) -> tuple[Gpu | None, str]:
        """The GPU (probed once per backend instance) and, without one, why."""
        if self._probed is None:
            self._probed = machine.probe_gpu()
        return self._probed

    @property
    def route(self) -> str | None:
        """Which runtime builds and runs engines here, ``None`` when neither is installed."""
        if machine.has_module("tensorrt") and machine.has_cuda_python():
            return ROUTE_TENSORRT
        if machine.ort_has_tensorrt_ep():
            return ROUTE_ORT
        return None

    @property
    def artifact_suffix(self) -> str:  # type: ignore[override]
        return ".onnx" if self.route == ROUTE_ORT else ".engine"

    def unavailable_reason(self) -> str | None:
        missing = []
        gpu, why = self.gpu()
        if gpu is None:
            missing.append(why)
        onnx_missing = missing_packages()
        if onnx_missing:
            missing.append(f"{', '.join(map(repr, onnx_missing))} not installed (pip install tf2onnx onnx onnxruntime)")
        if self.route is None:
            parts = []
            if not machine.has_module("tensorrt"):
                parts.append("the Python package 'tensorrt' is not installed (pip install tensorrt)")
            if not machine.has_cuda_python():
                parts.append("'cuda-python' is not installed (pip install cuda-python)")
            missing.append("; ".join(parts) + ", or instead of " + ("both" if len(parts) > 1 else "it")
                           + ": onnxruntime-gpu with TensorrtExecutionProvider (pip install onnxruntime-gpu)")
        if missing:
            return "backend 'tensorrt' is not available on this machine: " + "; ".join(missing)
        return None

    def unsupported_reason(self, variant: str, params: dict[str, Any] | None = None) -> str | None:
        if variant not in PRECISIONS:
            return unsupported_message(variant)
        return tflite_only_reason(self.name, variant, params)

    def _trt_version(self, route: str | None) -> str:
        if route == ROUTE_ORT:
            from importlib import metadata

            try:
                ort = metadata.version("onnxruntime-gpu")
            except metadata.PackageNotFoundError:
                ort = "?"
            return f"onnxruntime-gpu {ort} + TensorRT {machine.tensorrt_version() or 'system'}"
        return machine.tensorrt_version()

    def versions(self) -> dict[str, str]:
        """Cache-key material: an engine is only valid for this TensorRT, GPU model, opset and profile."""
        gpu, _ = self.gpu()
        route = self.route
        out = {
            "onnx-opset": str(self.opset), "tensorrt-route": str(route), "tensorrt": self._trt_version(route),
            "gpu": gpu.name if gpu else "none", "compute-capability": gpu.compute_capability if gpu else "none",
            "trt-workspace-bytes": str(self.workspace_bytes), "trt-max-batch": str(self.max_batch),
            "trt-max-axis": str(self.max_axis),
        }
        out.update(tfenv.dist_versions("tf2onnx", "onnxruntime", "onnxruntime-gpu", "onnx", "onnxconverter-common", "cuda-python"))
        return out

    def convert(self, source: SourceModel, recipe: Any, calibration: Any, params: dict[str, Any]) -> Artifact:
        precision = recipe.name
        route, (gpu, why) = self.route, self.gpu()
        if route is None or gpu is None:
            raise BackendUnavailable(self.unavailable_reason() or why)
        settings: dict[str, str] = {"opset": str(self.opset)}
        onnx_bytes = onnx_for_tensorrt(source, precision, calibration, self.opset, settings)
        profile = self.profile(onnx_bytes, calibration)
        trt_version = self._trt_version(route)
        key = engine_cache_key(onnx_bytes, precision, trt_version, gpu.name, gpu.compute_capability,
                               self.workspace_bytes, self.max_batch, profile)
        meta = {
            "variant": precision, "precision": precision, "converter": "tf2onnx", "route": route,
            "settings": {**settings, "workspace_bytes": str(self.workspace_bytes), "max_batch": str(self.max_batch),
                         "max_axis": str(self.max_axis)},
            "tensorrt": trt_version, "gpu": gpu.name, "compute_capability": gpu.compute_capability,
            "engine_cache_key": key, "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "profile": {name: [list(shape) for shape in shapes] for name, shapes in profile.items()},
        }
        if route == ROUTE_ORT:  # ORT builds the engine on load and caches it under the key
            return Artifact(onnx_bytes, meta, ".onnx")
        serialized = build_engine(onnx_bytes, precision, self.workspace_bytes, profile)
        return Artifact(serialized, meta, ".engine")

    def load(self, artifact: Artifact, threads: int) -> Runner:
        gpu, why = self.gpu()
        if gpu is None:
            raise BackendUnavailable(f"backend 'tensorrt' is not available on this machine: {why}")
        meta = artifact.metadata
        built_on = meta.get("compute_capability")
        if built_on and built_on != gpu.compute_capability:
            raise BackendUnavailable(
                f"backend 'tensorrt': the {artifact.variant} engine was built for compute capability {built_on}, this GPU "
                f"({gpu.name}) is {gpu.compute_capability}: run with {setting('rebuild')}"
            )
        info = {"threads": threads, "gpu": gpu.name, "compute_capability": gpu.compute_capability}
        # the route is part of the cache key, so an artifact without a known suffix (memory probe) is this route's
        if artifact.suffix == ".onnx" or (artifact.suffix != ".engine" and self.route == ROUTE_ORT):
            precision = meta.get("precision") or onnx_precision(artifact.content)
            stored = meta.get("profile")
            profile = ({k: tuple(tuple(s) for s in v) for k, v in stored.items()} if stored
                       else self.profile(artifact.content))
            key = meta.get("engine_cache_key") or engine_cache_key(
                artifact.content, precision, self._trt_version(ROUTE_ORT), gpu.name, gpu.compute_capability,
                self.workspace_bytes, self.max_batch, profile)
            cache_path = os.path.join(self.engine_cache_dir, key)
            os.makedirs(cache_path, exist_ok=True)
            info.update(precision=precision, tensorrt=self._trt_version(ROUTE_ORT), engine_cache=cache_path)
            options = ort_provider_options(precision, cache_path, self.workspace_bytes, profile)
            info["provider_options"] = {k: str(v) for k, v in options.items()}
            return OrtTensorRTRunner(ort_tensorrt_session(artifact.content, threads, options), artifact.variant, info)
        info.update(precision=meta.get("precision", artifact.variant))
        return TensorRTRunner(artifact.content, artifact.variant, info)
