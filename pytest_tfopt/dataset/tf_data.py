"""Reading a data set from a ``tf.data.Dataset``: its elements joined into numpy ``x`` and ``y``.

Elements are ``x`` or ``(x, y)``, each one tensor or a mapping name → tensor, batched or not.
No TensorFlow import here: the pipeline is read through ``as_numpy_iterator`` and its own
attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import DatasetError, first_line
from ..signature import Batch


def read_tf_data(data: Any, batched: bool | None = None) -> tuple[Batch, Batch | None]:
    """Inputs and labels (``None`` when no element has any) of every element of ``data``, joined.

    ``batched=None`` detects it (:func:`is_batched`): batches are concatenated, samples stacked.
    """
    xs, ys = [], []
    for element in data.as_numpy_iterator():
        if isinstance(element, tuple):
            x, y = element[0], element[1] if len(element) > 1 else None
        else:
            x, y = element, None
        xs.append(_as_batch(x))
        if y is not None:
            ys.append(_as_batch(y))
    if not xs:
        raise DatasetError("tf.data.Dataset is empty: give it at least one sample")
    if batched is None:
        batched = is_batched(data)
    join = np.concatenate if batched else np.stack
    try:
        x_all = _join(xs, join)
        y_all = _join(ys, join) if ys else None
    except (ValueError, KeyError) as exc:
        raise DatasetError(
            f"tf.data.Dataset elements do not fit together ({first_line(exc, 120)}): "
            "give every sample the same shape and the same names (or pass batched= explicitly)"
        ) from None
    return x_all, y_all


def is_batched(data: Any) -> bool:
    """Whether a ``tf.data.Dataset`` yields batches: the nearest batch/unbatch op decides.

    A ``batch``/``padded_batch`` op counts also with ``drop_remainder=True`` (where the batch axis is
    static); with neither op in the pipeline, a free leading axis means batches.
    """
    node, seen = data, 0
    while node is not None and seen < 1000:
        kind = type(node).__name__.lower()
        if "unbatch" in kind:
            return False
        if "batch" in kind:
            return True
        inputs = getattr(node, "_input_dataset", None)
        if inputs is None:
            many = getattr(node, "_datasets", None)
            inputs = many[0] if isinstance(many, (list, tuple)) and many else None
        node, seen = inputs, seen + 1
    spec = data.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    if isinstance(x_spec, dict):
        x_spec = next(iter(x_spec.values()), None)
    shape = getattr(x_spec, "shape", None)
    return shape is not None and shape.rank is not None and shape.rank > 0 and shape[0] is None


def _as_batch(value: Any) -> Batch:
    if isinstance(value, Mapping):
        return {str(k): np.asarray(v) for k, v in value.items()}
    return np.asarray(value)


def _join(parts: list[Batch], join: Callable[[list[np.ndarray]], np.ndarray]) -> Batch:
    if isinstance(parts[0], dict):
        return {k: join([p[k] for p in parts]) for k in parts[0]}
    return join(parts)
