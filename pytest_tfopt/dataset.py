"""Data sets: numpy ``x``/``y`` with a train split (calibration) and a test split (evaluation)."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import DatasetError

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 0


class Dataset:
    """Inputs ``x`` (first axis = samples) and optional labels ``y``.

    A data set may carry explicit ``train``/``test`` splits (an ``.npz`` with
    ``x_train, y_train, x_test, y_test``); otherwise the splits are a seeded
    80/20 partition of ``x``/``y``. Calibration samples come from ``train``,
    evaluation uses ``test``.
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        *,
        splits: tuple[Dataset, Dataset] | None = None,
        name: str = "dataset",
        _owned: bool = False,
    ) -> None:
        self.x = _frozen(_as_inputs(x, name), _owned)
        self.y = None if y is None else _frozen(_as_labels(y, name), _owned)
        self.name = name
        if len(self.x) == 0:
            raise DatasetError(f"{name}: the data set is empty (0 samples): give at least one sample")
        if self.y is not None and len(self.y) != len(self.x):
            raise DatasetError(
                f"{name}: {len(self.x)} inputs but {len(self.y)} labels: give one label per sample"
            )
        self._splits = splits
        self._hash: str | None = None

    # ---- construction -------------------------------------------------
    @classmethod
    def from_arrays(cls, x: Any, y: Any = None, x_test: Any = None, y_test: Any = None) -> Dataset:
        """From numpy arrays; with ``x_test`` the test split is explicit."""
        if x_test is None:
            return cls(x, y, name="arrays")
        train = cls(x, y, name="train")
        test = cls(x_test, y_test, name="test")
        return _joined(train, test, "arrays")

    @classmethod
    def from_tf_data(cls, data: Any, batched: bool | None = None) -> Dataset:
        """From a ``tf.data.Dataset`` of ``x`` or ``(x, y)`` elements (batched or not).

        ``batched=None`` detects it: a ``batch``/``padded_batch`` op in the pipeline (also with
        ``drop_remainder=True``, where the batch axis is static), else a free leading axis.
        """
        xs, ys = [], []
        for element in data.as_numpy_iterator():
            if isinstance(element, tuple):
                x, y = element[0], element[1] if len(element) > 1 else None
            else:
                x, y = element, None
            xs.append(np.asarray(x))
            if y is not None:
                ys.append(np.asarray(y))
        if not xs:
            raise DatasetError("tf.data.Dataset is empty: give it at least one sample")
        if batched is None:
            batched = _is_batched(data)
        join = np.concatenate if batched else np.stack
        try:
            x_all, y_all = join(xs), join(ys) if ys else None
        except ValueError as exc:
            raise DatasetError(
                f"tf.data.Dataset elements do not fit together ({str(exc).splitlines()[0][:120]}): "
                "give every sample the same shape (or pass batched= explicitly)"
            ) from None
        return cls(x_all, y_all, name="tf.data")

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> Dataset:
        """From ``x_train, y_train, x_test, y_test`` (or ``x, y``, split seeded)."""
        path = os.fspath(path)
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
        if "x_train" in arrays and "x_test" in arrays:
            train = cls(arrays["x_train"], arrays.get("y_train"), name="train")
            test = cls(arrays["x_test"], arrays.get("y_test"), name="test")
            return _joined(train, test, os.path.basename(path))
        if "x" in arrays:
            return cls(arrays["x"], arrays.get("y"), name=os.path.basename(path))
        raise DatasetError(
            f"data set {path!r} has keys {sorted(arrays)}: it needs x_train, y_train, x_test, y_test "
            "(or x, y)"
        )

    @classmethod
    def coerce(cls, value: Any) -> Dataset:
        """A ``Dataset`` from a Dataset, a path, a ``tf.data.Dataset`` or an ``(x, y)`` tuple."""
        if isinstance(value, Dataset):
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls.from_npz(value)
        if isinstance(value, tuple) and len(value) in (1, 2):
            return cls.from_arrays(*value)
        if hasattr(value, "as_numpy_iterator"):
            return cls.from_tf_data(value)
        if isinstance(value, np.ndarray):
            return cls(value)
        raise DatasetError(
            f"cannot make a data set from {type(value).__name__}: return a Dataset, an .npz path, "
            "a tf.data.Dataset or an (x, y) tuple"
        )

    # ---- parts ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        labels = "no labels" if self.y is None else f"y{self.y.shape}"
        return f"Dataset({self.name}: x{self.x.shape} {self.x.dtype}, {labels})"

    @property
    def train(self) -> Dataset:
        """The training split (explicit, or the seeded 80 % of ``x``)."""
        return self._split()[0]

    @property
    def test(self) -> Dataset:
        """The evaluation split (explicit, or the seeded 20 % of ``x``)."""
        return self._split()[1]

    def _split(self) -> tuple[Dataset, Dataset]:
        if self._splits is None:
            if len(self) < 2:
                raise DatasetError(
                    f"{self.name}: {len(self)} sample(s) cannot be split into train and test: "
                    "give at least 2 samples or explicit x_test/y_test"
                )
            order = np.random.default_rng(DEFAULT_SEED).permutation(len(self))
            n_test = max(1, int(round(len(self) * DEFAULT_TEST_FRACTION)))
            self._splits = (self.take(order[n_test:], "train"), self.take(order[:n_test], "test"))
        return self._splits

    def take(self, index: Any, name: str | None = None) -> Dataset:
        """The samples at ``index`` as a new data set."""
        x, y = self.x[index], None if self.y is None else self.y[index]
        return Dataset(x, y, name=name or self.name, _owned=not np.shares_memory(x, self.x))

    def sample(self, size: int, seed: int = DEFAULT_SEED, name: str = "calibration") -> Dataset:
        """``size`` samples drawn without replacement, seeded (all of them if fewer)."""
        if size <= 0:
            raise DatasetError(f"calibration size {size} must be positive: set tfopt_calibration_size >= 1")
        if len(self) == 0:
            raise DatasetError(f"{self.name} is empty: calibration needs at least one sample")
        if size >= len(self):
            return self.take(slice(None), name)
        index = np.sort(np.random.default_rng(seed).choice(len(self), size, replace=False))
        return self.take(index, name)

    def calibration(self, size: int = 200, seed: int = DEFAULT_SEED) -> Dataset:
        """The calibration part: ``size`` seeded samples of the training split."""
        return self.train.sample(size, seed)

    def check_finite(self, what: str = "data") -> None:
        """Raise when any input is NaN or infinite."""
        if np.issubdtype(self.x.dtype, np.floating):
            bad = ~np.isfinite(self.x.reshape(len(self.x), -1)).all(axis=1)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise DatasetError(
                    f"{what} has NaN/Inf in {int(bad.sum())} of {len(self)} samples (first: index {first}): "
                    "drop or impute those samples"
                )

    def representative_dataset(self, input_dtype: Any = np.float32) -> Any:
        """A generator function for ``TFLiteConverter.representative_dataset`` (one sample per step)."""
        if len(self) == 0:
            raise DatasetError(f"{self.name} is empty: calibration needs at least one sample")
        self.check_finite(f"calibration data ({self.name})")
        x = self.x

        def generate() -> Iterator[list[np.ndarray]]:
            for i in range(len(x)):
                yield [x[i : i + 1].astype(input_dtype, copy=False)]

        return generate

    @property
    def hash(self) -> str:
        """sha256 of the inputs and labels (dtype, shape and bytes): the data's provenance."""
        if self._hash is None:
            h = hashlib.sha256()
            for arr in (self.x, self.y):
                if arr is None:
                    h.update(b"none")
                    continue
                arr = np.ascontiguousarray(arr)
                h.update(f"{arr.dtype.str}{arr.shape}".encode())
                h.update(arr.tobytes())
            self._hash = h.hexdigest()
        return self._hash


def _frozen(arr: np.ndarray, owned: bool = False) -> np.ndarray:
    """Read-only (a copy unless ``owned`` or already read-only): the content hash must stay
    true to the data even when callers go on changing their own arrays."""
    if arr.flags.writeable:
        arr = arr if owned else np.array(arr, copy=True)
        arr.flags.writeable = False
    return arr


def _as_inputs(x: Any, name: str) -> np.ndarray:
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


def _as_labels(y: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(y)
    except ValueError:
        raise DatasetError(f"{name}: labels are ragged: give one label (or label array) of one shape per sample") from None
    if arr.ndim == 0:
        raise DatasetError(f"{name}: labels are a scalar: give an array with one label per sample")
    return arr


def _is_batched(data: Any) -> bool:
    """Whether a ``tf.data.Dataset`` yields batches: the nearest batch/unbatch op decides."""
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
    shape = getattr(x_spec, "shape", None)
    return shape is not None and shape.rank is not None and shape.rank > 0 and shape[0] is None


def _joined(train: Dataset, test: Dataset, name: str) -> Dataset:
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DatasetError(
            f"{name}: train inputs have shape {train.x.shape[1:]} but test inputs {test.x.shape[1:]}: "
            "both splits need the same per-sample shape"
        )
    y = None
    if train.y is not None and test.y is not None:
        y = np.concatenate([train.y, test.y])
    return Dataset(np.concatenate([train.x, test.x]), y, splits=(train, test), name=name)
