"""TensorFlow backends: the SavedModel's serving signature (``tf``) and the same under XLA (``xla``).

``tf`` is the FP32 reference runtime: the artifact is the source exported as a SavedModel
(Keras 3: ``keras.export.ExportArchive``; tf_keras: ``tf.saved_model.save`` of a serving
``tf.function``; a SavedModel source is copied as given), packed into a deterministic zip
(``.savedmodel.zip``). The runner unpacks it into a temporary directory it owns, loads it
with ``tf.saved_model.load`` and calls ``serving_default`` in padded batches.

``xla`` uses the same kind of artifact and wraps the serving function in
``tf.function(jit_compile=True)``.

Precisions: ``fp32`` and ``bf16`` (the Keras model rebuilt under the ``mixed_bfloat16``
policy: bfloat16 math and activations, float32 weights, outputs cast to float32).
Integer and float16 variants need a converter and an integer runtime; these backends refuse
them with :class:`~pytest_tfopt.errors.BackendUnavailable` (the test skips with the reason).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..errors import BackendUnavailable, ConversionError, DatasetError
from ..models import SourceModel, check_input_shape
from . import Backend, Runner
from ._archive import pack, unpack

DEFAULT_BATCH = 64
PRECISIONS = ("fp32", "bf16")
BF16_POLICY = "mixed_bfloat16"
BF16_DESCRIPTION = (
    "bfloat16 compute (Keras mixed_bfloat16 policy: bf16 math and activations, float32 weights "
    "and outputs); runs on backends tf and xla"
)


# ---- shared by the TensorFlow and ONNX runners -------------------------------------------
def check_batch(x: Any, input_shape: tuple[int | None, ...], name: str) -> np.ndarray:
    """``x`` as a batch (one sample gains a batch axis) that fits ``input_shape``; else a DatasetError."""
    x = np.asarray(x)
    if x.ndim == len(input_shape):
        x = x[None]
    check_input_shape(input_shape, x, "input", name)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetError(f"input dtype {x.dtype} is not numeric: convert it to float32")
    return x


def predict_in_batches(x: np.ndarray, batch_size: int | None, run: Callable[[np.ndarray], Any]) -> np.ndarray:
    """``run`` over ``x`` in equal batches of at most ``batch_size`` (last one padded); float32 outputs.

    The samples are spread evenly over the fewest batches (65 samples with a limit of 64 run as
    33 + 32), so every batch has the same shape: one trace, one XLA compilation.
    """
    n = len(x)
    if n == 0:
        raise DatasetError("predict() got 0 samples: give at least one")
    limit = min(batch_size or DEFAULT_BATCH, n)
    batch = -(-n // -(-n // limit))
    outputs = []
    for start in range(0, n, batch):
        chunk = x[start : start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        outputs.append(np.asarray(run(chunk), dtype=np.float32)[:real])
    return np.concatenate(outputs)


def input_spec(source: SourceModel) -> Any:
    tf = tfenv.tensorflow()
    return tf.TensorSpec((None, *source.input_shape), source.input_dtype, name="input")


def inference_function(source: SourceModel, model: Any = None, cast_to_float32: bool = False) -> Any:
    """A ``tf.function`` with one input signature computing ``source``'s output (inference mode).

    ``model`` replaces ``source.model`` (e.g. a bfloat16 rebuild); a SavedModel source calls its
    ``serving_default`` signature.
    """
    tf = tfenv.tensorflow()
    spec = input_spec(source)
    if source.kind == "saved_model":
        sig = source.model.signatures["serving_default"]
        key = next(iter(sig.structured_input_signature[1]))
        out_key = sorted(sig.structured_outputs)[0]

        def call(x: Any) -> Any:
            return sig(**{key: x})[out_key]
    elif source.kind in ("keras3", "tf_keras"):
        keras_model = source.model if model is None else model

        def call(x: Any) -> Any:
            y = keras_model(x, training=False)
            return tf.cast(y, tf.float32) if cast_to_float32 else y
    else:
        raise BackendUnavailable(
            f"{source.name} is a {source.kind} model: TensorFlow backends need the Keras or SavedModel source"
        )
    return tf.function(call, input_signature=[spec])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


# ---- bf16 ---------------------------------------------------------------------------------
def bf16_model(source: SourceModel, backend: str) -> Any:
    """``source``'s Keras model rebuilt with every layer under the ``mixed_bfloat16`` policy (same weights)."""
    if source.kind == "tf_keras":
        import tf_keras as keras_module
    elif source.kind == "keras3":
        import keras as keras_module
    else:
        raise BackendUnavailable(
            f"variant 'bf16' is not available on backend {backend!r} for {source.name}: bf16 rebuilds a Keras "
            f"model under the {BF16_POLICY} policy and this is a {source.kind} model; give the .keras/.h5 source"
        )
    tfenv.tensorflow()
    mp = keras_module.mixed_precision
    before = mp.global_policy()

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if type(layer).__name__ != "InputLayer" and "dtype" in config:
            config["dtype"] = BF16_POLICY  # an explicit float32 in the config would override the global policy
        return type(layer).from_config(config)

    mp.set_global_policy(BF16_POLICY)
    try:
        rebuilt = keras_module.models.clone_model(source.model, clone_function=clone)
    except Exception as exc:  # custom layers fail to clone in many ways
        raise ConversionError(
            f"could not rebuild {source.name} under the {BF16_POLICY} policy ({_first_line(exc)}): "
            "bf16 needs layers that round-trip through get_config()/from_config()"
        ) from None
    finally:
        mp.set_global_policy(before)
    rebuilt.set_weights(source.model.get_weights())
    return rebuilt


def _bf16_on_tflite(source: SourceModel, calibration: Any, params: dict[str, Any]) -> Artifact:
    """``bf16``'s converter recipe: the TFLite converter has no bfloat16 target, so refuse with the reason."""
    raise BackendUnavailable(
        "variant 'bf16' is not available on backend 'tflite': the TFLite converter and LiteRT have no bfloat16 "
        "kernels; run bf16 with --tfopt-backend=tf or xla"
    )


def register_variants(registry: Any) -> None:
    """Register the ``bf16`` precision (realized by the ``tf`` and ``xla`` backends)."""
    from ..variants import Recipe

    registry.register(Recipe("bf16", _bf16_on_tflite, BF16_DESCRIPTION))


# ---- SavedModel export ------------------------------------------------------------------------
def export_saved_model(source: SourceModel, precision: str, directory: str, backend: str) -> dict[str, str]:
    """Write ``source`` at ``precision`` as a SavedModel with a ``serving_default`` signature into ``directory``."""
    tfenv.tensorflow()
    if source.kind == "saved_model":
        if precision != "fp32":
            bf16_model(source, backend)  # raises the reason
        shutil.copytree(source.path, directory, dirs_exist_ok=True)
        return {"export": "SavedModel copied as given"}
    if source.kind not in ("keras3", "tf_keras"):
        raise BackendUnavailable(
            f"backend {backend!r} cannot run {source.name}: it is a {source.kind} file, and TensorFlow runs "
            "SavedModels; point tfopt_model at the Keras or SavedModel source"
        )
    settings = {"signature": "serving_default", "input": "input"}
    model = source.model
    if precision == "bf16":
        model = bf16_model(source, backend)
        settings["policy"] = BF16_POLICY
        settings["outputs"] = "cast to float32"
    serve = inference_function(source, model, cast_to_float32=precision == "bf16")
    try:
        if source.kind == "keras3":
            import keras

            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint("serving_default", serve)
            archive.write_out(directory, verbose=False)
            settings["export"] = "keras.export.ExportArchive"
        else:
            _save_tf_keras(model, serve, directory)
            settings["export"] = "tf.saved_model.save"
    except (BackendUnavailable, ConversionError):
        raise
    except Exception as exc:
        raise ConversionError(
            f"could not export {source.name} ({precision}) as a SavedModel for backend {backend!r}: "
            f"{_first_line(exc)}"
        ) from None
    return settings


def _save_tf_keras(model: Any, serve: Any, directory: str) -> None:
    """Save the serving function with only the model's variables (no Keras layer metadata); else the model."""
    tf = tfenv.tensorflow()
    signatures = {"serving_default": serve.get_concrete_function()}
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    try:
        tf.saved_model.save(holder, directory, signatures=signatures)
    except (ValueError, AssertionError):  # a resource other than a variable (e.g. a lookup table)
        shutil.rmtree(directory, ignore_errors=True)
        tf.saved_model.save(model, directory, signatures=signatures)


# ---- runner ------------------------------------------------------------------------------------
class TFRunner(Runner):
    """Runs a packed SavedModel's ``serving_default`` signature (optionally XLA-compiled)."""

    def __init__(self, content: bytes, threads: int = 1, name: str = "model", jit_compile: bool = False) -> None:
        tf = tfenv.tensorflow()
        self.name = name
        self._dir = tempfile.mkdtemp(prefix="tfopt-savedmodel-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        unpack(content, self._dir)
        self._loaded = tf.saved_model.load(self._dir)
        sig = self._loaded.signatures["serving_default"]
        key, spec = next(iter(sig.structured_input_signature[1].items()))
        out_key = sorted(sig.structured_outputs)[0]
        self.input_shape = tuple(None if d is None else int(d) for d in spec.shape[1:])
        self._dtype = spec.dtype
        self.info: dict[str, Any] = {
            "threads": threads,
            "runtime": f"tensorflow {tf.__version__} tf.saved_model.load",
            "signature": "serving_default",
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "jit_compile": jit_compile,
        }

        def call(x: Any) -> Any:
            return sig(**{key: x})[out_key]

        self._fn = tf.function(call, jit_compile=jit_compile)

    def _tensor(self, x: np.ndarray) -> Any:
        tf = tfenv.tensorflow()
        return tf.constant(x, dtype=self._dtype)

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        x = check_batch(x, self.input_shape, self.name)
        return predict_in_batches(x, batch_size, lambda chunk: self._fn(self._tensor(chunk)).numpy())

    def prepare(self, x: np.ndarray) -> Callable[[], None]:
        tensor = self._tensor(check_batch(x, self.input_shape, self.name))
        fn = self._fn.get_concrete_function(tensor)  # traced (and XLA-compiled) for this batch: no dispatch cost

        def invoke() -> None:
            fn(tensor)

        return invoke

    def close(self) -> None:
        """Remove the unpacked SavedModel now (it is removed at garbage collection anyway)."""
        self._cleanup()


class TFBackend(Backend):
    """TensorFlow's SavedModel runtime: the FP32 reference."""

    name = "tf"
    artifact_suffix = ".savedmodel.zip"
    jit_compile = False

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("tensorflow") is None:
            return f"backend {self.name!r} needs TensorFlow: pip install tensorflow"
        return None

    def unsupported_reason(self, variant: str, params: dict[str, Any] | None = None) -> str | None:
        """Why precision ``variant`` cannot be built here (``None`` when it can); checked before any work."""
        if variant in PRECISIONS:
            return None
        return (
            f"variant {variant!r} is not available on backend {self.name!r}: TensorFlow runs float SavedModels "
            f"(fp32, bf16); use tflite, onnxruntime or openvino for {variant}"
        )

    def build(self, source: SourceModel, recipe: Any, calibration: Any, params: dict[str, Any]) -> Artifact:
        self.refuse_unsupported(recipe.name, params)
        with tempfile.TemporaryDirectory(prefix="tfopt-export-") as tmp:
            directory = f"{tmp}/saved_model"
            settings = export_saved_model(source, recipe.name, directory, self.name)
            content = pack(directory)
        return Artifact(
            content,
            {"variant": recipe.name, "converter": "SavedModel export", "settings": settings, "format": "zip"},
            self.artifact_suffix,
        )

    def load(self, artifact: Artifact, threads: int) -> TFRunner:
        return TFRunner(artifact.content, threads, name=artifact.variant, jit_compile=self.jit_compile)


class XLABackend(TFBackend):
    """The SavedModel's serving function compiled with XLA (``tf.function(jit_compile=True)``)."""

    name = "xla"
    jit_compile = True

    def load(self, artifact: Artifact, threads: int) -> TFRunner:
        runner = super().load(artifact, threads)
        shape = tuple(d or 1 for d in runner.input_shape)
        try:  # compile once now: an op XLA cannot compile is a clear skip, not a failure mid-measurement
            runner.predict(np.zeros((1, *shape), dtype=np.float32))
        except Exception as exc:
            if type(exc).__name__ not in ("InvalidArgumentError", "UnimplementedError", "InternalError"):
                raise
            runner.close()
            raise BackendUnavailable(
                f"backend 'xla' cannot compile {artifact.variant}: {_first_line(exc)} "
                "(run it on backend tf instead)"
            ) from None
        return runner
