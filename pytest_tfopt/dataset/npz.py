"""Reading a data set from an ``.npz`` file: its keys, grouped into splits and named inputs/outputs.

Keys are ``x_train, y_train, x_test, y_test`` (explicit splits) or ``x, y`` (split later, seeded),
each one array or, with a ``:<name>`` suffix, one array per named input or output
(``x_train:ids``, ``y_test:risk``). Anything else is refused with the keys the file has.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..signature import Batch

NPZ_SPLITS = ("x_train", "y_train", "x_test", "y_test", "x", "y")


def read_npz(path: str) -> dict[str, Batch]:
    """The arrays of the ``.npz`` at ``path``, grouped by split (see :func:`npz_parts`)."""
    if not os.path.exists(path):
        raise DatasetError(f"data set {path!r} does not exist: check tfopt_dataset / the path")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(
            f"data set {path!r} is not a readable .npz ({type(exc).__name__}): "
            "write it with numpy.savez(x_train=..., y_train=..., x_test=..., y_test=...)"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetError(
            f"data set {path!r} is a single .npy array, not an .npz of named arrays: "
            "write it with numpy.savez(x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    return npz_parts(arrays, path)


def npz_parts(arrays: dict[str, np.ndarray], path: str) -> dict[str, Batch]:
    """``.npz`` keys grouped: ``x_train`` (one input) or ``x_train:<input>`` (one key per named input),
    likewise ``y_train:<output>``, ``x_test``, ``y_test``, ``x``, ``y``."""
    parts: dict[str, Any] = {}
    for key, arr in arrays.items():
        base, sep, name = key.partition(":")
        if base not in NPZ_SPLITS or (sep and not name):
            raise DatasetError(
                f"data set {path!r} has keys {sorted(arrays)}: it needs x_train, y_train, x_test, y_test (or x, y), "
                f"each optionally ':<name>' for a named input or output (x_train:ids, y_test:risk); {key!r} is neither"
            )
        current = parts.get(base)
        if sep:
            if isinstance(current, np.ndarray):
                raise DatasetError(f"data set {path!r} has both {base!r} and {key!r}: use one array or names, not both")
            parts.setdefault(base, {})[name] = arr
        else:
            if isinstance(current, dict):
                raise DatasetError(f"data set {path!r} has both {base!r} and named {base}:... keys: use one form")
            parts[base] = arr
    _check_splits(parts, arrays, path)
    return parts


def _check_splits(parts: dict[str, Any], arrays: dict[str, np.ndarray], path: str) -> None:
    """Refuse a half-split file, a file without inputs, mixed conventions and labels without inputs."""
    has_split = "x_train" in parts or "x_test" in parts
    if has_split and not ("x_train" in parts and "x_test" in parts):
        missing = "x_test" if "x_train" in parts else "x_train"
        raise DatasetError(f"data set {path!r} has keys {sorted(arrays)}: it needs x_train, y_train, x_test, y_test "
                           f"(or x, y); {missing!r} is missing")
    if not has_split and "x" not in parts:
        raise DatasetError(
            f"data set {path!r} has keys {sorted(arrays)}: it needs x_train, y_train, x_test, y_test "
            "(or x, y; ':<name>' suffixes for named inputs and outputs)"
        )
    if has_split and ("x" in parts or "y" in parts):
        raise DatasetError(f"data set {path!r} mixes x/y with x_train/x_test: use one convention")
    for x_key, y_key in (("x_train", "y_train"), ("x_test", "y_test"), ("x", "y")):
        if y_key in parts and x_key not in parts:
            raise DatasetError(f"data set {path!r} has {y_key!r} but no {x_key!r}")
