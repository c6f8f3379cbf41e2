"""Data sets: numpy ``x``/``y`` with a train split (calibration) and a test split (evaluation).

Modules: :mod:`.core` (the :class:`Dataset` type: splits, sampling, calibration, hash),
:mod:`.arrays` (checking and freezing each array), :mod:`.npz` (``.npz`` keys) and
:mod:`.tf_data` (``tf.data.Dataset`` elements). Every public name is importable from this package,
as it was from the single ``dataset.py`` module it replaces.
"""

from __future__ import annotations

from .core import DEFAULT_SEED, DEFAULT_TEST_FRACTION, Dataset
from .npz import NPZ_SPLITS

__all__ = ["DEFAULT_SEED", "DEFAULT_TEST_FRACTION", "NPZ_SPLITS", "Dataset"]
