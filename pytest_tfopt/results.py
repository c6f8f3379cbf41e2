"""Result rows: one per measured (test, variant, backend), plain JSON-able dicts.

Rows travel from pytest-xdist workers to the controller inside test reports
(``user_properties``), so they hold only str/int/float/bool/None, lists and dicts.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .baseline import hardware_id
from .budgets import Verdict
from .budgets.rows import verdict_row
from .errors import TfoptError
from .explain import diagnose, explain_memory
from .measure import accuracy as acc
from .runnable import RunnableModel

#: row fields CI systems show as JUnit properties
JUNIT_FIELDS = ("accuracy", "accuracy_drop", "size_bytes", "gzip_size_bytes", "compression_ratio",
                "latency_b1_p50_ms", "latency_b1_p95_ms")
#: artifact settings a row repeats under ``quantization``: what decides an int8 model's accuracy on its backend
#: (NNCF's overflow fix on openvino, ONNX Runtime's 7-bit weights, what an accuracy-aware search kept float)
#: row fields that cost a measurement of their own when no budget measured them: computed only when asked
ON_REQUEST = ("gzip_size_bytes",)
QUANTIZATION_SETTINGS = ("quantizer", "preset", "per_channel", "reduce_range", "overflow_fix", "max_drop",
                         "float_ops", "denylisted_nodes")


def result_row(test: str, model: RunnableModel, reference: RunnableModel | None, verdicts: list[Verdict],
               outcome: str, asked: Collection[str] | None = None) -> dict[str, Any]:
    """What was measured for ``model`` (and its fp32 ``reference``) in test ``test``.

    Fields of :data:`ON_REQUEST` a budget did not measure are computed only when in ``asked`` (``None``: all
    of them, as before), else left ``None``. ``reused`` lists what came from measurement records.
    """
    m = model.measurements
    gzip_asked = asked is None or "gzip_size_bytes" in asked
    row: dict[str, Any] = {
        "test": test,
        "variant": model.variant,
        "backend": model.backend,
        "outcome": outcome,
        "size_bytes": model.size_bytes,
        "gzip_size_bytes": model.gzip_size_bytes if gzip_asked else m.get("gzip_size_bytes"),
        "accuracy": m.get("accuracy"),
        "metric": m.get("metric"),
        "delegate": model.runner.info.get("delegate"),
        "xnnpack_fallback": model.runner.info.get("xnnpack_fallback"),
        "runtime": model.runner.info.get("runtime"),
        "versions": model.artifact.metadata.get("versions"),
        "quantization": _quantization(model.artifact.metadata.get("settings")),
        "hardware_id": hardware_id(),  # the report's "hardware" block holds what it stands for
        "calibration_hash": model.artifact.metadata.get("calibration_hash"),
        "calibration_size": model.artifact.metadata.get("calibration_size"),  # samples actually used
        "source_hash": model.artifact.metadata.get("source_hash"),
        "artifact": model.path,
        "verdicts": [verdict_row(v) for v in verdicts],
    }
    _memory_fields(row, m)
    _timing_fields(row, m)
    outputs = model.signature.output_names
    if len(outputs) > 1 or len(model.signature.inputs) > 1:
        row["inputs"] = model.signature.input_names
        row["outputs"] = outputs
    for name in outputs if len(outputs) > 1 else []:  # per-output accuracy: accuracy[<output>]
        key = f"[{name}]"
        if m.get(f"accuracy{key}") is not None:
            row[f"accuracy{key}"] = m[f"accuracy{key}"]
            row[f"metric{key}"] = m.get(f"metric{key}")
    if model.runner.info.get("input_shapes"):
        row["input_shapes"] = model.runner.info["input_shapes"]
    if reference is not None:
        _reference_fields(row, model, reference, outputs, gzip_asked)
    if model.reused:  # values taken from measurement records, not measured in this run
        row["reused"] = sorted(model.reused)
    return row


def _quantization(settings: Any) -> dict[str, Any] | None:
    """The :data:`QUANTIZATION_SETTINGS` the artifact recorded (``None`` when it recorded none, e.g. fp32)."""
    chosen = {k: settings[k] for k in QUANTIZATION_SETTINGS if isinstance(settings, dict) and k in settings}
    return chosen or None


def _drop(metric: Any, reference: float, value: float) -> float:
    """How much worse ``value`` is than ``reference`` (positive = worse), as the failure messages say it."""
    try:
        return acc.resolve(metric).drop(reference, value)
    except (TfoptError, TypeError):  # a user's callable known only by name: higher is better, as by default
        return reference - value


def _memory_fields(row: dict[str, Any], m: dict[str, Any]) -> None:
    """Peak memory, the runtime's own tensor account (TFLite), the quantization triage, fidelity and parity."""
    if m.get("memory") is not None:
        row["memory_peak_mb"] = m["memory"].peak_mb
        for field in ("activations_mb", "weights_mb"):
            if getattr(m["memory"], field, None) is not None:
                row[f"memory_{field}"] = getattr(m["memory"], field)
        row["memory_breakdown"] = explain_memory(m["memory"]).to_dict()
    if m.get("profile") is not None:  # a broken timing gate's, or every row's with --tfopt-profile
        row["profile"] = m["profile"].to_dict()
    if m.get("quantization_triage") is not None:
        row["triage"] = m["quantization_triage"].summary()
    for key, stats in m.items():
        if key.startswith(("fidelity_", "parity_")):
            row[key] = stats


def _timing_fields(row: dict[str, Any], m: dict[str, Any]) -> None:
    """Latency percentiles (``latency_b{batch}[_e2e]``) and latency under load (``load_c{streams}_b{batch}...``)."""
    for key, stats in m.items():
        if key.startswith("latency_b"):
            for field in ("p50", "p90", "p95", "p99", "mean", "stdev", "min", "max"):
                row[f"{key}_{field}_ms"] = getattr(stats, f"{field}_ms")
            row[f"{key}_n"] = stats.n
            for p, (lo, hi) in getattr(stats, "ci_ms", {}).items():  # the 95 % interval; None: not bounded
                row[f"{key}_p{p}_ci_ms"] = [lo, hi if hi != float("inf") else None]
        if key.startswith("load_c"):  # latency under load: load_c{streams}_b{batch}[_r{rate}][_e2e]
            for field in ("p50", "p90", "p95", "p99", "mean", "max"):
                row[f"{key}_{field}_ms"] = getattr(stats.latency, f"{field}_ms")
            row.update({f"{key}_throughput": stats.throughput, f"{key}_requests": stats.requests,
                        f"{key}_wall_s": stats.wall_s, f"{key}_concurrency": stats.concurrency,
                        f"{key}_threads_per_stream": stats.threads_per_stream, f"{key}_cores": stats.cores,
                        f"{key}_mode": stats.mode, f"{key}_rate": stats.rate})


def _reference_fields(row: dict[str, Any], model: RunnableModel, reference: RunnableModel, outputs: list[str],
                      gzip_asked: bool = True) -> None:
    """Sizes against fp32, and accuracy drops where both sides used the same metric."""
    row["reference_size_bytes"] = reference.size_bytes
    row["reference_gzip_size_bytes"] = (reference.gzip_size_bytes if gzip_asked
                                        else reference.measurements.get("gzip_size_bytes"))
    row["compression_ratio"] = reference.size_bytes / model.size_bytes
    if model.measurements.get("profile") is not None and reference.measurements.get("profile") is not None:
        row["reference_profile"] = reference.measurements["profile"].to_dict()
        row["profile_diagnosis"] = diagnose(model.measurements["profile"], reference.measurements["profile"])
    ref_acc = reference.measurements.get("accuracy")
    if ref_acc is not None and row["accuracy"] is not None and reference.measurements.get("metric") == row["metric"]:
        row["reference_accuracy"] = ref_acc
        row["accuracy_drop"] = _drop(row["metric"], ref_acc, row["accuracy"])
    for name in outputs if len(outputs) > 1 else []:
        key = f"[{name}]"
        ours, theirs = row.get(f"accuracy{key}"), reference.measurements.get(f"accuracy{key}")
        if ours is not None and theirs is not None and reference.measurements.get(f"metric{key}") == row[f"metric{key}"]:
            row[f"reference_accuracy{key}"] = theirs
            row[f"accuracy_drop{key}"] = _drop(row[f"metric{key}"], theirs, ours)
