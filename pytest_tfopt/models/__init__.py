"""Source models: load a ``.keras``/``.h5`` file, a SavedModel directory, a ``.tflite`` file
or an in-memory Keras model, and hash it for the artifact cache.

Each file is loaded with the Keras that wrote it (Keras 3 or tf_keras/Keras 2), so the
result never depends on what ``tf.keras`` happens to point at.

Modules: :mod:`.source` (the :class:`SourceModel` type), :mod:`.loading` (:func:`load_model`, by
kind), one per format: :mod:`.keras` (``.keras``, ``.h5``, in-memory models), :mod:`.saved_model`,
:mod:`.tflite`. Every public name is importable from this package, as it was from the single
``models.py`` module it replaces.
"""

from __future__ import annotations

from .keras import HDF5_MAGIC, KERAS_SUFFIXES
from .loading import load_model
from .source import DEFAULT_SIGNATURE, SourceModel, check_input_shape

__all__ = ["DEFAULT_SIGNATURE", "HDF5_MAGIC", "KERAS_SUFFIXES", "SourceModel", "check_input_shape", "load_model"]
