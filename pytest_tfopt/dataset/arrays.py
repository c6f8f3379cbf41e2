"""Checking and freezing the arrays a :class:`~pytest_tfopt.dataset.Dataset` holds.

A data set's ``x`` and ``y`` are one array or a mapping name → array; these helpers convert each
array, refuse what no model could take (ragged, scalar, non-numeric inputs) with a one-line
:class:`~pytest_tfopt.errors.DatasetError`, and make the arrays read-only so the content hash stays
true to the data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..signature import Batch


def frozen(arr: np.ndarray, owned: bool = False) -> np.ndarray:
    """Read-only (a copy unless ``owned`` or already read-only): the content hash must stay
    true to the data even when callers go on changing their own arrays."""
    if arr.flags.writeable:
        arr = arr if owned else np.array(arr, copy=True)
        arr.flags.writeable = False
    return arr


def as_inputs(x: Any, name: str) -> np.ndarray:
    """``x`` as a numeric (or bool) array with a sample axis; ``name`` says whose inputs in errors."""
    try:
        arr = np.asarray(x)
    except ValueError:  # ragged nested lists
        raise DatasetError(
            f"{name}: inputs are ragged (samples of different shapes): pad or resize them to one shape"
        ) from None
    if arr.ndim == 0:
        raise DatasetError(f"{name}: inputs are a scalar: give an array whose first axis is the samples")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DatasetError(
            f"{name}: inputs have dtype {arr.dtype}, not numeric: convert them to float32 (or int) arrays"
        )
    return arr


def as_labels(y: Any, name: str) -> np.ndarray:
    """``y`` as an array with a sample axis (any dtype); ``name`` says whose labels in errors."""
    try:
        arr = np.asarray(y)
    except ValueError:
        raise DatasetError(f"{name}: labels are ragged: give one label (or label array) of one shape per sample") from None
    if arr.ndim == 0:
        raise DatasetError(f"{name}: labels are a scalar: give an array with one label per sample")
    return arr


def each(value: Any, fn: Callable[[Any, str], np.ndarray], what: str, name: str) -> Batch:
    """``fn(array, key)`` on one array or on each of a mapping's (keys must be non-empty strings)."""
    if isinstance(value, Mapping):
        if not value:
            raise DatasetError(f"{name}: {what} mapping is empty: give at least one name → array")
        bad = [k for k in value if not isinstance(k, str) or not k]
        if bad:
            raise DatasetError(f"{name}: {what} names must be non-empty strings, got {bad[0]!r}")
        return {k: fn(v, k) for k, v in value.items()}
    return fn(value, "")


def items(batch: Batch | None) -> list[tuple[str, np.ndarray]]:
    """(name, array) pairs; one array has the name ``""``."""
    if batch is None:
        return []
    if isinstance(batch, dict):
        return list(batch.items())
    return [("", batch)]


def named(name: str, key: str | None) -> str:
    """``name`` with the input/output ``key`` it is about (``name`` alone for one unnamed array)."""
    return f"{name} {key!r}" if key else name


def same_keys(a: Batch, b: Batch) -> bool:
    """Whether two batches are both one array, or both mappings with the same names."""
    return isinstance(a, dict) == isinstance(b, dict) and (not isinstance(a, dict) or set(a) == set(b))


def free_axes_only(a: np.ndarray, b: np.ndarray) -> bool:
    """Same rank and dtype kind: splits may differ in size on free axes (height/width, length)."""
    return a.ndim == b.ndim and a.dtype.kind == b.dtype.kind
