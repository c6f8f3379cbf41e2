"""The :class:`Dataset` type: checked, read-only arrays; seeded splits, sampling and calibration; the hash.

Reading an ``.npz`` lives in :mod:`.npz`, reading a ``tf.data.Dataset`` in :mod:`.tf_data`; the
checks on each array in :mod:`.arrays`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..signature import Batch, Signature, arrays, concat, n_samples, take
from .arrays import as_inputs, as_labels, each, free_axes_only, frozen, items, named, same_keys
from .npz import read_npz
from .tf_data import read_tf_data

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
        self.x: Batch = each(x, lambda a, k: frozen(as_inputs(a, named(name, k)), _owned), "inputs", name)
        self.y: Batch | None = None if y is None else each(
            y, lambda a, k: frozen(as_labels(a, named(name, k)), _owned), "labels", name)
        self.name = name
        counts = {k: len(a) for k, a in items(self.x)}
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{k}: {n}" for k, n in counts.items())
            raise DatasetError(f"{name}: inputs have different numbers of samples ({shown}): give one row per sample")
        if len(self) == 0:
            raise DatasetError(f"{name}: the data set is empty (0 samples): give at least one sample")
        for k, labels in items(self.y):
            if len(labels) != len(self):
                raise DatasetError(
                    f"{named(name, k)}: {len(self)} inputs but {len(labels)} labels: give one label per sample"
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
        x, y = read_tf_data(data, batched)
        return cls(x, y, name="tf.data")

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> Dataset:
        """From ``x_train, y_train, x_test, y_test`` (or ``x, y``, split seeded)."""
        path = os.fspath(path)
        parts = read_npz(path)
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
        """The evaluation split (explicit ``x_test``/``y_test``, or the seeded 20 % of ``x``): what the plugin's
        ``eval_dataset`` fixture and ``Workbench.eval_dataset`` hand out."""
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
        for k, x in items(self.x):
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
                for key, arr in items(part):
                    if key:
                        h.update(f"[{key}]".encode())
                    arr = np.ascontiguousarray(arr)
                    h.update(f"{arr.dtype.str}{arr.shape}".encode())
                    h.update(arr.tobytes())
            self._hash = h.hexdigest()
        return self._hash



def _joined(train: Dataset, test: Dataset, name: str) -> Dataset:
    """One data set of explicit ``train`` and ``test`` splits (same input names, same per-sample shapes)."""
    tr, te = dict(items(train.x)), dict(items(test.x))
    if set(tr) != set(te):
        raise DatasetError(f"{name}: train inputs are named {sorted(tr)} but test inputs {sorted(te)}: "
                           "give both splits the same input names")
    for k in tr:
        if tr[k].shape[1:] != te[k].shape[1:] and not free_axes_only(tr[k], te[k]):
            raise DatasetError(
                f"{name}: train inputs{f' {k!r}' if k else ''} have shape {tr[k].shape[1:]} but test inputs "
                f"{te[k].shape[1:]}: both splits need the same per-sample shape"
            )
    y = None
    if train.y is not None and test.y is not None and same_keys(train.y, test.y):
        y = concat([train.y, test.y])
    if any(tr[k].shape[1:] != te[k].shape[1:] for k in tr):
        # splits of different sizes (a fully convolutional model tested at another resolution): the
        # joined set is the test split's shape, never split again
        return Dataset(test.x, test.y, splits=(train, test), name=name)
    return Dataset(concat([train.x, test.x]), y, splits=(train, test), name=name)

