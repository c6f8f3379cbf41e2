"""A runnable model: one variant on one backend, with its measurements memoized."""

from __future__ import annotations

from typing import Any

import numpy as np

from .artifact import Artifact
from .backends import Runner
from .dataset import Dataset
from .errors import DatasetError
from .measure import accuracy as acc
from .measure.latency import LatencySettings, LatencyStats, measure


class RunnableModel:
    """One variant of the source model, built and loaded on one backend.

    Sizes are bytes. :meth:`evaluate` and :meth:`latency` remember their last
    results in :attr:`measurements` so reports and budgets reuse them.
    """

    def __init__(self, variant: str, backend: str, artifact: Artifact, runner: Runner,
                 eval_dataset: Dataset | None = None, latency_settings: LatencySettings | None = None) -> None:
        self.variant = variant
        self.backend = backend
        self.artifact = artifact
        self.runner = runner
        self.eval_dataset = eval_dataset
        self.latency_settings = latency_settings or LatencySettings()
        self.measurements: dict[str, Any] = {}
        self._accuracy: dict[tuple[str, str], float] = {}
        self._latency: dict[int, LatencyStats] = {}
        self._predictions: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"<RunnableModel {self.variant} on {self.backend}, {self.size_bytes} bytes>"

    @property
    def size_bytes(self) -> int:
        return self.artifact.size_bytes

    @property
    def gzip_size_bytes(self) -> int:
        if "gzip_size_bytes" not in self.measurements:
            self.measurements["gzip_size_bytes"] = self.artifact.gzip_size_bytes
        return self.measurements["gzip_size_bytes"]

    @property
    def path(self) -> str | None:
        """Where the artifact is kept on disk (the cache), if anywhere."""
        return self.artifact.path

    @property
    def info(self) -> dict[str, Any]:
        """How it runs (delegate, threads, fallbacks) and how it was built (artifact metadata)."""
        return {**self.artifact.metadata, **self.runner.info}

    def predict(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """Float outputs for inputs ``x`` (one sample or a batch), run in batches."""
        return self.runner.predict(np.asarray(x), batch_size)

    def evaluate(self, dataset: Dataset | None = None, metric: Any = None) -> float:
        """``metric`` (default top-1 accuracy) on ``dataset`` (default the evaluation split)."""
        data = self._data(dataset, "evaluate()")
        if data.y is None:
            raise DatasetError(f"{data.name} has no labels: accuracy needs y (give y_test in the .npz)")
        m = acc.resolve(metric)
        key = (data.hash, m.name if m.name in acc.BUILTIN else f"{m.name}@{id(m.fn)}")
        if key not in self._accuracy:
            self._accuracy[key] = m(data.y, self.predictions(data))
        value = self._accuracy[key]
        self.measurements["accuracy"] = value
        self.measurements["metric"] = m.name
        return value

    def _data(self, dataset: Any, caller: str) -> Dataset:
        """``dataset`` as a Dataset, or the evaluation split (Datasets are never empty)."""
        data = Dataset.coerce(dataset) if dataset is not None else self.eval_dataset
        if data is None:
            raise DatasetError(f"{caller} needs a data set: pass one or configure tfopt_dataset")
        return data

    def predictions(self, dataset: Dataset | None = None) -> np.ndarray:
        """Outputs on ``dataset`` (default the evaluation split), memoized per data set (read-only)."""
        data = self._data(dataset, "predictions()")
        if data.hash not in self._predictions:
            data.check_finite(f"evaluation data ({data.name})")
            out = self.predict(data.x)
            out.flags.writeable = False
            self._predictions[data.hash] = out
        return self._predictions[data.hash]

    def memory(self, batch_size: int = 1) -> Any:
        """Peak resident memory (MiB) loading this artifact and running one batch adds, in a fresh process."""
        from .measure.memory import measure as measure_memory

        if "memory" not in self.measurements:
            if self.path is None:
                raise DatasetError("memory() needs a cached artifact: build the model through a Workbench")
            threads = int(self.runner.info.get("threads", 1))
            self.measurements["memory"] = measure_memory(self.backend, self.path, threads, batch_size)
        return self.measurements["memory"]

    def latency(self, batch_size: int = 1, settings: LatencySettings | None = None) -> LatencyStats:
        """Invoke-only latency of one batch of ``batch_size`` samples, ms (memoized per batch size)."""
        if batch_size < 1:
            raise DatasetError(f"batch_size={batch_size}: use a batch of at least 1 sample")
        if settings is not None or batch_size not in self._latency:
            invoke = self.runner.prepare(self._latency_input(batch_size))
            self._latency[batch_size] = measure(invoke, batch_size, settings or self.latency_settings)
        stats = self._latency[batch_size]
        self.measurements[f"latency_b{batch_size}"] = stats
        return stats

    def _latency_input(self, batch_size: int) -> np.ndarray:
        if self.eval_dataset is not None and len(self.eval_dataset):
            x = self.eval_dataset.x
            return np.resize(x, (batch_size, *x.shape[1:])).astype(np.float32)
        shape = tuple(d or 1 for d in self.runner.input_shape)
        return np.random.default_rng(0).random((batch_size, *shape), dtype=np.float32)
