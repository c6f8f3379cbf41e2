"""Accuracy metrics: top-1 and top-k for classifiers, AUC, MAE/RMSE for regressors, or your own callable.

Names: ``top1`` (alias ``accuracy``), ``top<k>`` for any k >= 1 (``top5``), ``auc``
(binary; one-vs-rest macro average for multiclass), ``mae``, ``rmse``. Top-k metrics also
score each sample right or wrong (``Metric.correct``), which McNemar's paired test needs.
"""


from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DatasetError, UsageError


@dataclass(frozen=True)
class Metric:
    """``fn(y_true, y_pred) -> float`` and whether higher values are better."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True
    #: ``correct(y_true, y_pred) -> bool array``, one entry per sample, for metrics that are a mean of it
    correct: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    #: a built-in (its name identifies it: results are memoized by name)
    builtin: bool = False

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(self.fn(y_true, y_pred))

    def drop(self, reference: float, value: float, relative: bool = False) -> float:
        """How much worse ``value`` is than ``reference`` (positive = worse); relative to the reference if asked."""
        worse = reference - value if self.higher_is_better else value - reference
        if relative:
            return worse / abs(reference) if reference else (0.0 if worse == 0 else float("inf"))
        return worse


def _labels(y_true: np.ndarray, n: int) -> np.ndarray:
    """Integer class labels from labels or one-hot rows."""
    y_true = np.asarray(y_true)
    if y_true.ndim > 1 and y_true.shape[-1] > 1:
        y_true = y_true.argmax(axis=-1)
    return y_true.reshape(n)


def _check_labels(y_true: np.ndarray, n_classes: int) -> None:
    if np.issubdtype(y_true.dtype, np.integer) and ((y_true < 0).any() or (y_true >= max(n_classes, 2)).any()):
        raise DatasetError(
            f"labels range over [{y_true.min()}, {y_true.max()}] but the model has {n_classes} classes: "
            "fix the labels or pass a metric that fits this model"
        )


def _check_class_labels(y_true: np.ndarray, metric: str) -> None:
    """Labels of a classification metric are class indices (or one-hot rows): float targets are a regression."""
    y = np.asarray(y_true)
    if y.ndim > 1 and y.shape[-1] > 1:
        return  # one-hot (or smoothed) rows: the arg-max is the class
    if np.issubdtype(y.dtype, np.floating) and y.size and not np.all(y == np.round(y)):
        raise UsageError(
            f"{metric} needs class labels, but the labels are fractional floats (a regression target, e.g. "
            f"{float(y.reshape(-1)[0]):.4g}): use metric=\"mae\" or metric=\"rmse\""
        )


def top1_correct(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per sample: is the arg-max class the label?

    One output column is a binary classifier: probabilities (every value in [0, 1]) are class 1 above 0.5,
    logits (any value outside [0, 1]) above 0. Fractional float labels are a usage error (a regression).
    """
    y_pred = np.asarray(y_pred)
    _check_class_labels(y_true, "top1")
    if y_pred.ndim == 1 or y_pred.shape[-1] == 1:
        flat = y_pred.reshape(len(y_pred))
        threshold = 0.5 if np.all((flat >= 0) & (flat <= 1)) else 0.0
        pred = (flat > threshold).astype(np.int64)
    else:
        pred = y_pred.argmax(axis=-1)
    y_true = _labels(y_true, len(y_pred))
    _check_labels(y_true, y_pred.shape[-1] if y_pred.ndim > 1 else 2)
    return pred.reshape(len(pred)) == y_true


def top1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of samples whose arg-max class equals the label (labels may be one-hot)."""
    return float(top1_correct(y_true, y_pred).mean())


def top_k_correct(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Per sample: is the label among the ``k`` highest-scoring classes?

    Ties rank the lower class index first, as ``argmax`` does, so ``top_k_correct(.., 1)``
    agrees with top-1: the label is in the top k when fewer than k classes score higher or
    score the same with a lower index.
    """
    y_pred = np.asarray(y_pred)
    if k == 1:
        return top1_correct(y_true, y_pred)
    _check_class_labels(y_true, f"top{k}")
    if y_pred.ndim != 2 or y_pred.shape[1] < 2:
        raise DatasetError(f"top{k} needs one score per class (outputs of shape (n, classes)), got {y_pred.shape}")
    y_true = _labels(y_true, len(y_pred))
    _check_labels(y_true, y_pred.shape[1])
    if k >= y_pred.shape[1]:
        raise DatasetError(f"top{k} on a model with {y_pred.shape[1]} classes is always 1: use k < {y_pred.shape[1]}")
    labels = y_true.astype(np.int64)
    label_score = y_pred[np.arange(len(y_pred)), labels][:, None]
    lower_index = np.arange(y_pred.shape[1])[None, :] < labels[:, None]
    ahead = (y_pred > label_score) | ((y_pred == label_score) & lower_index)
    return ahead.sum(axis=1) < k


def _top_k(k: int) -> Callable[[np.ndarray, np.ndarray], float]:
    def fn(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(top_k_correct(y_true, y_pred, k).mean())

    fn.__name__ = f"top{k}"
    return fn


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (as in the Mann-Whitney U statistic)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2)[inverse]


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for boolean ``positive``: P(score of a positive > score of a negative), ties 1/2.

    Rank-based (Mann-Whitney): ``(sum of positive ranks - p(p+1)/2) / (p*n)``.
    """
    positive = np.asarray(positive, bool).reshape(-1)
    score = np.asarray(score, np.float64).reshape(-1)
    p = int(positive.sum())
    n = len(positive) - p
    if p == 0 or n == 0:
        raise DatasetError(f"AUC needs both classes among the labels, got {p} positive and {n} negative samples")
    ranks = _ranks(score)
    return float((ranks[positive].sum() - p * (p + 1) / 2) / (p * n))


def auc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """ROC AUC: binary (one output, or the second of two) or one-vs-rest macro average over classes.

    Multiclass: the mean of each class's AUC (its score against all other samples) over the
    classes present among the labels; classes with no sample are left out.
    """
    y_pred = np.asarray(y_pred, np.float64)
    if y_pred.ndim == 1 or (y_pred.ndim == 2 and y_pred.shape[1] == 1):
        return binary_auc(_labels(y_true, len(y_pred)) == 1, y_pred.reshape(len(y_pred)))
    if y_pred.ndim != 2:
        raise DatasetError(f"auc needs outputs of shape (n,) or (n, classes), got {y_pred.shape}")
    y_true = _labels(y_true, len(y_pred))
    _check_labels(y_true, y_pred.shape[1])
    if y_pred.shape[1] == 2:
        return binary_auc(y_true == 1, y_pred[:, 1])
    present = [c for c in range(y_pred.shape[1]) if 0 < np.sum(y_true == c) < len(y_true)]
    if not present:
        raise DatasetError("auc needs at least two classes among the labels")
    return float(np.mean([binary_auc(y_true == c, y_pred[:, c]) for c in present]))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error over every output of every sample."""
    return float(np.mean(np.abs(np.asarray(y_pred, np.float64).reshape(len(y_pred), -1) - np.asarray(y_true, np.float64).reshape(len(y_true), -1))))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error over every output of every sample."""
    diff = np.asarray(y_pred, np.float64).reshape(len(y_pred), -1) - np.asarray(y_true, np.float64).reshape(len(y_true), -1)
    return float(np.sqrt(np.mean(diff**2)))


BUILTIN = {
    "top1": Metric("top1", top1, True, top1_correct, True),
    "accuracy": Metric("accuracy", top1, True, top1_correct, True),
    "auc": Metric("auc", auc, True, None, True),
    "mae": Metric("mae", mae, False, None, True),
    "rmse": Metric("rmse", rmse, False, None, True),
}
TOP_K = re.compile(r"top([1-9][0-9]*)")


@functools.cache
def top_k(k: int) -> Metric:
    """The top-``k`` accuracy metric (one object per k, so results memoize by name)."""
    if k == 1:
        return BUILTIN["top1"]
    return Metric(f"top{k}", _top_k(k), True, functools.partial(_top_k_correct_of, k=k), True)


def _top_k_correct_of(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    return top_k_correct(y_true, y_pred, k)


def metric(fn: Callable[[np.ndarray, np.ndarray], float] | None = None, *, higher_is_better: bool = True, name: str | None = None) -> Any:
    """Wrap a user callable as a :class:`Metric`; usable as ``@metric(higher_is_better=False)``."""

    def wrap(f: Callable[[np.ndarray, np.ndarray], float]) -> Metric:
        return Metric(name or getattr(f, "__name__", "metric"), f, bool(higher_is_better))

    return wrap(fn) if fn is not None else wrap


def names() -> str:
    """The built-in metric names, for usage messages."""
    return "top1, accuracy, top5 (any top<k>), auc, mae, rmse"


def resolve(value: Any, higher_is_better: bool | None = None) -> Metric:
    """A :class:`Metric` from ``None`` (top-1), a name, a ``Metric`` or a callable (higher is better).

    A plain callable may carry ``higher_is_better = False`` as an attribute; an explicit
    ``higher_is_better`` overrides it (for built-in names it must agree with theirs).
    """
    if value is None:
        value = "top1"
    if isinstance(value, str):
        match = TOP_K.fullmatch(value)
        if match:
            m = top_k(int(match.group(1)))
        elif value in BUILTIN:
            m = BUILTIN[value]
        else:
            raise UsageError(f"unknown metric {value!r}: use one of {names()}, or a callable(y_true, y_pred) -> float")
        if higher_is_better is not None and higher_is_better != m.higher_is_better:
            raise UsageError(f"metric {value!r} is {'higher' if m.higher_is_better else 'lower'}-is-better: "
                             "drop higher_is_better=..., it is for your own callables")
        return m
    if isinstance(value, Metric):
        return value if higher_is_better is None else Metric(value.name, value.fn, higher_is_better, value.correct)
    if callable(value):
        direction = bool(getattr(value, "higher_is_better", True)) if higher_is_better is None else higher_is_better
        return Metric(getattr(value, "__name__", "metric"), value, direction)
    raise UsageError(f"metric must be a name, a Metric or a callable(y_true, y_pred) -> float, not {type(value).__name__}")


#: samples per chunk when :func:`stream_correct` runs a data set (the runner batches each chunk itself)
STREAM_CHUNK = 256


def stream_correct(predict: Callable[[Any], np.ndarray], x: Any, y_true: np.ndarray, m: Metric,
                   chunk: int = STREAM_CHUNK) -> np.ndarray:
    """Per-sample correctness of per-sample metric ``m`` over ``x`` in chunks of ``chunk`` samples.

    ``predict(x_chunk)`` gives the scored output of a chunk (``x``: an array or a mapping name → array).
    Only the booleans are kept: memory is bounded by one chunk's outputs, whatever the data set's size.
    """
    if m.correct is None:
        raise UsageError(f"metric {m.name!r} does not score samples one by one: use top1 or top<k>")
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    parts = []
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        x_part = {k: v[part] for k, v in x.items()} if isinstance(x, dict) else x[part]
        parts.append(np.asarray(m.correct(y_true[part], predict(x_part)), bool).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, bool)
