"""Markers → budgets: each marker's arguments validated into a budget object.

:func:`parse_marker` turns ``@pytest.mark.<name>(*args, **kwargs)`` (or a budgets-file entry) into
a budget whose ``check(model, reference)`` returns a :class:`~.verdict.Verdict`; bad arguments are
a :class:`UsageError` that shows how to write them. A new marker is one parser here plus one entry
in :data:`PARSERS` and :data:`MARKER_DOCS`.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..measure import accuracy as acc
from ..measure import fidelity
from ..measure.latency import MODES, PERCENTILES
from .arguments import number, show
from .footprint import MaxMemory, MaxSize, MaxUniqueWeights, MinCompression, MinSparsity
from .perf import MaxLatency, MinSpeedup, MinThroughput
from .quality import AccuracyDrop, MaxOutputDiff, MinFidelity

METHODS = ("bootstrap", "mcnemar")


def _output(marker: str, output: Any) -> str | None:
    if output is not None and (not isinstance(output, str) or not output):
        raise UsageError(f"{marker}(output=...) must be an output name, got {show(output)}")
    return output


def _accuracy(marker: str, limit: Any = None, relative: bool = False, metric: Any = None,
              confidence: Any = None, method: Any = None, top_k: Any = None,
              higher_is_better: Any = None, output: Any = None) -> AccuracyDrop:
    if limit is None:
        raise UsageError(f"{marker} needs the budget, e.g. @pytest.mark.{marker}(0.01)")
    number(limit, f"{marker} budget", allow_zero=True)
    if not isinstance(relative, bool):
        raise UsageError(f"{marker}(relative=...) must be True or False, got {show(relative)}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UsageError(f"{marker}(top_k={show(top_k)}) must be a whole number >= 1, e.g. top_k=5")
        if metric is not None:
            raise UsageError(f"{marker}: give metric=... or top_k=..., not both (top_k={top_k} means metric=\"top{top_k}\")")
        metric = f"top{top_k}"
    if higher_is_better is not None and not isinstance(higher_is_better, bool):
        raise UsageError(f"{marker}(higher_is_better=...) must be True or False, got {show(higher_is_better)}")
    if method is not None and method not in METHODS:
        raise UsageError(f"{marker}(method={show(method)}): use one of {', '.join(map(repr, METHODS))}")
    if confidence is not None:
        value = number(confidence, f"{marker}(confidence=...)")
        if not 0.5 <= value < 1:
            raise UsageError(f"{marker}(confidence={show(confidence)}) must be in [0.5, 1), e.g. 0.95")
    elif method is not None:
        confidence = 0.95  # a method names an interval: 95 % unless told
    m = acc.resolve(metric, higher_is_better)
    if method == "mcnemar":
        if m.correct is None:
            raise UsageError(f"{marker}(method='mcnemar') needs a metric that scores each sample right or wrong "
                             f"(top1, top<k>), not {m.name!r}; use method='bootstrap'")
        if relative:
            raise UsageError(f"{marker}(method='mcnemar') bounds the absolute drop: drop relative=True or use "
                             "method='bootstrap'")
    return AccuracyDrop(float(limit), relative, metric, marker, None if confidence is None else float(confidence),
                        method, higher_is_better, _output(marker, output))


def _fidelity(limit: Any = None, metric: Any = "top1_agreement", output: Any = None) -> MinFidelity:
    if limit is None:
        raise UsageError("min_fidelity needs the threshold, e.g. @pytest.mark.min_fidelity(0.99, metric=\"top1_agreement\")")
    if not isinstance(metric, str):
        raise UsageError(f"min_fidelity(metric=...) must be a name, got {show(metric)}")
    fidelity.resolve(metric)
    return MinFidelity(number(limit, "min_fidelity threshold", positive=False), metric,
                       output=_output("min_fidelity", output))


def _latency(limit_ms: Any = None, percentile: Any = 50, batch_size: Any = 1, mode: Any = "invoke",
             concurrency: Any = 1, preprocess: Any = None, postprocess: Any = None, rate: Any = None) -> MaxLatency:
    if limit_ms is None:
        raise UsageError("max_latency_ms needs the budget in ms, e.g. @pytest.mark.max_latency_ms(2.0)")
    number(limit_ms, "max_latency_ms budget")
    if isinstance(percentile, bool) or not isinstance(percentile, int) or percentile not in PERCENTILES:
        raise UsageError(f"max_latency_ms(percentile={show(percentile)}) must be one of {', '.join(map(str, PERCENTILES))}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"max_latency_ms(batch_size={show(batch_size)}) must be an integer >= 1")
    if mode not in MODES:
        raise UsageError(f"max_latency_ms(mode={show(mode)}) must be one of {', '.join(map(repr, MODES))}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"max_latency_ms(concurrency={show(concurrency)}) must be a whole number of streams >= 1, "
                         "e.g. concurrency=4")
    if rate is not None:
        number(rate, "max_latency_ms(rate=...) in requests per second")
    for name, fn in (("preprocess", preprocess), ("postprocess", postprocess)):
        if fn is not None and not callable(fn):
            raise UsageError(f"max_latency_ms({name}=...) must be a callable(batch) -> batch, got {show(fn)}")
        if fn is not None and mode != "end_to_end":
            raise UsageError(f"max_latency_ms({name}=...) is timed only end to end: add mode=\"end_to_end\"")
    return MaxLatency(float(limit_ms), int(percentile), batch_size, "max_latency_ms", mode, concurrency,
                      preprocess, postprocess, None if rate is None else float(rate))


def _throughput(limit: Any = None, batch_size: Any = 1) -> MinThroughput:
    if limit is None:
        raise UsageError("min_throughput needs samples/s, e.g. @pytest.mark.min_throughput(200, batch_size=32)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"min_throughput(batch_size={show(batch_size)}) must be an integer >= 1")
    return MinThroughput(number(limit, "min_throughput"), batch_size)


def _speedup(ratio: Any = None, reference: Any = "fp32", batch_size: Any = 1) -> MinSpeedup:
    if ratio is None:
        raise UsageError("min_speedup needs the ratio, e.g. @pytest.mark.min_speedup(1.5, reference=\"fp32\")")
    if not isinstance(reference, str) or not reference:
        raise UsageError(f"min_speedup(reference=...) must be a variant name, got {show(reference)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"min_speedup(batch_size={show(batch_size)}) must be an integer >= 1")
    return MinSpeedup(number(ratio, "min_speedup"), reference, batch_size)


def _output_diff(atol: Any = 1e-3, rtol: Any = 0.0, reference: Any = "tf", output: Any = None) -> MaxOutputDiff:
    value_atol = number(atol, "max_output_diff(atol=...)", allow_zero=True)
    value_rtol = number(rtol, "max_output_diff(rtol=...)", allow_zero=True)
    if not isinstance(reference, str) or not reference:
        raise UsageError(f"max_output_diff(reference=...) must be a backend name, got {show(reference)}")
    return MaxOutputDiff(value_atol, value_rtol, reference, output=_output("max_output_diff", output))


def _memory(limit_mb: Any = None) -> MaxMemory:
    if limit_mb is None:
        raise UsageError("max_memory_mb needs the budget in MiB, e.g. @pytest.mark.max_memory_mb(64)")
    return MaxMemory(number(limit_mb, "max_memory_mb budget"))


def _size(limit_kb: Any = None) -> MaxSize:
    if limit_kb is None:
        raise UsageError("max_size_kb needs the budget in KB, e.g. @pytest.mark.max_size_kb(150)")
    return MaxSize(number(limit_kb, "max_size_kb budget"))


def _ratio(ratio: Any = None, compressed: Any = False) -> MinCompression:
    if ratio is None:
        raise UsageError("min_compression_ratio needs the ratio, e.g. @pytest.mark.min_compression_ratio(2.0)")
    if not isinstance(compressed, bool):
        raise UsageError(f"min_compression_ratio(compressed=...) must be True or False, got {show(compressed)}")
    return MinCompression(number(ratio, "min_compression_ratio"), compressed)


def _sparsity(limit: Any = None) -> MinSparsity:
    if limit is None:
        raise UsageError("min_sparsity needs the fraction of zero weights, e.g. @pytest.mark.min_sparsity(0.5)")
    value = number(limit, "min_sparsity", allow_zero=True)
    if value > 1:
        raise UsageError(f"min_sparsity({show(limit)}) is a fraction of weights: use a value in [0, 1]")
    return MinSparsity(value)


def _unique(limit: Any = None) -> MaxUniqueWeights:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"max_unique_weights needs a whole number >= 1, got {show(limit)}; e.g. max_unique_weights(16)")
    return MaxUniqueWeights(limit)


PARSERS = {
    "max_accuracy_drop": lambda *a, **k: _accuracy("max_accuracy_drop", *a, **k),
    "min_accuracy_drop": lambda *a, **k: _accuracy("min_accuracy_drop", *a, **k),
    "max_latency_ms": _latency,
    "min_throughput": _throughput,
    "max_output_diff": _output_diff,
    "max_memory_mb": _memory,
    "min_speedup": _speedup,
    "max_size_kb": _size,
    "min_compression_ratio": _ratio,
    "min_sparsity": _sparsity,
    "min_fidelity": _fidelity,
    "max_unique_weights": _unique,
}

MARKER_DOCS = {
    "max_accuracy_drop": "max_accuracy_drop(drop, relative=False, metric=None, confidence=None, method=None, top_k=None, higher_is_better=None, output=None): the metric (top1 default, top<k>, auc, mae, rmse or a callable) may be at most `drop` worse than fp32 on eval_dataset; with confidence, PASS when the whole paired interval is within it, FAIL when it is all beyond, INCONCLUSIVE between (method 'mcnemar' = Tango, the default for top-k; 'bootstrap' otherwise); output='name' picks the output of a model with several.",
    "min_accuracy_drop": "min_accuracy_drop(drop, relative=False, metric=None, confidence=None, method=None, top_k=None, higher_is_better=None, output=None): alias of max_accuracy_drop (same meaning).",
    "min_fidelity": "min_fidelity(threshold, metric='top1_agreement', output=None): label-free agreement with fp32's outputs on eval_dataset (top1_agreement, cosine, snr_db: at least; kl_divergence, max_abs_error: at most); without output=, every output of a model with several, the worst decides.",
    "max_latency_ms": "max_latency_ms(ms, percentile=50, batch_size=1, mode='invoke', concurrency=1, preprocess=None, postprocess=None): the variant's latency percentile must be at most `ms` (inconclusive when its 95% interval straddles `ms`); mode 'invoke' or 'end_to_end'; concurrency=N: per-request latency with N concurrent streams, throughput reported; rate=R: open loop, Poisson arrivals at R requests/s served by `concurrency` workers (MLPerf Server-like).",
    "max_output_diff": "max_output_diff(atol=1e-3, rtol=0, reference='tf', output=None): every output within atol + rtol*|ref| of fp32 on the reference backend (same eval_dataset inputs); output='name' checks one output of a model with several.",
    "max_memory_mb": "max_memory_mb(mib): peak resident memory a fresh load + one run of the variant adds (Linux); reports the interpreter's tensor memory too where the runtime gives it.",
    "min_throughput": "min_throughput(samples_per_s, batch_size=1): at least this many samples/s at the median latency.",
    "min_speedup": "min_speedup(ratio, reference='fp32', batch_size=1): reference time / variant time, measured interleaved, at least `ratio` (decided on its 95% interval).",
    "max_size_kb": "max_size_kb(kb): the variant's artifact must be at most `kb` KB (1 KB = 1024 bytes).",
    "min_compression_ratio": "min_compression_ratio(ratio, compressed=False): fp32 bytes / variant bytes (gzip bytes if compressed) must be at least `ratio`.",
    "min_sparsity": "min_sparsity(fraction): every layer a pruned(...) stage touched has at least this fraction of zero weights.",
    "max_unique_weights": "max_unique_weights(n): every layer a clustered(...) stage touched has at most n distinct weight values.",
}


def parse_marker(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The budget for marker ``name`` with ``args``/``kwargs``; a :class:`UsageError` when they are bad."""
    try:
        return PARSERS[name](*args, **kwargs)
    except TypeError as exc:
        raise UsageError(f"bad arguments for {name}: {exc}; expected {MARKER_DOCS[name].split(':')[0]}") from None
