"""``load_model``: a path or an in-memory Keras model → a :class:`SourceModel`, by kind."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ModelLoadError
from .keras import from_keras, keras_flavour, load_h5, load_keras_zip
from .saved_model import load_saved_model
from .source import DEFAULT_SIGNATURE, SourceModel
from .tflite import load_tflite


def load_model(model: Any, signature: str = DEFAULT_SIGNATURE, input_dtypes: dict[Any, str] | None = None) -> SourceModel:
    """Load ``model`` (path or in-memory Keras model) as a :class:`SourceModel`.

    ``signature``: the SavedModel / ``.tflite`` signature to test (``ini tfopt_signature``).
    ``input_dtypes``: dtypes of the data by input name (``None`` for one unnamed array), for a subclassed
    Keras model whose traced call records shapes but not dtypes.
    """
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return _load_path(os.fspath(model), signature or DEFAULT_SIGNATURE)
    if keras_flavour(model) is not None:
        return from_keras(model, getattr(model, "name", "model"), path=None, input_dtypes=input_dtypes)
    raise ModelLoadError(
        f"cannot use a {type(model).__module__}.{type(model).__name__} as a model: give a Keras model, "
        "or a path to a .keras/.h5 file, a SavedModel directory or a .tflite file"
    )


def _load_path(path: str, signature: str = DEFAULT_SIGNATURE) -> SourceModel:
    """The model at ``path``, by its kind: a SavedModel directory, or a file by its suffix."""
    if not os.path.exists(path):
        raise ModelLoadError(f"model {path!r} does not exist: check tfopt_model / the path")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ModelLoadError(
                f"directory {path!r} is not a SavedModel (no saved_model.pb): export it with "
                "model.export(path) or tf.saved_model.save"
            )
        return load_saved_model(path, signature)
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"model file {path!r} is empty: re-save or re-download it")
    lower = path.lower()
    if lower.endswith(".keras"):
        return load_keras_zip(path)
    if lower.endswith((".h5", ".hdf5")):
        return load_h5(path)
    if lower.endswith(".tflite"):
        return load_tflite(path, signature)
    raise ModelLoadError(
        f"model {path!r} has an unknown kind: give a .keras or .h5 file, a SavedModel directory or a .tflite file"
    )
