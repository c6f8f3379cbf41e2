"""TensorFlow backends: the SavedModel's serving signature (``tf``) and the same under XLA (``xla``).

``tf`` is the FP32 reference runtime: the artifact is the source exported as a SavedModel
(Keras 3: ``keras.export.ExportArchive``; tf_keras: ``tf.saved_model.save`` of the source's
serving ``tf.function``; a SavedModel source is copied as given, or re-saved with its tested
signature as ``serving_default`` when that is another one), packed into a deterministic zip
(``.savedmodel.zip``). The ``serving_default`` signature takes and returns the model's inputs and
outputs by name (its keys). The runner unpacks it into a temporary directory it owns, loads it
with ``tf.saved_model.load`` and calls ``serving_default`` in padded batches, every input in its
own dtype (integer ids as integers), free axes at the data's shapes.

``xla`` uses the same kind of artifact and wraps the serving function in
``tf.function(jit_compile=True)``; loading compiles it once on zeros (free axes of size 8) so an
op XLA cannot compile is a skip.

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
from ..errors import BackendUnavailable, ConversionError, first_line
from ..models import DEFAULT_SIGNATURE, SourceModel
from ..signature import Signature, TensorInfo, dtype_name, run_in_batches
from . import Backend, Runner
from ._archive import pack, unpack

DEFAULT_BATCH = 64
WARM_UP_FREE_AXIS = 8  # size of a free (None) axis in the XLA warm-up compile
PRECISIONS = ("fp32", "bf16")
BF16_POLICY = "mixed_bfloat16"
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
            f"could not rebuild {source.name} under the {BF16_POLICY} policy ({first_line(exc)}): "
            "bf16 needs layers that round-trip through get_config()/from_config()"
        ) from None
    finally:
        mp.set_global_policy(before)
    rebuilt.set_weights(source.model.get_weights())
    return rebuilt


# ---- SavedModel export ------------------------------------------------------------------------
def export_saved_model(source: SourceModel, precision: str, directory: str, backend: str) -> dict[str, str]:
    """Write ``source`` at ``precision`` as a SavedModel with a ``serving_default`` signature into ``directory``.

    The signature takes and returns the model's inputs and outputs by name (its keys). A SavedModel
    source is copied as given when its signature is ``serving_default``; one tested through another
    signature (``ini tfopt_signature``) is re-saved with that signature as ``serving_default``.
    """
    tfenv.tensorflow()
    if source.kind == "saved_model":
        if precision != "fp32":
            bf16_model(source, backend)  # raises the reason
        if source.signature_key == DEFAULT_SIGNATURE:
            shutil.copytree(source.path, directory, dirs_exist_ok=True)
            return {"export": "SavedModel copied as given"}
        _resave_saved_model(source, directory, backend)
        return {"export": f"SavedModel re-saved with its {source.signature_key!r} signature as serving_default",
                "signature": DEFAULT_SIGNATURE}
    if source.kind not in ("keras3", "tf_keras"):
        raise BackendUnavailable(
            f"backend {backend!r} cannot run {source.name}: it is a {source.kind} file, and TensorFlow runs "
            "SavedModels; point tfopt_model at the Keras or SavedModel source"
        )
    settings = {"signature": DEFAULT_SIGNATURE, "inputs": ", ".join(source.signature.input_names),
                "outputs": ", ".join(source.signature.output_names)}
    model = source.model
    if precision == "bf16":
        model = bf16_model(source, backend)
        settings["policy"] = BF16_POLICY
        settings["output_dtype"] = "cast to float32"
    serve = source.serving_function(model, cast_to_float32=precision == "bf16")
    try:
        if source.kind == "keras3":
            import keras

            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint(DEFAULT_SIGNATURE, serve)
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
            f"{first_line(exc)}"
        ) from None
    return settings


def _resave_saved_model(source: SourceModel, directory: str, backend: str) -> None:
    """Save the loaded SavedModel again with its ``source.signature_key`` signature as ``serving_default``."""
    tf = tfenv.tensorflow()
    try:
        tf.saved_model.save(source.model, directory,
                            signatures={DEFAULT_SIGNATURE: source.model.signatures[source.signature_key]})
    except Exception as exc:
        raise ConversionError(
            f"could not re-save {source.name} with its {source.signature_key!r} signature as serving_default for "
            f"backend {backend!r}: {first_line(exc)} (export it with that signature as serving_default)"
        ) from None


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
def saved_model_signature(sig: Any) -> Signature:
    """The named inputs and outputs of a loaded SavedModel signature (keys sorted, as everywhere)."""
    specs = sig.structured_input_signature[1]
    outputs = sig.structured_outputs

    def info(name: str, spec: Any) -> TensorInfo:
        return TensorInfo(name, tuple(None if d is None else int(d) for d in spec.shape[1:]), dtype_name(spec.dtype))

    return Signature(tuple(info(k, specs[k]) for k in sorted(specs)), tuple(info(k, outputs[k]) for k in sorted(outputs)))


class TFRunner(Runner):
    """Runs a packed SavedModel's ``serving_default`` signature (optionally XLA-compiled), inputs and outputs by key.

    Free (``None``) axes run at the data's shapes: each new shape is one more trace (and XLA compilation).
    """

    def __init__(self, content: bytes, threads: int = 1, name: str = "model", jit_compile: bool = False) -> None:
        tf = tfenv.tensorflow()
        self.name = name
        self._dir = tempfile.mkdtemp(prefix="tfopt-savedmodel-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        unpack(content, self._dir)
        self._loaded = tf.saved_model.load(self._dir)
        sig = self._loaded.signatures[DEFAULT_SIGNATURE]
        self.signature = saved_model_signature(sig)
        self.input_shape = self.signature.inputs[0].shape  # the first input's, for callers of one-input models
        self.info: dict[str, Any] = {
            "threads": threads,
            "runtime": f"tensorflow {tf.__version__} tf.saved_model.load",
            "signature": DEFAULT_SIGNATURE,
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "jit_compile": jit_compile,
        }

        def call(feed: Any) -> Any:
            return sig(**feed)

        self._fn = tf.function(call, jit_compile=jit_compile)

    def _tensors(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        tf = tfenv.tensorflow()
        return {n: tf.constant(v) for n, v in feed.items()}  # ``feed`` is already in each input's dtype

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: v.numpy() for n, v in self._fn(self._tensors(feed)).items()}

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        feed = self.signature.feed(x, "input", self.name)
        return self.signature.result(run_in_batches(feed, batch_size, self._run, DEFAULT_BATCH))

    def prepare(self, x: Any) -> Callable[[], None]:
        tensors = self._tensors(self.signature.feed(x, "input", self.name))
        fn = self._fn.get_concrete_function(tensors)  # traced (and XLA-compiled) for this batch: no dispatch cost

        def invoke() -> None:
            fn(tensors)

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

    def convert(self, source: SourceModel, recipe: Any, calibration: Any, params: dict[str, Any]) -> Artifact:
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
        try:  # compile once now: an op XLA cannot compile is a clear skip, not a failure mid-measurement
            runner.predict(warm_up_batch(runner.signature))
        except Exception as exc:
            if type(exc).__name__ not in ("InvalidArgumentError", "UnimplementedError", "InternalError"):
                raise
            runner.close()
            raise BackendUnavailable(
                f"backend 'xla' cannot compile {artifact.variant}: {first_line(exc)} "
                "(run it on backend tf instead)"
            ) from None
        return runner


def warm_up_batch(signature: Signature, free: int = WARM_UP_FREE_AXIS) -> dict[str, np.ndarray]:
    """One sample of zeros for every input, in its dtype (integer ids as 0), ``free`` on free axes."""
    return {t.name: np.zeros((1, *(free if d is None else d for d in t.shape)), dtype=t.dtype) for t in signature.inputs}
