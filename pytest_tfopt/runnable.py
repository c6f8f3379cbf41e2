"""A runnable model: one variant on one backend, with its measurements memoized."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .artifact import Artifact
from .backends import Runner, default_registry
from .dataset import Dataset
from .errors import DatasetError, UsageError
from .explain import Profile, SizeReport, explain_size, profile_artifact
from .measure import accuracy as acc
from .measure import reuse
from .measure.concurrency import measure as measure_closed_loop
from .measure.concurrency import measure_open_loop, threads_per_stream
from .measure.latency import MODES, LatencySettings, LatencyStats, measure, request
from .measure.memory import measure as measure_memory
from .signature import Signature, TensorInfo, arrays, resized


class RunnableModel:
    """One variant of the source model, built and loaded on one backend.

    Sizes are bytes. :meth:`evaluate` and :meth:`latency` remember their last
    results in :attr:`measurements` so reports and budgets reuse them.

    With a ``store`` (:class:`~pytest_tfopt.measure.reuse.MeasurementStore`), measurements that cannot change
    (outputs, accuracy and per-sample correctness on a data set, gzip size, memory) are read from and written
    to it; :attr:`reused` names the ones of the current test that came from it. Outputs larger than
    :data:`~pytest_tfopt.measure.reuse.MAX_OUTPUT_BYTES` are not kept: top-k metrics stream them.
    """

    def __init__(self, variant: str, backend: str, artifact: Artifact, runner: Runner,
                 eval_dataset: Dataset | None = None, latency_settings: LatencySettings | None = None,
                 open_runner: Callable[[int], Runner] | None = None,
                 store: reuse.MeasurementStore | None = None) -> None:
        self.variant = variant
        self.backend = backend
        self.artifact = artifact
        self.runner = runner
        self.eval_dataset = eval_dataset
        self.latency_settings = latency_settings or LatencySettings()
        self.measurements: dict[str, Any] = {}
        self._gzip: int | None = None
        self._memory: dict[int, Any] = {}
        self._test: str | None = None
        self._accuracy: dict[tuple[str, str, str], float] = {}
        self._latency: dict[tuple[Any, ...], LatencyStats] = {}
        self._under_load: dict[tuple[Any, ...], Any] = {}
        self._predictions: dict[str, Any] = {}
        self._profiles: dict[int, Profile] = {}
        self._open_runner = open_runner
        self.store = store
        #: measurements of the current test taken from the store (``accuracy``, ``gzip_size_bytes``, ...)
        self.reused: set[str] = set()
        self._from_store: set[Any] = set()  # memo keys whose values came from the store
        self._correct: dict[tuple[str, str, str], np.ndarray] = {}
        self._sha256: str | None = None

    def __repr__(self) -> str:
        return f"<RunnableModel {self.variant} on {self.backend}, {self.size_bytes} bytes>"

    @property
    def size_bytes(self) -> int:
        return self.artifact.size_bytes

    @property
    def gzip_size_bytes(self) -> int:
        if self._gzip is None:
            self._gzip = self._reusable("gzip", "gzip", {}, lambda: self.artifact.gzip_size_bytes,
                                        reuse.encode_int, reuse.decode_int, scope={"artifact": self.sha256})
        self._note("gzip", "gzip_size_bytes")
        self.measurements["gzip_size_bytes"] = self._gzip
        return self._gzip

    @property
    def sha256(self) -> str:
        """sha256 of the artifact's bytes (hex), computed once."""
        if self._sha256 is None:
            self._sha256 = self.artifact.sha256
        return self._sha256

    def _reusable(self, memo: Any, kind: str, what: dict[str, Any], measure: Callable[[], Any],
                  encode: Callable[[Any], Any] | None, decode: Callable[[Any], Any],
                  scope: dict[str, Any] | None = None) -> Any:
        """``measure()``, or its stored value (then ``memo`` is remembered as reused) when there is a store."""
        if self.store is None:
            return measure()
        if scope is None:
            info = self.runner.info
            scope = self.store.scope(self.sha256, self.backend, self.artifact.metadata.get("versions"),
                                     info.get("runtime"), int(info.get("threads", 1)))
        value, reused = self.store.get_or_measure(kind, scope, what, measure, encode, decode)
        if reused:
            self._from_store.add(memo)
        return value

    def _note(self, memo: Any, field: str) -> None:
        """Mark ``field`` of the current test as reused when ``memo``'s value came from the store."""
        if memo in self._from_store:
            self.reused.add(field)
        else:
            self.reused.discard(field)

    @property
    def path(self) -> str | None:
        """Where the artifact is kept on disk (the cache), if anywhere."""
        return self.artifact.path

    @property
    def info(self) -> dict[str, Any]:
        """How it runs (delegate, threads, fallbacks) and how it was built (artifact metadata)."""
        return {**self.artifact.metadata, **self.runner.info}

    @property
    def signature(self) -> Signature:
        """The named inputs and outputs this model runs with (the runtime's own names).

        A runner of a third-party backend that names nothing is taken as one input and one output.
        """
        sig = getattr(self.runner, "signature", None)
        if sig is None:
            shape = tuple(getattr(self.runner, "input_shape", ()) or ())
            sig = Signature((TensorInfo("input", shape, "float32"),), (TensorInfo("output_0", (), "float32"),))
        return sig

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """Float outputs for inputs ``x`` (one sample or a batch; an array or a mapping input name → array).

        Returns an array for a one-output model, else a dict output name → array. Run in batches.
        """
        return self.runner.predict(x if isinstance(x, Mapping) else np.asarray(x), batch_size)

    def evaluate(self, dataset: Dataset | None = None, metric: Any = None, output: str | None = None) -> float:
        """``metric`` (default top-1 accuracy) of ``output`` on ``dataset`` (default the evaluation split).

        ``output`` names the output to score on a model with several (see :meth:`output_for`); recorded
        as ``accuracy`` (one output) or ``accuracy[<output>]`` in :attr:`measurements`.
        """
        data = self._data(dataset, "evaluate()")
        name = self.output_for(output, data)
        labels = self._labels(data, name)
        m = acc.resolve(metric)
        key = _memo_key(data, name, m)
        if key not in self._accuracy:
            measure = functools.partial(self._score, m, labels, name, data)
            self._accuracy[key] = self._reusable(key, "accuracy", _what(data, name, m), measure, reuse.encode_float,
                                                 reuse.decode_float) if m.builtin else measure()
        value = self._accuracy[key]
        suffix = self.suffix(name)
        self._note(key, f"accuracy{suffix}")
        self.measurements[f"accuracy{suffix}"] = value
        self.measurements[f"metric{suffix}"] = m.name
        return value

    def correct(self, metric: Any = None, dataset: Dataset | None = None, output: str | None = None) -> np.ndarray:
        """Per sample, is ``metric`` (a per-sample one: top-1, top-k) right for ``output`` on ``dataset``? Boolean array."""
        data = self._data(dataset, "correct()")
        m = acc.resolve(metric)
        if m.correct is None:
            raise UsageError(f"metric {m.name!r} does not score samples one by one: use top1 or top<k>")
        name = self.output_for(output, data)
        key = _memo_key(data, name, m)
        if key not in self._correct:
            labels = self._labels(data, name)

            def measure() -> np.ndarray:
                if self._keeps_outputs(data):
                    return np.asarray(m.correct(labels, self.output(name, data)), bool)
                return self._stream(m, labels, name, data)

            self._correct[key] = self._reusable(("correct", *key), "correct", _what(data, name, m), measure,
                                                reuse.encode_bools, reuse.decode_bools) if m.builtin else measure()
        return self._correct[key]

    def _score(self, m: acc.Metric, labels: np.ndarray, name: str, data: Dataset) -> float:
        """``m`` of output ``name`` on ``data``: from the outputs when they are kept, else streamed (top-k)."""
        if m.correct is None or self._keeps_outputs(data):
            return m(labels, self.output(name, data))
        return float(np.mean(self._stream(m, labels, name, data)))

    def _stream(self, m: acc.Metric, labels: np.ndarray, name: str, data: Dataset) -> np.ndarray:
        """Per-sample correctness of ``m`` on ``data``, run in chunks: no full output tensor is kept."""
        data.check_finite(f"evaluation data ({data.name})")
        output = self.signature.output(name)

        def scored(x: Any) -> np.ndarray:
            out = self.predict(x)
            return out[output] if isinstance(out, Mapping) else out

        return acc.stream_correct(scored, data.x, labels, m)

    def _keeps_outputs(self, data: Dataset) -> bool:
        """Whether the outputs on ``data`` are (or would be) kept whole: small enough, or already at hand."""
        if data.hash in self._predictions:
            return True
        per_sample = sum(int(np.prod([d if d and d > 0 else 1 for d in t.shape[1:]])) * 4
                         for t in self.signature.outputs)
        return len(data) * per_sample <= reuse.MAX_OUTPUT_BYTES

    def output_for(self, output: str | None, data: Dataset | None = None) -> str:
        """The output a labeled metric scores: ``output`` (checked), the only output, or the only labeled one.

        On a model with several outputs and labels for several of them, ``output=`` must say which
        (a :class:`UsageError` listing them).
        """
        sig = self.signature
        if output is not None or len(sig.outputs) == 1:
            return sig.output(output)
        labeled = (data.labeled_outputs if data is not None else None) or []
        labeled = [n for n in sig.output_names if n in labeled]
        if len(labeled) == 1:
            return labeled[0]
        if labeled:
            raise UsageError(f"the data set labels {len(labeled)} outputs ({', '.join(labeled)}): pass output=\"name\" "
                             "to say which one to score")
        return sig.output(None)  # raises, naming the outputs

    def suffix(self, output: str) -> str:
        """``""`` on a one-output model, else ``[<output>]``: how per-output metrics are named in rows."""
        return "" if len(self.signature.outputs) == 1 else f"[{output}]"

    def _labels(self, data: Dataset, output: str) -> np.ndarray:
        if data.y is None:
            raise DatasetError(f"{data.name} has no labels: accuracy needs y (give y_test in the .npz), or use the "
                               "label-free markers min_fidelity / max_output_diff")
        if isinstance(data.y, Mapping):
            labels = data.y.get(output)
            if labels is None:
                raise UsageError(
                    f"{data.name} has no labels for output {output!r} (labeled: {', '.join(data.y)}): give "
                    f"y_test:{output} in the .npz, score a labeled output with output=..., or use min_fidelity / "
                    "max_output_diff"
                )
            return labels
        if len(self.signature.outputs) > 1 and output is None:
            raise UsageError("y is one array but the model has several outputs: give y as a mapping output name → labels")
        return data.y

    def _data(self, dataset: Any, caller: str) -> Dataset:
        """``dataset`` as a Dataset, or the evaluation split (Datasets are never empty)."""
        data = Dataset.coerce(dataset) if dataset is not None else self.eval_dataset
        if data is None:
            raise DatasetError(f"{caller} needs a data set: pass one or configure tfopt_dataset")
        return data

    def predictions(self, dataset: Dataset | None = None) -> Any:
        """Outputs on ``dataset`` (default the evaluation split), memoized per data set (read-only).

        An array for a one-output model, else a dict output name → array.
        """
        data = self._data(dataset, "predictions()")
        if data.hash not in self._predictions:
            def measure() -> Any:
                data.check_finite(f"evaluation data ({data.name})")
                out = self.predict(data.x)
                for arr in arrays(out):
                    arr.flags.writeable = False
                return out

            self._predictions[data.hash] = self._reusable(("outputs", data.hash), "outputs", {"data": data.hash},
                                                          measure, reuse.encode_outputs, reuse.decode_outputs)
        return self._predictions[data.hash]

    def output(self, name: str | None = None, dataset: Dataset | None = None) -> np.ndarray:
        """The outputs named ``name`` (default: the only output) on ``dataset``, read-only."""
        out = self.predictions(dataset)
        return out[self.signature.output(name)] if isinstance(out, Mapping) else out

    def memory(self, batch_size: int = 1) -> Any:
        """Peak resident memory (MiB) loading this artifact and running one batch adds, in a fresh process."""
        if batch_size not in self._memory:
            if self.path is None:
                raise DatasetError("memory() needs a cached artifact: build the model through a Workbench")
            threads, path = int(self.runner.info.get("threads", 1)), self.path
            self._memory[batch_size] = self._reusable(
                ("memory", batch_size), "memory", {"batch": batch_size},
                lambda: measure_memory(self.backend, path, threads, batch_size), dataclasses.asdict, reuse.decode_memory)
        self._note(("memory", batch_size), "memory_peak_mb")
        self.measurements["memory"] = self._memory[batch_size]
        return self._memory[batch_size]

    def begin_test(self, test: str) -> None:
        """Start recording for ``test``: :attr:`measurements` then lists only what ``test`` measures.

        The values stay memoized (a second test asking for the same latency reuses it), but a test's
        result row no longer shows what another test of the same variant measured.
        """
        if test != self._test:
            self._test = test
            self.measurements = {}
            self.reused = set()

    def latency(self, batch_size: int = 1, settings: LatencySettings | None = None, mode: str = "invoke",
                preprocess: Callable[[Any], Any] | None = None,
                postprocess: Callable[[Any], Any] | None = None) -> LatencyStats:
        """Latency of one batch of ``batch_size`` samples, ms, memoized per (batch size, mode, processing).

        ``mode="invoke"`` times the model only; ``"end_to_end"`` also the input copy/quantization
        and output read/dequantization, between ``preprocess`` and ``postprocess`` when given
        (see :mod:`pytest_tfopt.measure.latency`). Recorded as ``latency_b{n}`` and
        ``latency_b{n}_e2e`` in :attr:`measurements`.
        """
        self._check_latency_args(batch_size, mode)
        key = (batch_size, mode, preprocess, postprocess)
        if settings is not None or key not in self._latency:
            call = request(self.runner, self._latency_input(batch_size), mode, preprocess, postprocess)
            self._latency[key] = measure(call, batch_size, settings or self.latency_settings)
        stats = self._latency[key]
        self.measurements[_latency_key(batch_size, mode)] = stats
        return stats

    def under_load(self, concurrency: int, batch_size: int = 1, mode: str = "invoke",
                   settings: LatencySettings | None = None, preprocess: Callable[[Any], Any] | None = None,
                   postprocess: Callable[[Any], Any] | None = None, rate: float | None = None) -> Any:
        """Latency and throughput with ``concurrency`` closed-loop streams, each on its own runner.

        With ``rate`` (requests/s): open loop instead — Poisson arrivals at that rate served by
        ``concurrency`` workers, latency counted from each request's scheduled arrival.
        The runtime threads of this model are split among the streams (at least one each); see
        :mod:`pytest_tfopt.measure.concurrency`. Memoized like :meth:`latency`; recorded as
        ``load_c{c}_b{n}`` (``_r{rate}`` open loop, ``_e2e`` end to end) in :attr:`measurements`.
        """
        self._check_latency_args(batch_size, mode)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise UsageError(f"concurrency={concurrency!r}: use a whole number of streams >= 1")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0
                                 or rate == float("inf")):
            raise UsageError(f"rate={rate!r}: use a finite number of requests per second > 0")
        key = (concurrency, batch_size, mode, preprocess, postprocess, rate)
        if settings is not None or key not in self._under_load:
            threads = threads_per_stream(int(self.runner.info.get("threads", 1)), concurrency)
            runners = [self._new_runner(threads) for _ in range(concurrency)]
            x, s = self._latency_input(batch_size), settings or self.latency_settings
            if rate is None:
                self._under_load[key] = measure_closed_loop(runners, x, mode, s, threads, preprocess, postprocess)
            else:
                self._under_load[key] = measure_open_loop(
                    runners, x, float(rate), mode, s, threads, preprocess, postprocess)
        stats = self._under_load[key]
        self.measurements[load_key(concurrency, batch_size, mode, rate)] = stats
        return stats

    def size_report(self, compressed: bool = False) -> SizeReport:
        """Where this artifact's bytes go: by layer and tensor, by type, the float weights int8 would shrink
        (bytes; see :func:`pytest_tfopt.explain.explain_size`). ``compressed``: what gzip makes of them."""
        return explain_size(self, compressed=compressed)

    def profile(self, batch_size: int = 1) -> Profile:
        """Where one ``batch_size`` inference's time goes, op by op (ms), memoized; recorded as ``profile``.

        Taken on a runner of its own, never inside a judged latency measurement (see
        :func:`pytest_tfopt.explain.profile_artifact` and docs/profiling.md).
        """
        if batch_size not in self._profiles:
            threads = int(self.runner.info.get("threads", 1))
            self._profiles[batch_size] = profile_artifact(self.backend, self.artifact.content, threads,
                                                          self._latency_input(batch_size), self.variant)
        self.measurements["profile"] = self._profiles[batch_size]
        return self._profiles[batch_size]

    #: the name of :meth:`under_load` before 0.2 (kept so existing tests keep working)
    load = under_load

    def _new_runner(self, threads: int) -> Runner:
        """Another runner of this artifact (for a concurrent stream), with ``threads`` runtime threads."""
        if self._open_runner is not None:
            return self._open_runner(threads)
        return default_registry().get(self.backend).load(self.artifact, threads)

    @staticmethod
    def _check_latency_args(batch_size: int, mode: str) -> None:
        if batch_size < 1:
            raise DatasetError(f"batch_size={batch_size}: use a batch of at least 1 sample")
        if mode not in MODES:
            raise UsageError(f"latency mode {mode!r}: use one of {', '.join(MODES)}")

    def _latency_input(self, batch_size: int) -> Any:
        """``batch_size`` samples of the evaluation data (one invocation feeds every input), else random ones."""
        sig = self.signature
        if self.eval_dataset is not None and len(self.eval_dataset):
            feed = sig.feed(resized(self.eval_dataset.x, batch_size), "evaluation data", self.variant, one_sample=False)
        else:
            feed = sig.random_batch(batch_size)
        return feed[sig.inputs[0].name] if len(sig.inputs) == 1 else feed


def _memo_key(data: Dataset, output: str, m: acc.Metric) -> tuple[str, str, str]:
    """Where a score of ``m`` on ``output`` of ``data`` is memoized in-process (a user's callable by identity)."""
    return (data.hash, output, m.name if m.builtin else f"{m.name}@{id(m.fn)}")


def _what(data: Dataset, output: str, m: acc.Metric) -> dict[str, Any]:
    """What an accuracy or correctness record depends on besides the loaded artifact."""
    return {"data": data.hash, "output": output, "metric": m.name}


def load_key(concurrency: int, batch_size: int, mode: str, rate: float | None = None) -> str:
    """Where a latency under load is recorded: ``load_c4_b1``, ``load_c2_b1_r200`` (open loop), ``..._e2e``."""
    return (f"load_c{concurrency}_b{batch_size}{f'_r{rate:g}' if rate is not None else ''}"
            f"{'_e2e' if mode == 'end_to_end' else ''}")


def _latency_key(batch_size: int, mode: str) -> str:
    """Where a latency is recorded in ``measurements`` (and, with ``_p50_ms`` etc., in result rows)."""
    return f"latency_b{batch_size}" + ("_e2e" if mode == "end_to_end" else "")
