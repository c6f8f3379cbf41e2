"""The :class:`SourceModel` type: the FP32 model every variant is built from, its signature and hash.

Loading one (:func:`~pytest_tfopt.models.load_model`) lives in :mod:`.loading` and the per-format
modules (:mod:`.keras`, :mod:`.saved_model`, :mod:`.tflite`); they all report an unreadable file
with :func:`damaged`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import tfenv
from ..errors import ModelLoadError, first_line
from ..keras_io import keras_input_structure, keras_outputs, structured
from ..signature import Signature, TensorInfo, check_array

DEFAULT_SIGNATURE = "serving_default"


@dataclass(eq=False)
class SourceModel:
    """The FP32 model every variant is built from.

    ``kind`` is ``"keras3"``, ``"tf_keras"``, ``"saved_model"`` or ``"tflite"``; ``signature`` names its
    inputs and outputs (see :mod:`pytest_tfopt.signature` for the names and their order);
    ``signature_key`` is the SavedModel/TFLite signature used (``serving_default`` unless told).
    """

    kind: str
    name: str
    signature: Signature
    hash: str
    model: Any = None
    path: str | None = None
    content: bytes | None = field(default=None, repr=False)
    signature_key: str = DEFAULT_SIGNATURE
    #: how a subclassed Keras model takes its inputs (a dict's names or one name), known from its traced call
    input_structure: Any = None

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """Per-sample shape of the first input (``None`` for free axes)."""
        return self.signature.inputs[0].shape

    @property
    def input_dtype(self) -> str:
        """dtype of the first input."""
        return self.signature.inputs[0].dtype

    def serving_function(self, model: Any = None, cast_to_float32: bool = False) -> Any:
        """A ``tf.function`` taking one dict input name → tensor and returning a dict output name → tensor.

        Its input signature holds one ``TensorSpec`` per input, named after it (batch axis free), so
        TFLite signatures, SavedModel signatures and ONNX graphs made from it use the model's own
        names. ``model`` replaces ``self.model`` (e.g. a bfloat16 rebuild of a Keras model).
        """
        tf = tfenv.tensorflow()
        specs = {t.name: tf.TensorSpec((None, *t.shape), t.dtype, name=t.name) for t in self.signature.inputs}
        names = self.signature.output_names
        if self.kind == "saved_model":
            sig = self.model.signatures[self.signature_key]

            def call(feed: Any) -> Any:
                out = sig(**feed)
                return {n: out[n] for n in names}
        elif self.kind in ("keras3", "tf_keras"):
            keras_model = self.model if model is None else model
            structure = self.input_structure or keras_input_structure(keras_model)

            def call(feed: Any) -> Any:
                out = keras_outputs(keras_model(structured(feed, structure), training=False), names)
                return {n: tf.cast(v, tf.float32) for n, v in out.items()} if cast_to_float32 else out
        else:
            raise ModelLoadError(
                f"{self.name} is a {self.kind} model: this needs the Keras or SavedModel source"
            )
        return tf.function(call, input_signature=[specs])

    def converter(self) -> Any:
        """A fresh ``tf.lite.TFLiteConverter`` for this model; the TFLite signature keeps the input/output names."""
        tf = tfenv.tensorflow()
        if self.kind == "saved_model":
            return tf.lite.TFLiteConverter.from_saved_model(self.path, signature_keys=[self.signature_key])
        if self.kind == "tflite":
            raise ModelLoadError(
                f"{self.name} is already a .tflite file and cannot be converted again: point tfopt_model "
                "at the Keras or SavedModel source to build other variants"
            )
        fn = self.serving_function().get_concrete_function()
        # A trackable object holding the variables keeps the signature (names) in the .tflite; Keras 3
        # variables are tracked through the tf.Variable each one wraps (the Keras object itself would
        # convert to a graph that reads unset variables).
        holder = tf.Module()
        holder.variables_ = [_tf_variable(v) for v in self.model.variables]
        return tf.lite.TFLiteConverter.from_concrete_functions([fn], holder)

    def check_inputs(self, x: Any, what: str = "data set") -> None:
        """Raise a :class:`DatasetError` when ``x`` does not fit the model's inputs (names, shapes, dtypes)."""
        self.signature.feed(x, what, self.name, one_sample=False)


def _tf_variable(v: Any) -> Any:
    value = getattr(v, "value", None)
    tf = tfenv.tensorflow()
    return value if isinstance(value, tf.Variable) else v


def check_input_shape(expected: tuple[int | None, ...], x: np.ndarray, what: str, model: str) -> None:
    """Raise when per-sample shape of ``x`` does not match ``expected`` (``None`` matches anything)."""
    x = np.asarray(x)
    check_array(x, TensorInfo("input", tuple(expected), x.dtype.name if x.dtype.kind in "biuf" else "float32"),
                what, model, name_it=False)


def damaged(path: str, exc: BaseException) -> ModelLoadError:
    """The error for a model file that exists but cannot be read: the first line of ``exc`` and the remedy."""
    return ModelLoadError(f"model file {path!r} is damaged or unreadable ({first_line(exc, 160)}): re-save it from "
                          "the training code")

