"""Data sets: numpy ``x``/``y`` with a train split (calibration) and a test split (evaluation)."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .errors import DatasetError, first_line
from .signature import Batch, Signature, arrays, concat, n_samples, take

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 0


class Dataset:
    """Inputs ``x`` (first axis = samples) and optional labels ``y``.

    ``x`` is one array (a one-input model) or a mapping input name → array; ``y`` is one array,
    a mapping output name → labels (some outputs only is fine), or ``None`` (unlabeled).
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
        self.x: Batch = _each(x, lambda a, k: _frozen(_as_inputs(a, _named(name, k)), _owned), "inputs", name)
        self.y: Batch | None = None if y is None else _each(
            y, lambda a, k: _frozen(_as_labels(a, _named(name, k)), _owned), "labels", name)
        self.name = name
        counts = {k: len(a) for k, a in _items(self.x)}
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{k}: {n}" for k, n in counts.items())
            raise DatasetError(f"{name}: inputs have different numbers of samples ({shown}): give one row per sample")
        if len(self) == 0:
            raise DatasetError(f"{name}: the data set is empty (0 samples): give at least one sample")
        for k, labels in _items(self.y):
            if len(labels) != len(self):
                raise DatasetError(
                    f"{_named(name, k)}: {len(self)} inputs but {len(labels)} labels: give one label per sample"
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
            xs.append(_as_batch(x))
            if y is not None:
                ys.append(_as_batch(y))
        if not xs:
            raise DatasetError("tf.data.Dataset is empty: give it at least one sample")
        if batched is None:
            batched = _is_batched(data)
        join = np.concatenate if batched else np.stack
        try:
            x_all = _join(xs, join)
            y_all = _join(ys, join) if ys else None
        except (ValueError, KeyError) as exc:
            raise DatasetError(
                f"tf.data.Dataset elements do not fit together ({first_line(exc, 120)}): "
                "give every sample the same shape and the same names (or pass batched= explicitly)"
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
        parts = _npz_parts(arrays, path)
        if "x_train" in parts and "x_test" in parts:
            train = cls(parts["x_train"], parts.get("y_train"), name="train")
            test = cls(parts["x_test"], parts.get("y_test"), name="test")
            return _joined(train, test, os.path.basename(path))
        return cls(parts["x"], parts.get("y"), name=os.path.basename(path))

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
        if isinstance(value, (np.ndarray, dict)):
            return cls(value)
        raise DatasetError(
            f"cannot make a data set from {type(value).__name__}: return a Dataset, an .npz path, "
            "a tf.data.Dataset or an (x, y) tuple"
        )

    # ---- parts ----------------------------------------------------------
    def __len__(self) -> int:
        return n_samples(self.x)

    def __repr__(self) -> str:
        def shown(batch: Batch) -> str:
            if isinstance(batch, dict):
                return "{" + ", ".join(f"{k}: {a.shape} {a.dtype}" for k, a in batch.items()) + "}"
            return f"{batch.shape} {batch.dtype}"

        labels = "no labels" if self.y is None else f"y {shown(self.y)}"
        return f"Dataset({self.name}: x {shown(self.x)}, {labels})"

    @property
    def labeled_outputs(self) -> list[str] | None:
        """Output names with labels when ``y`` is a mapping; ``None`` when ``y`` is one array or absent."""
        return list(self.y) if isinstance(self.y, dict) else None

    def labels(self, output: str | None = None) -> np.ndarray | None:
        """Labels of ``output`` (``None``: the one array ``y``); ``None`` when that output has none."""
        if self.y is None:
            return None
        if isinstance(self.y, dict):
            if output is None:
                return next(iter(self.y.values())) if len(self.y) == 1 else None
            return self.y.get(output)
        return self.y

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
        x, y = take(self.x, index), None if self.y is None else take(self.y, index)
        owned = not any(np.shares_memory(a, b) for a, b in zip(arrays(x), arrays(self.x), strict=True))
        return Dataset(x, y, name=name or self.name, _owned=owned)

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
        for k, x in _items(self.x):
            if np.issubdtype(x.dtype, np.floating):
                bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
                if bad.any():
                    first = int(np.flatnonzero(bad)[0])
                    where = f" input {k!r}" if k else ""
                    raise DatasetError(
                        f"{what}{where} has NaN/Inf in {int(bad.sum())} of {len(self)} samples (first: index {first}): "
                        "drop or impute those samples"
                    )

    def representative_dataset(self, signature: Any = np.float32) -> Any:
        """A generator function for ``TFLiteConverter.representative_dataset`` (one sample per step).

        Given the model's :class:`~pytest_tfopt.signature.Signature`, each step is a dict input name →
        array in that input's own dtype (integer ids stay integers); given a dtype (one input), a list.
        """
        if len(self) == 0:
            raise DatasetError(f"{self.name} is empty: calibration needs at least one sample")
        self.check_finite(f"calibration data ({self.name})")
        n = len(self)
        if isinstance(signature, Signature):
            feed = signature.feed(self.x, "calibration data")

            def by_name() -> Iterator[dict[str, np.ndarray]]:
                for i in range(n):
                    yield {k: v[i : i + 1] for k, v in feed.items()}

            return by_name
        x = self.x

        def generate() -> Iterator[list[np.ndarray]]:
            for i in range(n):
                yield [x[i : i + 1].astype(signature, copy=False)]

        return generate

    @property
    def hash(self) -> str:
        """sha256 of the inputs and labels (dtype, shape and bytes): the data's provenance."""
        if self._hash is None:
            h = hashlib.sha256()
            for part in (self.x, self.y):
                if part is None:
                    h.update(b"none")
                    continue
                for key, arr in _items(part):
                    if key:
                        h.update(f"[{key}]".encode())
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
    if isinstance(x_spec, dict):
        x_spec = next(iter(x_spec.values()), None)
    shape = getattr(x_spec, "shape", None)
    return shape is not None and shape.rank is not None and shape.rank > 0 and shape[0] is None


def _joined(train: Dataset, test: Dataset, name: str) -> Dataset:
    tr, te = dict(_items(train.x)), dict(_items(test.x))
    if set(tr) != set(te):
        raise DatasetError(f"{name}: train inputs are named {sorted(tr)} but test inputs {sorted(te)}: "
                           "give both splits the same input names")
    for k in tr:
        if tr[k].shape[1:] != te[k].shape[1:] and not _free_axes_only(tr[k], te[k]):
            raise DatasetError(
                f"{name}: train inputs{f' {k!r}' if k else ''} have shape {tr[k].shape[1:]} but test inputs "
                f"{te[k].shape[1:]}: both splits need the same per-sample shape"
            )
    y = None
    if train.y is not None and test.y is not None and _same_keys(train.y, test.y):
        y = concat([train.y, test.y])
    if any(tr[k].shape[1:] != te[k].shape[1:] for k in tr):
        # splits of different sizes (a fully convolutional model tested at another resolution): the
        # joined set is the test split's shape, never split again
        return Dataset(test.x, test.y, splits=(train, test), name=name)
    return Dataset(concat([train.x, test.x]), y, splits=(train, test), name=name)


def _free_axes_only(a: np.ndarray, b: np.ndarray) -> bool:
    """Same rank and dtype kind: splits may differ in size on free axes (height/width, length)."""
    return a.ndim == b.ndim and a.dtype.kind == b.dtype.kind


def _same_keys(a: Batch, b: Batch) -> bool:
    return isinstance(a, dict) == isinstance(b, dict) and (not isinstance(a, dict) or set(a) == set(b))


def _named(name: str, key: str | None) -> str:
    return f"{name} {key!r}" if key else name


def _items(batch: Batch | None) -> list[tuple[str, np.ndarray]]:
    """(name, array) pairs; one array has the name ``""``."""
    if batch is None:
        return []
    if isinstance(batch, dict):
        return list(batch.items())
    return [("", batch)]


def _each(value: Any, fn: Any, what: str, name: str) -> Batch:
    """``fn(array, key)`` on one array or on each of a mapping's (keys must be non-empty strings)."""
    if isinstance(value, Mapping):
        if not value:
            raise DatasetError(f"{name}: {what} mapping is empty: give at least one name → array")
        bad = [k for k in value if not isinstance(k, str) or not k]
        if bad:
            raise DatasetError(f"{name}: {what} names must be non-empty strings, got {bad[0]!r}")
        return {k: fn(v, k) for k, v in value.items()}
    return fn(value, "")


def _as_batch(value: Any) -> Batch:
    if isinstance(value, Mapping):
        return {str(k): np.asarray(v) for k, v in value.items()}
    return np.asarray(value)


def _join(parts: list[Batch], join: Any) -> Batch:
    if isinstance(parts[0], dict):
        return {k: join([p[k] for p in parts]) for k in parts[0]}
    return join(parts)


NPZ_SPLITS = ("x_train", "y_train", "x_test", "y_test", "x", "y")


def _npz_parts(arrays: dict[str, np.ndarray], path: str) -> dict[str, Batch]:
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
    return parts
