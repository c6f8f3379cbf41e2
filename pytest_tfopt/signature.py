"""Named inputs and outputs: what a model takes and gives, by name, in a fixed order.

A *batch* is what flows into and out of models: one array (first axis = samples) when the model
has one input (output), or a mapping name → array when it has several. Every runner takes either
form for its inputs and returns an array for a one-output model and a ``dict`` name → array for a
model with several outputs.

Names and their order (documented in the README):

- Keras models: the names of the ``Input`` layers (the dict keys for dict-structured inputs) and of
  the output layers (the dict keys for dict outputs), in the model's own order.
- SavedModels and ``.tflite`` files: the signature's keys (``ini tfopt_signature``, default
  ``serving_default``), sorted alphabetically: signatures are unordered maps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DatasetError, UsageError

#: one array, or a mapping name → array (first axis = samples)
Batch = np.ndarray | Mapping[str, np.ndarray]


def shape_text(shape: tuple[int | None, ...]) -> str:
    """``(8, 8, 1)``, ``(4,)``, ``()``, with ``?`` for free axes."""
    parts = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


@dataclass(frozen=True)
class TensorInfo:
    """One named input or output: per-sample ``shape`` (``None`` for free axes) and numpy ``dtype`` name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    @property
    def is_float(self) -> bool:
        return np.issubdtype(np.dtype(self.dtype), np.floating)

    @property
    def dynamic(self) -> bool:
        """Whether a non-batch axis is free (``None``): the data decides its size."""
        return None in self.shape

    def describe(self) -> str:
        """``ids (3,) int32``."""
        return f"{self.name} {shape_text(self.shape)} {self.dtype}"


@dataclass(frozen=True)
class Signature:
    """A model's named inputs and outputs, in their documented order."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"inputs": [[name, shape, dtype], ...], "outputs": [...]}`` (free axes as ``null``)."""
        return {side: [[t.name, list(t.shape), t.dtype] for t in getattr(self, side)] for side in ("inputs", "outputs")}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Signature:
        """The signature :meth:`to_dict` wrote; ``ValueError`` for anything else."""
        def side(items: Any) -> tuple[TensorInfo, ...]:
            out = []
            for name, shape, dtype in items:
                if not (isinstance(name, str) and isinstance(dtype, str) and isinstance(shape, list)
                        and all(d is None or (isinstance(d, int) and d >= 0) for d in shape)):
                    raise ValueError(f"not a tensor: {name!r}")
                np.dtype(dtype)  # raises for an unknown dtype name
                out.append(TensorInfo(name, tuple(shape), dtype))
            if not out:
                raise ValueError("no tensors")
            return tuple(out)

        try:
            return cls(side(doc["inputs"]), side(doc["outputs"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a signature ({exc})") from None

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def dynamic(self) -> bool:
        """Whether any input has a free non-batch axis."""
        return any(t.dynamic for t in self.inputs)

    def describe_inputs(self) -> str:
        return ", ".join(t.describe() for t in self.inputs)

    def describe_outputs(self) -> str:
        return ", ".join(t.describe() for t in self.outputs)

    def input(self, name: str) -> TensorInfo:
        return next(t for t in self.inputs if t.name == name)

    def feed(self, x: Batch, what: str = "input", model: str = "model", one_sample: bool = True) -> dict[str, np.ndarray]:
        """``x`` as a mapping input name → batch, checked against the inputs (names, shapes, dtypes).

        With ``one_sample``, one sample (no batch axis) gains one. Values are cast to each input's dtype; float data for an
        integer input must hold whole numbers. Raises a one-line :class:`DatasetError` naming the
        input and what the model expects.
        """
        named = self.named(x, what, model)
        single = one_sample and all(np.ndim(named[t.name]) == len(t.shape) for t in self.inputs)
        out: dict[str, np.ndarray] = {}
        for t in self.inputs:
            arr = np.asarray(named[t.name])
            if single:
                arr = arr[None]
            out[t.name] = check_array(arr, t, what, model, len(self.inputs) > 1)
        sizes = {len(a) for a in out.values()}
        if len(sizes) > 1:
            counts = ", ".join(f"{k}: {len(v)}" for k, v in out.items())
            raise DatasetError(f"{what} inputs have different numbers of samples ({counts}): give each input one row per sample")
        return out

    def named(self, x: Batch, what: str = "input", model: str = "model") -> dict[str, Any]:
        """``x`` keyed by input name (an array stands for the only input); names checked, nothing converted."""
        if isinstance(x, Mapping):
            given = list(x)
            missing = [n for n in self.input_names if n not in x]
            extra = [str(n) for n in given if n not in self.input_names]
            if missing or extra:
                parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                    [f"unknown {', '.join(extra)}"] if extra else [])
                raise DatasetError(
                    f"{what} names do not match {model}'s inputs ({'; '.join(parts)}): "
                    f"{model} expects {self.describe_inputs()}"
                )
            return {n: x[n] for n in self.input_names}
        if len(self.inputs) != 1:
            raise DatasetError(
                f"{what} is one array but {model} has {len(self.inputs)} inputs: give a mapping name → array "
                f"for {self.describe_inputs()}"
            )
        return {self.inputs[0].name: x}

    def random_batch(self, n: int, free: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
        """``n`` seeded random samples of every input: floats in [0, 1), booleans, integers in {0, 1} (valid ids
        for any embedding or lookup table); free axes ``free`` long. For probes where no data is given."""
        rng = np.random.default_rng(seed)
        feed = {}
        for t in self.inputs:
            shape = (n, *(free if d is None else d for d in t.shape))
            dtype = np.dtype(t.dtype)
            if np.issubdtype(dtype, np.floating):
                feed[t.name] = rng.random(shape).astype(dtype)
            elif dtype == np.bool_:
                feed[t.name] = rng.random(shape) < 0.5
            else:
                feed[t.name] = rng.integers(0, 2, shape).astype(dtype)
        return feed

    def result(self, outputs: Mapping[str, np.ndarray]) -> Batch:
        """What ``predict`` returns: the array of a one-output model, else a dict in output order."""
        if len(self.outputs) == 1:
            return outputs[self.outputs[0].name]
        return {n: outputs[n] for n in self.output_names}

    def output(self, name: str | None, what: str = "output=") -> str:
        """The output ``name`` refers to (``None``: the only output); a :class:`UsageError` listing the names."""
        if name is None:
            if len(self.outputs) == 1:
                return self.outputs[0].name
            raise UsageError(f"the model has {len(self.outputs)} outputs: pass {what}\"name\" with one of "
                             f"{', '.join(self.output_names)}")
        if name not in self.output_names:
            raise UsageError(f"{what}{name!r} is not an output of the model: its outputs are "
                             f"{', '.join(self.output_names)}")
        return name


def check_array(arr: np.ndarray, t: TensorInfo, what: str, model: str, name_it: bool = True) -> np.ndarray:
    """``arr`` (a batch) checked against input ``t`` and cast to its dtype; else a one-line DatasetError."""
    label = f"{what} {t.name!r}" if name_it else what
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DatasetError(f"{label} has dtype {arr.dtype}, not numeric: {model} expects {t.describe()}")
    got = tuple(int(d) for d in arr.shape[1:])
    fits = len(got) == len(t.shape) and all(e is None or e == g for e, g in zip(t.shape, got, strict=False))
    if not fits:
        hint = ""
        if t.shape and None not in t.shape and int(np.prod(got)) == int(np.prod(t.shape)):
            hint = f" (same size: x.reshape(-1, {', '.join(str(e) for e in t.shape)}) would fit)"
        want = t.describe() if name_it else shape_text(t.shape)
        raise DatasetError(
            f"{label} samples have shape {shape_text(got)} but {model} expects {want}: reshape the data{hint} "
            "or use the matching model"
        )
    want = np.dtype(t.dtype)
    if np.issubdtype(want, np.integer) and np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise DatasetError(
                f"{label} holds fractional floats but {model} expects {t.describe()} (integer ids): "
                f"give it as integers, e.g. x.astype('{t.dtype}')"
            )
    if np.issubdtype(want, np.integer) and arr.size:
        info = np.iinfo(want)
        if arr.min() < info.min or arr.max() > info.max:
            raise DatasetError(f"{label} values range over [{arr.min()}, {arr.max()}], beyond {t.dtype}: "
                               f"{model} expects {t.describe()}")
    return arr.astype(want, copy=False)


# ---- batches: one array or a mapping name → array -----------------------------------------------
def is_named(batch: Any) -> bool:
    return isinstance(batch, Mapping)


def arrays(batch: Batch) -> Iterable[np.ndarray]:
    """Every array of ``batch``."""
    return batch.values() if isinstance(batch, Mapping) else (batch,)


def n_samples(batch: Batch) -> int:
    """Samples in ``batch`` (the first axis)."""
    return len(next(iter(arrays(batch))))


def apply(fn: Callable[[np.ndarray], np.ndarray], batch: Batch) -> Batch:
    """``fn`` on every array of ``batch``, keeping its form."""
    if isinstance(batch, Mapping):
        return {k: fn(v) for k, v in batch.items()}
    return fn(batch)


def take(batch: Batch, index: Any) -> Batch:
    """The samples at ``index``."""
    return apply(lambda a: a[index], batch)


def concat(batches: list[Batch]) -> Batch:
    """Batches of one form joined along the samples."""
    first = batches[0]
    if isinstance(first, Mapping):
        return {k: np.concatenate([b[k] for b in batches]) for k in first}
    return np.concatenate(batches)


def resized(batch: Batch, n: int) -> Batch:
    """``n`` samples: the batch's samples repeated (or cut) to that many."""
    return apply(lambda a: np.resize(a, (n, *a.shape[1:])), batch)


def run_in_batches(feed: dict[str, np.ndarray], batch_size: int | None,
                   run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
                   default_batch: int = 64) -> dict[str, np.ndarray]:
    """``run`` over ``feed`` in equal batches of at most ``batch_size`` (the last padded); float32 outputs by name.

    The samples are spread evenly over the fewest batches (65 samples with a limit of 64 run as
    33 + 32), so every batch has one shape: one trace, one compilation, padding under a sample a batch.
    """
    n = n_samples(feed)
    if n == 0:
        raise DatasetError("predict() got 0 samples: give at least one")
    limit = min(batch_size or default_batch, n)
    batch = -(-n // -(-n // limit))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, batch):
        chunk = {k: v[start : start + batch] for k, v in feed.items()}
        real = n_samples(chunk)
        if real < batch:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch - real, axis=0)]) for k, v in chunk.items()}
        out = run(chunk)
        parts.append({k: np.asarray(v, dtype=np.float32)[:real] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def dtype_name(dtype: Any) -> str:
    """numpy dtype name of a TensorFlow, numpy or string dtype (``"float32"``, ``"int32"``)."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return np.dtype(getattr(dtype, "as_numpy_dtype", name)).name
    return np.dtype(dtype).name
