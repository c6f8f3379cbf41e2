"""Shared by the fine-tuning transforms: tf_keras models, seeded fine-tuning, weight statistics."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import progress, tfenv
from ..dataset import Dataset
from ..errors import DatasetError, ModelLoadError, UsageError, first_line
from ..keras_io import keras_output_names, keras_outputs

Log = Callable[[str], None]
SEED = 0


def as_tf_keras(model: Any, kind: str, name: str) -> Any:
    """A fresh tf_keras copy of ``model`` (tfmot only works on tf_keras/Keras 2 models).

    A Keras 3 model is rebuilt from its config and weights when its layers allow.
    """
    tfenv.tensorflow()
    import tf_keras

    if kind == "tf_keras":
        clone = tf_keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone
    if kind == "keras3":
        try:
            from .keras_compat import rebuild_in_tf_keras

            return rebuild_in_tf_keras(model)
        except Exception as exc:  # deserialization fails in many ways for Keras 3-only layers
            raise ModelLoadError(
                f"{name} is a Keras 3 model that could not be rebuilt in tf_keras for tfmot ({first_line(exc, 160)}): "
                "build and save it with tf_keras (Keras 2), or set ini tfopt_keras = legacy and build it with tf.keras"
            ) from None
    raise ModelLoadError(
        f"{name} is a {kind} model: model-level transforms (pruning, clustering, QAT) need a Keras model "
        "(.keras/.h5 or in memory)"
    )


def require_training_data(train: Dataset, stage: str) -> None:
    if train.y is None or len(train) == 0:
        raise DatasetError(
            f"{stage} fine-tunes the model but the data set has no labelled training split: "
            "give x_train and y_train in tfopt_dataset"
        )
    train.check_finite(f"training data for {stage}")


def _loss(model: Any, train: Dataset) -> tuple[Any, Any]:
    """The loss (and metrics) for ``model`` on ``train``'s labels: one, or a dict per labeled output."""
    names = keras_output_names(model)
    x, y = fit_data(model, train)
    probe = keras_outputs(model(_head(x, 8), training=False), names)
    if len(names) == 1:
        return _loss_of(np.asarray(probe[names[0]]), y, names[0])
    losses, metrics = {}, {}
    for name in names:
        if name in y:
            losses[name], metrics[name] = _loss_of(np.asarray(probe[name]), y[name], name)
    return losses, metrics


def _loss_of(probe: np.ndarray, y: np.ndarray, output: str) -> tuple[Any, list[str]]:
    import tf_keras

    if probe.ndim == 2 and probe.shape[1] > 1:
        probabilities = bool(np.all(probe >= 0) and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3))
        if y.ndim > 1 and y.shape[-1] == probe.shape[1]:
            return tf_keras.losses.CategoricalCrossentropy(from_logits=not probabilities), ["accuracy"]
        if np.issubdtype(y.dtype, np.integer) and (y.min() < 0 or y.max() >= probe.shape[1]):
            raise DatasetError(
                f"labels{f' of {output!r}' if output else ''} range over [{y.min()}, {y.max()}] but the model has "
                f"{probe.shape[1]} classes: fix the labels"
            )
        return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities), ["accuracy"]
    return tf_keras.losses.MeanSquaredError(), []


def _head(x: Any, n: int) -> Any:
    return {k: v[:n] for k, v in x.items()} if isinstance(x, dict) else x[:n]


def fit_data(model: Any, train: Dataset) -> tuple[Any, Any]:
    """``(x, y)`` for ``model.fit``: inputs by name in their own dtypes (one float input: float32), and the
    labels — one array, or a dict of the labeled outputs of a model with several."""
    x: Any = train.x
    x = {k: np.asarray(v) for k, v in x.items()} if isinstance(x, dict) else np.asarray(x, np.float32)
    names = keras_output_names(model)
    y = train.y
    if len(names) == 1:
        return x, (train.labels(names[0]) if isinstance(y, dict) else y)
    if not isinstance(y, dict):
        raise DatasetError(f"the model has outputs {', '.join(names)}: give training labels as y_train:<output> "
                           "(a mapping output name → labels)")
    labeled = {n: y[n] for n in names if n in y}
    if not labeled:
        raise DatasetError(f"no training labels for any output of the model ({', '.join(names)}): give y_train:<output>")
    return x, labeled


class _EpochLog:
    """A tf_keras callback factory reporting each epoch (and, to a live bar, each batch) as progress steps."""

    @staticmethod
    def make(stage: str, epochs: int, log: Log) -> Any:
        import tf_keras

        report = progress.emitter(log)

        class EpochLog(tf_keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items())
                report.step(stage, epoch + 1, epochs, info=shown)

        class BatchLog(EpochLog):  # a batch hook costs a little per batch: only for a sink that draws a bar
            epoch = 0

            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self.epoch = epoch

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                steps = int((self.params or {}).get("steps") or 0)
                if steps:
                    report.step(stage, self.epoch * steps + batch + 1, epochs * steps, unit="batch",
                                info=f"epoch {self.epoch + 1}/{epochs}")

        return BatchLog() if report.live else EpochLog()


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Seeded (:data:`SEED`: Python, NumPy, TensorFlow) and with TensorFlow op determinism on, for training
    that builds the same variant every time; op determinism is left as it was found (the user's process)."""
    tf = tfenv.tensorflow()
    import tf_keras
    from tensorflow.python.framework import config as tf_config  # the only home of disable/is_enabled

    was_deterministic = tf_config.is_op_determinism_enabled()
    tf_keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_deterministic:
            tf_config.disable_op_determinism()


def fine_tune(model: Any, train: Dataset, *, stage: str, epochs: int, batch_size: int, learning_rate: float,
              log: Log, callbacks: list[Any] | None = None) -> Any:
    """Compile and fit ``model`` on ``train``, seeded and with op determinism on (:func:`deterministic`)."""
    with deterministic():  # loads TensorFlow configured (tfenv) before tf_keras imports it
        import tf_keras

        loss, metrics = _loss(model, train)
        model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
        x, y = fit_data(model, train)
        model.fit(
            x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
            callbacks=[*(callbacks or []), _EpochLog.make(stage, epochs, log)],
        )
    return model


def kernel_layers(model: Any) -> list[Any]:
    """Layers that own a kernel (Dense, Conv*, ...)."""
    return [layer for layer in model.layers if getattr(layer, "kernel", None) is not None]


def sparsity(model: Any) -> dict[str, float]:
    """Fraction of exactly-zero kernel weights, per kernel layer."""
    return {layer.name: float(np.mean(np.asarray(layer.kernel) == 0)) for layer in kernel_layers(model)}


def unique_weights(model: Any) -> dict[str, int]:
    """Distinct kernel values, per kernel layer."""
    return {layer.name: int(np.unique(np.asarray(layer.kernel)).size) for layer in kernel_layers(model)}


def positive_int(params: dict[str, Any], key: str, minimum: int = 1) -> None:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{key}={value!r} must be an integer >= {minimum}")


def positive_float(params: dict[str, Any], key: str) -> None:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UsageError(f"{key}={value!r} must be a number > 0")
