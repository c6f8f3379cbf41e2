"""Backends side by side: latency, throughput, accuracy and wrapper overhead of every backend here.

For each model (``--models``: the shipped digits CNN ``models/digits_cnn.h5`` with
``fixtures/digits.npz``, and the larger ``models/mobilenet_v2_035_96.h5``, tf_keras MobileNetV2
alpha 0.35 at 96x96x3, on the digits upscaled to 96x96 RGB), for each backend of the registry
that is available here (``--backends``, default all; an unavailable one is skipped with its reason,
printed once) and for each precision among fp32, dynamic, float16, int8, bf16 (``--variants``) that
the backend accepts (``Backend.unsupported_reason``; a refusal at build time is a skip too), the
variant is built through a ``Workbench`` (fresh temp cache unless ``--cache-dir``; calibrated
variants use the Workbench's calibration split) and measured:

* **p50 / p95 ms**: ``runnable.latency(batch_size=1)``, the plugin's invoke-only latency (median
  over the rounds below of each round's p50 / p95);
* **thr/s @32**: ``runnable.latency(batch_size=32).throughput``, samples/s at the median latency
  of a batch of 32 (what ``min_throughput(..., batch_size=32)`` judges);
* **top1 / agreement**: digits: top-1 accuracy on the test split (450 samples); mobilenet:
  agreement of the argmax with the fp32 variant *on the same backend* (``ref`` on the fp32 row);
* **wrapper/bare p50**: the plugin's batch-1 invoke-only latency against a bare loop that calls
  the runtime directly on the same artifact bytes, same threads, same input (the first evaluation
  sample, which is what the plugin times), set once before the loop:

  - ``tflite``: ``ai_edge_litert`` ``Interpreter(model_content=..., num_threads=...)`` (builtin
    kernels when the runner fell back from XNNPACK), ``set_tensor`` once, then ``invoke()``;
  - ``onnxruntime``: an ``InferenceSession`` on the same bytes with the runner's session options
    (intra-op threads, inter-op 1, sequential) and providers, ``run([output], feed)`` with a
    prebuilt feed dict;
  - ``tf``: the artifact unpacked (``backends._archive.unpack``), ``tf.saved_model.load`` and the
    ``serving_default`` signature (a concrete function) called with a prebuilt tensor;
  - ``xla``: the same call wrapped in ``tf.function(jit_compile=True)``; the loop calls its
    concrete function for the prebuilt tensor (compiled before timing);
  - ``openvino``: the IR unpacked from the artifact, ``Core.compile_model`` with the device and
    config the runner records in ``runner.info`` (inference precision, threads, performance hint;
    batch axis made dynamic when the runner's is), one ``InferRequest`` with the input tensor set
    once, then ``infer()``;
  - any other backend: no bare side (``-``).

  Both sides use the same timing loop (warm-up, ``perf_counter_ns`` around each call, garbage
  collector off, same minimum time and count). They are interleaved for ``--rounds`` rounds
  (plugin, bare / bare, plugin / ...) and the ratio is paired: plugin p50 / bare p50 within each
  round, median over rounds. Target: <= 1.05 in every row (``MISS`` otherwise);
* **build s**: conversion time of the artifact (``cached`` when it came from the cache).

Before each row the script waits (up to ``--quiet-wait`` s) for other processes to leave the
cores idle; ``others' load`` = cores other processes kept busy during the row's rounds.

TF and XLA share the process's TensorFlow thread pools: ``--threads`` is applied to TensorFlow
(intra-op N, inter-op 1) before it is imported, and to LiteRT / ONNX Runtime / OpenVINO through
the Workbench.

Run:  python benchmarks/bench_backends.py [--models digits,mobilenet] [--backends tflite,onnxruntime]
          [--variants fp32,int8] [--threads 1] [--rounds 3] [--quick] [--quiet-wait S] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import _common as c
import numpy as np

TARGET = 1.05
PRECISIONS = ("fp32", "dynamic", "float16", "int8", "bf16")
MOBILENET_MODEL = c.ROOT / "models" / "mobilenet_v2_035_96.h5"
MOBILENET_TEST = 200  # test samples of the upscaled digits (keeps evaluation quick)
MOBILENET_TRAIN = 400  # train samples (the calibration split draws 200 of them)
THROUGHPUT_BATCH = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="digits,mobilenet", help="comma list of digits, mobilenet (default both)")
    p.add_argument("--backends", default=None,
                   help="comma list of registry names (default: every registered backend available here)")
    p.add_argument("--variants", default=",".join(PRECISIONS),
                   help=f"comma list of precisions (default {','.join(PRECISIONS)})")
    p.add_argument("--threads", default="1",
                   help="runtime threads, same on both sides and every backend; 'auto' = the cores here (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved plugin/bare rounds per row (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 0.1 s per measurement, 100 mobilenet test samples, no quiet wait")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="before each row, wait up to this many seconds for other processes to leave the cores "
                        "idle (under 0.25 cores busy for 2 s); 0 = don't (default 30, 0 with --quick)")
    p.add_argument("--cache-dir", default=None, help="artifact cache (default: a fresh temp dir)")
    return p.parse_args(argv)


def csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


# ---- data -------------------------------------------------------------------------------------
def digits96(x: np.ndarray) -> np.ndarray:
    """8x8x1 digits in [0, 1] as 96x96x3 images: the same as ``digits96`` in models/train_mobilenet_v2.py.

    Copied rather than imported: that module configures TensorFlow (one thread, deterministic ops)
    when imported, which would override this benchmark's thread settings.
    """
    scale = 96 // x.shape[1]
    big = np.repeat(np.repeat(x, scale, axis=1), scale, axis=2)
    return np.repeat(big, 3, axis=3).astype(np.float32)


def mobilenet_dataset(n_test: int) -> Any:
    from pytest_tfopt import Dataset

    with np.load(c.DIGITS_DATA) as d:
        x_train, y_train, x_test, y_test = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    return Dataset.from_arrays(digits96(x_train[:MOBILENET_TRAIN]), y_train[:MOBILENET_TRAIN],
                               x_test=digits96(x_test[:n_test]), y_test=y_test[:n_test])


def workbench(model: str, cache_dir: str, threads: int, settings: Any, quick: bool) -> Any:
    from pytest_tfopt import Workbench

    if model == "digits":
        return Workbench(str(c.DIGITS_MODEL), str(c.DIGITS_DATA), cache_dir=cache_dir, threads=threads,
                         latency=settings)
    if model == "mobilenet":
        if not MOBILENET_MODEL.exists():
            return None
        data = mobilenet_dataset(100 if quick else MOBILENET_TEST)
        return Workbench(str(MOBILENET_MODEL), data, cache_dir=cache_dir, threads=threads, latency=settings)
    raise SystemExit(f"unknown model {model!r}: use digits or mobilenet")


# ---- the bare side ----------------------------------------------------------------------------
def bare_tflite(r: Any, x: np.ndarray, threads: int) -> Callable[[], None]:
    interp = c.bare_interpreter(r, threads)  # same bytes, threads and delegate choice as the runner
    inp = interp.get_input_details()[0]
    if tuple(inp["shape"]) != tuple(x.shape):
        interp.resize_tensor_input(inp["index"], list(x.shape), strict=False)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
    dtype = np.dtype(inp["dtype"])
    if not np.issubdtype(dtype, np.floating):  # integer input: quantize with the tensor's own parameters
        scale, zero = inp["quantization"]
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero), info.min, info.max) if scale else x
    interp.set_tensor(inp["index"], x.astype(dtype))
    return interp.invoke


def bare_onnxruntime(r: Any, x: np.ndarray, threads: int) -> Callable[[], None]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = list(r.runner.info.get("providers") or ["CPUExecutionProvider"])
    session = ort.InferenceSession(r.artifact.content, sess_options=options, providers=providers)
    graph_input = session.get_inputs()[0]
    dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
             "tensor(double)": np.float64}.get(graph_input.type, np.float32)
    feed = {graph_input.name: x.astype(dtype)}
    outputs = [session.get_outputs()[0].name]
    run = session.run

    def invoke() -> None:
        run(outputs, feed)

    return invoke


def _saved_model_signature(r: Any) -> tuple[Any, str, Any, str]:
    """``(tf, key, spec, out_key)`` and the ``serving_default`` signature of a fresh load of the artifact."""
    from pytest_tfopt import tfenv
    from pytest_tfopt.backends._archive import unpack

    tf = tfenv.tensorflow()
    directory = tempfile.mkdtemp(prefix="tfopt-bench-savedmodel-")
    _TEMP_DIRS.append(directory)
    unpack(r.artifact.content, directory)
    loaded = tf.saved_model.load(directory)
    _KEEP.append(loaded)  # the signature needs its object alive
    sig = loaded.signatures["serving_default"]
    key, spec = next(iter(sig.structured_input_signature[1].items()))
    out_key = sorted(sig.structured_outputs)[0]
    return sig, key, spec, out_key


def bare_tf(r: Any, x: np.ndarray, threads: int) -> Callable[[], None]:
    from pytest_tfopt import tfenv

    tf = tfenv.tensorflow()
    sig, key, spec, _ = _saved_model_signature(r)
    tensor = tf.constant(x, dtype=spec.dtype)
    kwargs = {key: tensor}

    def invoke() -> None:
        sig(**kwargs)

    return invoke


def bare_xla(r: Any, x: np.ndarray, threads: int) -> Callable[[], None]:
    from pytest_tfopt import tfenv

    tf = tfenv.tensorflow()
    sig, key, spec, out_key = _saved_model_signature(r)
    tensor = tf.constant(x, dtype=spec.dtype)
    fn = tf.function(lambda t: sig(**{key: t})[out_key], jit_compile=True).get_concrete_function(tensor)
    fn(tensor)  # compile now, not in the warm-up
    return lambda: fn(tensor)


def bare_openvino(r: Any, x: np.ndarray, threads: int) -> Callable[[], None]:
    import openvino as ov

    info = r.runner.info
    core = ov.Core()
    model = _openvino_model(core, r.artifact.content)
    shape = model.inputs[0].get_partial_shape()
    if info.get("batch") == "dynamic" and shape.rank.is_static and shape[0].is_static:
        # the runner compiles the graph with a dynamic batch axis: compile the same graph
        model.reshape({model.inputs[0]: [-1] + [d.get_length() if d.is_static else -1 for d in list(shape)[1:]]})
    config = {  # what the runner compiled with, as it records it in runner.info
        "INFERENCE_PRECISION_HINT": str(info.get("inference_precision", "f32")),
        "INFERENCE_NUM_THREADS": int(info.get("threads", threads)),
        "PERFORMANCE_HINT": str(info.get("performance_hint", "LATENCY")),
    }
    compiled = core.compile_model(model, str(info.get("device") or "CPU"), config)
    request = compiled.create_infer_request()
    data = np.ascontiguousarray(x.astype(compiled.input(0).get_element_type().to_dtype()))
    _KEEP.append((compiled, request, data))
    request.set_input_tensor(ov.Tensor(data))
    return request.infer


def _openvino_model(core: Any, content: bytes) -> Any:
    """The IR (``.xml`` + ``.bin``) in the artifact zip, read from an unpacked copy."""
    import io
    import zipfile

    from pytest_tfopt.backends._archive import unpack

    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        xmls = sorted(n for n in zf.namelist() if n.endswith(".xml"))
    if not xmls:
        raise RuntimeError("the openvino artifact holds no .xml IR")
    directory = tempfile.mkdtemp(prefix="tfopt-bench-ov-")
    _TEMP_DIRS.append(directory)
    unpack(content, directory)
    return core.read_model(os.path.join(directory, xmls[0]))


BARE: dict[str, Callable[[Any, np.ndarray, int], Callable[[], None]]] = {
    "tflite": bare_tflite,
    "onnxruntime": bare_onnxruntime,
    "tf": bare_tf,
    "xla": bare_xla,
    "openvino": bare_openvino,
}
_TEMP_DIRS: list[str] = []
_KEEP: list[Any] = []


def timed_ns(invoke: Callable[[], object], s: Any) -> list[int]:
    """The plugin's own sampling loop (``measure.latency.sample_ns``), so both sides are timed alike."""
    from pytest_tfopt.measure.latency import sample_ns

    return sample_ns(invoke, s)


# ---- one row ----------------------------------------------------------------------------------
def interleaved(r: Any, bare: Callable[[], None] | None, settings: Any, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds of plugin and bare batch-1 latency, order alternating; ms."""
    out: dict[str, list[float]] = {"p50": [], "p95": [], "bare_p50": [], "bare_p95": []}

    def plugin() -> None:
        s = r.latency(batch_size=1, settings=settings)  # settings given: measured again, not memoized
        out["p50"].append(s.p50_ms)
        out["p95"].append(s.p95_ms)

    def bare_side() -> None:
        ms = np.asarray(timed_ns(bare, settings), dtype=np.float64) / 1e6
        p50, p95 = np.percentile(ms, [50, 95])
        out["bare_p50"].append(float(p50))
        out["bare_p95"].append(float(p95))

    steps = (plugin, bare_side) if bare is not None else (plugin,)
    for i in range(rounds):
        for step in (steps if i % 2 == 0 else steps[::-1]):
            step()
    return out


def accuracy_cell(model: str, r: Any, reference: Any) -> str:
    if model == "digits":
        return f"{r.evaluate():.3f}"
    if reference is None:
        return "-"
    if reference is r:
        return "ref"
    agree = float(np.mean(np.argmax(r.predictions(), -1) == np.argmax(reference.predictions(), -1)))
    return f"agr {agree:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pytest_tfopt import tfenv

    threads = tfenv.default_threads() if args.threads.strip() == "auto" else int(args.threads)
    tfenv.configure(tfenv.TfSettings(threads=threads))  # before TensorFlow is imported: tf/xla use N threads too
    from pytest_tfopt.backends import BUILTINS, default_registry
    from pytest_tfopt.errors import BackendUnavailable
    from pytest_tfopt.measure.latency import LatencySettings

    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 30.0)
    settings = (LatencySettings(warmup_runs=5, min_time_s=0.1, min_runs=20) if args.quick
                else LatencySettings())
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="tfopt-bench-backends-")
    models = csv(args.models)
    variants = csv(args.variants)
    registry = default_registry()
    wanted = csv(args.backends) or registry.names()
    for name in wanted:
        registry.get(name)  # unknown names fail now, with the valid ones
    print(f"bench_backends: {c.machine_line()}")
    print(f"threads {threads}; {args.rounds} interleaved rounds x {settings.min_time_s} s per side; "
          f"cache {cache_dir}{' (--quick)' if args.quick else ''}")

    backends = []
    for name in wanted:
        reason = registry.get(name).unavailable_reason()
        if reason:
            print(f"  skip backend {name}: {reason}")
        else:
            backends.append(name)
    extra = sorted(set(registry.names()) - set(BUILTINS))
    if extra:
        print(f"  third-party backends registered: {', '.join(extra)}")
    print(f"backends: {', '.join(backends) or 'none'}\n", flush=True)

    rows: list[list[str]] = []
    verdicts: list[bool] = []
    refused: set[tuple[str, str]] = set()
    failures: list[str] = []
    for model in models:
        wb = workbench(model, cache_dir, threads, settings, args.quick)
        if wb is None:
            print(f"  skip model {model}: {MOBILENET_MODEL.relative_to(c.ROOT)} is missing "
                  "(run python models/train_mobilenet_v2.py)")
            continue
        x1 = np.resize(wb.eval_dataset.x, (1, *wb.eval_dataset.x.shape[1:])).astype(np.float32)
        for backend in backends:
            be = wb.backend(backend)
            reference = None
            for variant in variants:
                plan = wb.variants.resolve(variant)
                spec, recipe = plan.precision
                params = (plan.precision_params() if hasattr(plan, "precision_params")
                          else {**recipe.params, **dict(spec.params)})
                reason = be.unsupported_reason(recipe.name, params)  # what Workbench.build checks first
                label = f"{model} {backend} {variant}"
                if not reason:
                    try:
                        if model != "digits" and reference is None and variant != "fp32":
                            reference = wb.runnable("fp32", backend)  # what agreement compares with
                        built0, reused0 = wb.cache.stats.build_seconds, wb.cache.stats.reused
                        r = wb.runnable(variant, backend)
                        build = ("cached" if wb.cache.stats.reused > reused0
                                 else f"{wb.cache.stats.build_seconds - built0:.1f}")
                        if variant == "fp32":
                            reference = r
                    except BackendUnavailable as exc:
                        reason = str(exc)
                    except Exception as exc:  # a conversion that fails is a row of its own, not the end of the run
                        failures.append(f"{label}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
                        print(f"  FAILED {failures[-1]}", flush=True)
                        continue
                if reason:
                    if (backend, variant) not in refused:
                        refused.add((backend, variant))
                        print(f"  skip {backend} {variant}: {reason.strip().splitlines()[0][:200]}", flush=True)
                    continue
                row_threads = int(r.info.get("threads", threads))
                make_bare = BARE.get(backend)
                try:
                    bare = make_bare(r, x1, row_threads) if make_bare else None
                except Exception as exc:
                    failures.append(f"{label} bare side: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
                    print(f"  FAILED {failures[-1]}", flush=True)
                    bare = None
                top1 = accuracy_cell(model, r, reference)
                if quiet_wait > 0:
                    c.wait_for_quiet(quiet_wait)
                others = c.OthersLoad()
                others.start()
                m = interleaved(r, bare, settings, args.rounds)
                thr = r.latency(batch_size=THROUGHPUT_BATCH, settings=settings).throughput
                others.stop()
                if bare is not None:
                    ratios = [a / b for a, b in zip(m["p50"], m["bare_p50"], strict=True)]
                    paired = c.median(ratios)
                    ok = paired <= TARGET
                    verdicts.append(ok)
                    ratio_cell, verdict = f"{paired:.3f}", ("ok" if ok else "MISS")
                    per_round = ", ".join(f"{v:.3f}" for v in ratios)
                    detail = (f"bare p50 {c.median(m['bare_p50']):.4f} ms; per-round p50 ratio {per_round}")
                else:
                    ratio_cell, verdict, detail = "-", "n/a", "no bare loop for this backend"
                rows.append([model, backend, variant, top1, f"{c.median(m['p50']):.4f}",
                             f"{c.median(m['p95']):.4f}", f"{thr:,.0f}", ratio_cell, verdict, build,
                             others.text()])
                print(f"  {label} t{row_threads}: p50 {c.median(m['p50']):.4f} ms, {detail}", flush=True)

    print()
    print(c.table(["model", "backend", "variant", "top1/agreement", "p50 ms", "p95 ms",
                   f"thr/s @{THROUGHPUT_BATCH}", "wrapper/bare p50", "verdict", "build s", "others' load"], rows))
    print(f"""
top1/agreement: digits = top-1 accuracy on the test split; mobilenet = argmax agreement with fp32 on the
  same backend (ref = the fp32 row itself).
p50/p95 ms: the plugin's batch-1 invoke-only latency, median over rounds of each round's percentile.
thr/s @{THROUGHPUT_BATCH}: samples/s at the median latency of one batch of {THROUGHPUT_BATCH} (plugin).
wrapper/bare p50: plugin p50 / bare-runtime p50 within each round, median over rounds (paired);
  verdict ok when <= {TARGET:.2f}, MISS above; n/a = no bare loop for that backend.
build s: conversion time (cached = taken from the artifact cache; XLA compilation happens at load, not here).
others' load: cores other processes kept busy during the row (about 1.0 on 2 cores = one core taken).""")
    for line in failures:
        print(f"FAILED {line}")
    met = bool(verdicts) and all(verdicts)
    print(f"TARGET {'MET' if met else 'NOT MET'}: wrapper overhead <= {TARGET - 1:.0%} (paired p50) in "
          f"{sum(verdicts)}/{len(verdicts)} rows")
    for directory in _TEMP_DIRS:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
