"""Lazy, explicit TensorFlow set-up: Keras flavour, log level and thread caps.

TensorFlow is imported only through :func:`tensorflow`, so importing
``pytest_tfopt`` (or running ``pytest --help``) never loads it. Thread settings
only take effect before TensorFlow's first op; :func:`configure` must therefore
run before anything touches TensorFlow, and the plugin calls it from
``pytest_configure``.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

KERAS_MODES = ("auto", "legacy")


@dataclass(frozen=True)
class TfSettings:
    """What to apply when TensorFlow is first imported.

    ``keras``: ``"auto"`` leaves ``tf.keras`` as TensorFlow ships it (Keras 3);
    ``"legacy"`` sets ``TF_USE_LEGACY_KERAS=1`` so ``tf.keras`` is tf_keras
    (Keras 2), which tfmot needs. pytest-tfopt itself never relies on
    ``tf.keras``: it loads each model file with the Keras that wrote it.
    ``threads``: intra-op thread cap (inter-op is 1); ``None`` keeps TF's default.
    """

    keras: str = "auto"
    threads: int | None = None


_settings = TfSettings()
_tf: Any = None


def configure(settings: TfSettings) -> None:
    """Record the settings and apply the environment part right away."""
    global _settings
    if settings.keras not in KERAS_MODES:
        raise UsageError(
            f"tfopt_keras = {settings.keras!r} is not a Keras mode: use one of {', '.join(KERAS_MODES)}"
        )
    _settings = settings
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if settings.keras == "legacy":
        if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
            warnings.warn(
                "tfopt_keras = legacy was set after TensorFlow was imported; "
                "tf.keras may still be Keras 3 (set it before importing tensorflow)",
                stacklevel=2,
            )
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    if settings.threads and "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(settings.threads))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def tensorflow() -> Any:
    """Import TensorFlow once, applying the thread caps before its first op."""
    global _tf
    if _tf is None:
        import tensorflow as tf

        if _settings.threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(_settings.threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass  # TF already ran an op (e.g. in a user's conftest); keep its pools
        _tf = tf
    return _tf


def default_threads() -> int:
    """Cores per pytest process: all cores, shared out among xdist workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, cores // max(1, workers))


def dist_versions(*dists: str) -> dict[str, str]:
    """Installed version of each distribution in ``dists`` (the ones not installed are left out)."""
    from importlib import metadata

    out = {}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def library_versions() -> dict[str, str]:
    """Versions of the libraries an artifact depends on (part of its cache key)."""
    return dist_versions("tensorflow", "tensorflow-cpu", "ai-edge-litert", "keras", "tf-keras", "numpy")


def tfmot() -> Any:
    """Import tensorflow_model_optimization without letting it flip ``tf.keras``.

    tfmot sets ``TF_USE_LEGACY_KERAS=1`` at import and then touches ``tf.keras``;
    if nothing resolved ``tf.keras`` before, it becomes tf_keras for the whole
    process. Under ``tfopt_keras = auto`` we resolve ``tf.keras`` first and restore
    the variable afterwards, so what ``tf.keras`` is never depends on import order.
    tfmot itself always works on tf_keras models.
    """
    tf = tensorflow()
    with warnings.catch_warnings():
        # tfmot 0.8.1 checks versions with distutils.LooseVersion at import: our dependency's noise, not the user's
        warnings.filterwarnings("ignore", category=DeprecationWarning, message="distutils Version classes")
        if "tensorflow_model_optimization" not in sys.modules and _settings.keras == "auto":
            before = os.environ.get("TF_USE_LEGACY_KERAS")
            getattr(tf.keras, "__name__", None)  # resolve the lazy tf.keras now, as configured
            try:
                import tensorflow_model_optimization as mot
            finally:
                if before is None:
                    os.environ.pop("TF_USE_LEGACY_KERAS", None)
                else:
                    os.environ["TF_USE_LEGACY_KERAS"] = before
            return mot
        import tensorflow_model_optimization as mot

    return mot
