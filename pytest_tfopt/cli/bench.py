"""``tfopt bench``: build and measure variants on backends; a table and, optionally, a results document."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .. import metrics
from ..errors import TfoptError, UsageError
from ..report.table import fmt, table
from .console import EXIT_FAILED, EXIT_OK, Console, Progress
from .files import check_writable, existing, write_atomic
from .workbench import configure_tf, needs_data, open_workbench, split

BENCH_TEST = "tfopt-bench"
DEFAULT_BENCH_VARIANTS = "fp32,dynamic,float16,int8"
DEFAULT_BENCH_VARIANTS_NO_DATA = "fp32,dynamic,float16"


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    """``tfopt bench``: every variant on every backend, measured; the table, and --json's results document."""
    from .. import tfenv
    from ..backends import default_registry as default_backends

    ids = _checked_variant_ids(args)
    registry = default_backends()
    backends = _runnable_backends(registry, split(args.backend, "tflite"), console)
    configure_tf(args.threads)
    threads = args.threads or tfenv.default_threads()
    progress = console.progress(len(ids) * len(backends))
    wb = open_workbench(args, args.model, args.data, threads, log=progress, latency=_latency_settings(args),
                        backends=registry)
    labelled = bool(args.data) and wb.eval_dataset.y is not None
    rows, failures = _bench_all(wb, ids, backends, labelled, args, progress, console)
    _print_results(wb, rows, labelled, args, threads, console)
    if failures:
        console.note(f"{len(failures)} of {len(ids) * len(backends)} builds failed (see the notes above)")
        return EXIT_FAILED
    return EXIT_OK


def _checked_variant_ids(args: argparse.Namespace) -> list[str]:
    """The variant ids to bench, fp32 (the reference) first; usage errors for bad variants, inputs or outputs."""
    from ..measure import accuracy as acc
    from ..variants import default_registry as default_variants

    variants_reg = default_variants()
    default = DEFAULT_BENCH_VARIANTS if args.data else DEFAULT_BENCH_VARIANTS_NO_DATA
    plans = [variants_reg.resolve(v) for v in split(args.variant, default)]
    existing(args.model, "model", "MODEL")
    if args.data:
        existing(args.data, "data set", "--data")
    else:
        for plan in plans:
            need = needs_data(plan)
            if need:
                raise UsageError(f"variant {plan.id!r} {need}: give a data set with --data data.npz")
    acc.resolve(args.metric)
    if args.json:
        check_writable(args.json, "--json")
    return list(dict.fromkeys(["fp32", *(p.id for p in plans)]))


def _runnable_backends(registry: Any, names: list[str], console: Console) -> list[str]:
    """The backends of ``names`` (``["all"]``: every one in ``registry``) that can run here; a note for each other."""
    if names == ["all"]:
        names = [n for n in registry.names() if not registry.get(n).unavailable_reason()]
    backends = []
    for name in names:
        reason = registry.get(name).unavailable_reason()  # unknown names are usage errors
        if reason:
            console.note(f"skipping backend {name}: {reason}")
        else:
            backends.append(name)
    if not backends:
        raise TfoptError(f"no backend of {', '.join(names)} can run here: see the notes above, or use --backend tflite")
    return backends


def _latency_settings(args: argparse.Namespace) -> Any:
    """--latency-time as :class:`~pytest_tfopt.measure.latency.LatencySettings` (at most 4x that, at least 20 s)."""
    from ..measure.latency import LatencySettings

    return LatencySettings(min_time_s=args.latency_time, max_time_s=max(20.0, args.latency_time * 4))


def _bench_all(wb: Any, ids: list[str], backends: list[str], labelled: bool, args: argparse.Namespace,
               progress: Progress, console: Console) -> tuple[list[dict[str, Any]], list[str]]:
    """The result rows of every variant on every backend, and the builds that failed (a failed fp32 is fatal)."""
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for backend in backends:
        reference = None
        for vid in ids:
            progress.start(f"{vid} on {backend}")
            try:
                row = _bench_one(wb, vid, backend, reference, labelled, args, progress, console)
            except UsageError:
                raise
            except TfoptError as exc:
                progress.done("failed")
                if vid == "fp32":
                    raise TfoptError(f"fp32 on {backend}: {exc}") from None
                failures.append(f"{vid} on {backend}: {exc}")
                console.note(f"{vid} on {backend} failed: {exc}")
                continue
            if vid == "fp32":
                reference = wb.runnable("fp32", backend)
            rows.append(row)
    return rows, failures


def _print_results(wb: Any, rows: list[dict[str, Any]], labelled: bool, args: argparse.Namespace, threads: int,
                   console: Console) -> None:
    """The table, the cache's tally and, with --json, the results document written."""
    for line in _bench_table(rows, labelled, not args.no_latency):
        console.out(line)
    for r in rows if getattr(args, "explain", False) else []:
        console.out(r.get("explanation", ""))
    stats = wb.cache.stats
    console.out(f"artifacts: {stats.built} built ({stats.build_seconds:.1f} s), {stats.reused} reused; "
                f"cache: {wb.cache.root}")
    if args.json:
        from .. import baseline

        doc = baseline.document(rows, {"tool": "tfopt bench", "model": os.path.abspath(args.model),
                                       "data": os.path.abspath(args.data) if args.data else None,
                                       "threads": threads})
        text = json.dumps(doc, indent=1, sort_keys=True, default=str)  # what baseline.save writes
        console.out(f"results: {write_atomic(args.json, text.encode(), '--json')}")


def _bench_one(wb: Any, vid: str, backend: str, reference: Any, labelled: bool, args: argparse.Namespace,
               progress: Progress, console: Console) -> dict[str, Any]:
    """The result row of variant ``vid`` on ``backend``, built (or reused), evaluated and timed."""
    from ..errors import DatasetError
    from ..results import result_row

    stats = wb.cache.stats
    built_before, seconds_before = stats.built, stats.build_seconds
    model = wb.runnable(vid, backend)  # build (or reuse) and load
    built = stats.built > built_before
    build_s = stats.build_seconds - seconds_before
    ref = model if reference is None else reference
    if labelled:
        progress.update("evaluating")
        for output, metric in _scored_outputs(model, args.metric):
            try:
                model.evaluate(metric=metric, output=output)
            except DatasetError as exc:  # the metric does not fit this model: show the rest without accuracy
                console.note(f"{vid} on {backend}: accuracy{'' if output is None else f'[{output}]'} not measured: {exc}")
    if not args.no_latency:
        progress.update("timing")
        model.latency(1)
    if getattr(args, "explain", False):
        progress.update("explaining")
        text = _explanation(model, ref, console)
    row = result_row(BENCH_TEST, model, ref, [], "passed")
    if getattr(args, "explain", False):
        row["explanation"] = text
    row["build_seconds"] = round(build_s, 3) if built else 0.0
    row["built"] = built
    row["threads"] = wb.threads
    if row.get("xnnpack_fallback"):
        progress.update("XNNPACK refused the graph: builtin kernels")
    progress.done(f"built in {build_s:.1f} s" if built else "from the cache")
    return row


def _explanation(model: Any, reference: Any, console: Console) -> str:
    """--explain: the per-op profile against fp32's, where the bytes go and what the peak memory is made of."""
    from ..errors import TfoptError
    from ..explain import compare, explain_memory

    parts = [f"== {model.variant} on {model.backend} =="]
    try:
        mine = model.profile()
        parts.append(compare(mine, None if reference is model else reference.profile()))
    except TfoptError as exc:
        parts.append(f"no per-op profile: {exc}")
    parts.append(model.size_report().summary(reference=None if reference is model else reference.size_report()))
    try:
        parts.append(explain_memory(model.memory()).summary())
    except TfoptError as exc:
        console.note(f"{model.variant} on {model.backend}: memory not measured: {exc}")
    return "\n".join(parts)


def _scored_outputs(model: Any, metric: str) -> list[tuple[str | None, str]]:
    """(output, metric) pairs to evaluate: the one output, or each labeled output of a model with several
    (class labels with ``metric``; float targets with MAE unless ``metric`` already is a regression metric)."""
    import numpy as np

    names = model.signature.output_names
    labels = model.eval_dataset.y
    if len(names) == 1 or not isinstance(labels, dict):
        return [(None, metric)]
    pairs = []
    for name in names:
        if name in labels:
            regression = not np.issubdtype(np.asarray(labels[name]).dtype, np.integer)
            pairs.append((name, "mae" if regression and metric not in ("mae", "rmse") else metric))
    return pairs


def _bench_table(rows: list[dict[str, Any]], labelled: bool, latency: bool) -> list[str]:
    from ..report.terminal import accuracy_cells

    sizes = [metrics.BY_NAME[name] for name in ("size", "gzip_size")]
    latencies = [metrics.BY_NAME[name] for name in ("latency_p50", "latency_p95")]
    header = ["variant", "backend"]
    if labelled:
        header += [metrics.BY_NAME["accuracy"].label, "drop"]
    header += [*(m.label for m in sizes), "ratio"]
    if latency:
        header += [m.label for m in latencies]
    header += ["build s"]
    body = []
    for r in rows:
        cells = [r["variant"] + (" *" if r.get("xnnpack_fallback") else ""), r["backend"]]
        if labelled:
            cells += list(accuracy_cells(r))
        ratio = r.get("compression_ratio")
        cells += [fmt(m.column_value(r[m.row_key]), m.column_format) for m in sizes]
        cells += ["-" if ratio is None else f"{ratio:.2f}x"]
        if latency:
            cells += [fmt(r.get(m.row_key), m.column_format) for m in latencies]
        cells += [f"{r['build_seconds']:.1f}" if r.get("built") else "cached"]
        body.append(cells)
    right = [False, False, *([True] * (len(header) - 2))]
    lines = table(header, body, right)
    if any(r.get("xnnpack_fallback") for r in rows):
        lines.append("* XNNPACK refused the graph: ran on LiteRT's builtin kernels (expect different latency)")
    return lines

