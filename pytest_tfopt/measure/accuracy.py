"""Accuracy metrics: top-1 for classifiers, MAE/RMSE for regressors, or your own callable."""

from __future__ import annotations

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

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(self.fn(y_true, y_pred))

    def drop(self, reference: float, value: float, relative: bool = False) -> float:
        """How much worse ``value`` is than ``reference`` (positive = worse); relative to the reference if asked."""
        worse = reference - value if self.higher_is_better else value - reference
        if relative:
            return worse / abs(reference) if reference else (0.0 if worse == 0 else float("inf"))
        return worse


def top1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of samples whose arg-max class equals the label (labels may be one-hot)."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_pred.ndim == 1 or y_pred.shape[-1] == 1:
        pred = (y_pred.reshape(len(y_pred)) > 0.5).astype(np.int64)
    else:
        pred = y_pred.argmax(axis=-1)
    if y_true.ndim > 1 and y_true.shape[-1] > 1:
        y_true = y_true.argmax(axis=-1)
    y_true = y_true.reshape(len(y_true))
    n_classes = y_pred.shape[-1] if y_pred.ndim > 1 else 2
    if np.issubdtype(y_true.dtype, np.integer) and ((y_true < 0).any() or (y_true >= max(n_classes, 2)).any()):
        raise DatasetError(
            f"labels range over [{y_true.min()}, {y_true.max()}] but the model has {n_classes} classes: "
            "fix the labels or pass a metric that fits this model"
        )
    return float((pred.reshape(len(pred)) == y_true).mean())


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y_pred, np.float64).reshape(len(y_pred), -1) - np.asarray(y_true, np.float64).reshape(len(y_true), -1))))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    diff = np.asarray(y_pred, np.float64).reshape(len(y_pred), -1) - np.asarray(y_true, np.float64).reshape(len(y_true), -1)
    return float(np.sqrt(np.mean(diff**2)))


BUILTIN = {
    "top1": Metric("top1", top1, True),
    "accuracy": Metric("accuracy", top1, True),
    "mae": Metric("mae", mae, False),
    "rmse": Metric("rmse", rmse, False),
}


def metric(fn: Callable[[np.ndarray, np.ndarray], float] | None = None, *, higher_is_better: bool = True, name: str | None = None) -> Any:
    """Wrap a user callable as a :class:`Metric`; usable as ``@metric(higher_is_better=False)``."""

    def wrap(f: Callable[[np.ndarray, np.ndarray], float]) -> Metric:
        return Metric(name or getattr(f, "__name__", "metric"), f, higher_is_better)

    return wrap(fn) if fn is not None else wrap


def resolve(value: Any) -> Metric:
    """A :class:`Metric` from ``None`` (top-1), a name, a ``Metric`` or a callable (higher is better).

    A plain callable may carry ``higher_is_better = False`` as an attribute.
    """
    if value is None:
        return BUILTIN["top1"]
    if isinstance(value, Metric):
        return value
    if isinstance(value, str):
        if value not in BUILTIN:
            raise UsageError(f"unknown metric {value!r}: use one of {', '.join(BUILTIN)} or a callable")
        return BUILTIN[value]
    if callable(value):
        return Metric(getattr(value, "__name__", "metric"), value, bool(getattr(value, "higher_is_better", True)))
    raise UsageError(f"metric must be a name, a Metric or a callable(y_true, y_pred) -> float, not {type(value).__name__}")
