"""Lazy, explicit TensorFlow set-up: Keras flavour, log level, thread caps, and native libraries' noise.

TensorFlow is imported only through :func:`tensorflow`, so importing
``pytest_tfopt`` (or running ``pytest --help``) never loads it. Thread settings
only take effect before TensorFlow's first op; :func:`configure` must therefore
run before anything touches TensorFlow, and the plugin calls it from
``pytest_configure``.

Native libraries print to file descriptor 2 behind Python's back (absl's ``WARNING: All log messages
before absl::InitializeLog()``, TensorFlow's C++ ``I0000``/``E0000`` lines, the converter's
``fully_quantize: 0, ...``, LiteRT's XNNPACK ``INFO``), where they land in every failing test's
"Captured stderr". ``TF_CPP_MIN_LOG_LEVEL=2`` stops TensorFlow's own INFO and WARNING lines, but absl
writes everything logged before its initialisation and the converter prints directly, so
:func:`native_output` captures fd 2 around those calls and keeps the text for when the call fails.
``TFOPT_NATIVE_LOGS=1`` lets it all through again.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

KERAS_MODES = ("auto", "legacy")
#: set to 1 to see native libraries' stderr output as they print it (no capture)
NATIVE_LOGS_ENV = "TFOPT_NATIVE_LOGS"
#: libraries whose warnings raised inside :func:`native_output` are their noise, never the user's or ours
LIBRARY_MODULES = (r"(tensorflow|tf_keras|keras|absl|tensorflow_model_optimization|ai_edge_litert|tflite_runtime"
                   r"|google\.protobuf|flatbuffers|h5py|ml_dtypes)(\.|$)")
#: warning categories the libraries above raise as noise (deprecations of their own internals, converter notes)
NOISE_CATEGORIES = (UserWarning, DeprecationWarning, PendingDeprecationWarning, FutureWarning)
#: lines of a native log that carry nothing when a call fails (INFO lines, absl's pre-initialisation notice)
_CHATTER = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} |INFO: ")


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
    _quiet_environment()
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


def _quiet_environment() -> None:
    """The environment TensorFlow reads at import: C++ log level ERROR (the user's own setting wins)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tensorflow() -> Any:
    """Import TensorFlow once, applying the thread caps before its first op.

    The import and the device discovery (where CUDA-less machines log ``failed call to cuInit``) run
    inside :func:`native_output`: what they print is replayed only if they fail.
    """
    global _tf
    if _tf is None:
        _quiet_environment()
        with native_output(replay=True):
            import tensorflow as tf

            if _settings.threads:
                try:
                    tf.config.threading.set_intra_op_parallelism_threads(_settings.threads)
                    tf.config.threading.set_inter_op_parallelism_threads(1)
                except RuntimeError:
                    pass  # TF already ran an op (e.g. in a user's conftest); keep its pools
            tf.config.list_physical_devices()  # discovers devices now, quietly; thread caps still apply after
        _tf = tf
    return _tf


@dataclass
class NativeLog:
    """What native code printed to stderr inside one :func:`native_output` block (filled when it ends)."""

    text: str = ""

    def lines(self) -> list[str]:
        """The lines worth showing when the call failed: no blank, INFO or absl start-up lines."""
        return [ln.strip() for ln in self.text.splitlines() if ln.strip() and not _CHATTER.match(ln)]

    def tail(self, count: int = 3, width: int = 200) -> str:
        """The last ``count`` lines worth showing, each cut to ``width`` characters, joined by `` | ``."""
        return " | ".join(ln[:width] for ln in self.lines()[-count:])


#: one capture of fd 2 at a time: fd 2 is the process's, and nested captures must restore in order
_capture_lock = threading.RLock()


@contextlib.contextmanager
def native_output(replay: bool = False) -> Iterator[NativeLog]:
    """Capture what native libraries print to file descriptor 2 while the block runs.

    Yields a :class:`NativeLog`, filled when the block ends. ``replay``: when the block raises, the captured
    text is written to ``sys.stderr`` (where a test's captured output shows it). Warnings of the
    :data:`NOISE_CATEGORIES` raised from :data:`LIBRARY_MODULES` are ignored inside the block; warnings
    from any other module (the user's, ours) pass as usual. Python-level writes to ``sys.stderr`` are not
    captured. With ``TFOPT_NATIVE_LOGS=1``, or when fd 2 cannot be duplicated, nothing is captured.
    """
    log = NativeLog()
    if os.environ.get(NATIVE_LOGS_ENV, "") not in ("", "0"):
        yield log
        return
    with _capture_lock, warnings.catch_warnings(), tempfile.TemporaryFile() as sink:
        for category in NOISE_CATEGORIES:
            warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)
        try:
            saved = os.dup(2)
        except OSError:
            yield log
            return
        _flush_stderr()
        os.dup2(sink.fileno(), 2)
        try:
            yield log
        except BaseException:
            _restore(saved, sink, log)
            if replay and log.text:
                sys.stderr.write(log.text)
            raise
        _restore(saved, sink, log)


def _restore(saved: int, sink: Any, log: NativeLog) -> None:
    """Point fd 2 back where it was and read what was printed into ``log``."""
    _flush_stderr()
    os.dup2(saved, 2)
    os.close(saved)
    sink.seek(0)
    log.text = sink.read().decode("utf-8", errors="replace")


def _flush_stderr() -> None:
    with contextlib.suppress(Exception):  # a replaced or closed sys.stderr: nothing buffered to lose
        sys.stderr.flush()


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
