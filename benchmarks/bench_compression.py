"""Compression: every variant of the shipped digits CNN next to fp32, and the issue's size targets.

For ``models/digits_cnn.h5`` on ``fixtures/digits.npz`` (450 test samples) it builds each variant
through ``Workbench`` (fresh artifact cache by default, so every variant is built and timed) and
prints one table: top-1 accuracy, drop vs fp32 in points, raw ``.tflite`` size, gzip -9 size,
gzip ratio (fp32 gzip bytes / variant gzip bytes), latency p50/p95 of one invocation at batch 1
(ms, LiteRT, ``--threads``), build time (s: training + conversion, from the cache's own timer).

Targets (checked and printed PASS/MISS):

* ``pruned(sparsity=0.8)+int8``: gzip <= 1/8 of fp32 gzip AND accuracy drop <= 2 points;
* ``clustered(clusters=16)+int8``: gzip <= 1/6 of fp32 gzip AND accuracy drop <= 2 points;
* ``qat``: its accuracy drop <= the drop of plain ``int8`` (printed with the quantization range of
  the first activation: calibrated for int8, learned by tfmot's moving-average quantizer for qat).

A target applies to every measured variant with that chain and that sparsity / cluster count, so
``--variants "fp32,int8,pruned(sparsity=0.8,epochs=20)+int8"`` judges the retuned chain too.

Then an *anatomy* of the int8 flatbuffers: how many bytes are constant tensors (weights, biases)
and how many are structure (operators, tensor tables, per-channel scales and zero points, tensor
names, signature, metadata), measured as the gzip size of the same flatbuffer with every constant
buffer overwritten with zeros; and the order-0 entropy of the constants (what a per-symbol coder
such as gzip's Huffman stage cannot beat). Structure floor + entropy is the best case, compared
with the 1/8 and 1/6 budgets: it says whether a target is reachable at all for a model this small.

``--explore`` adds a parameter sweep for the three targets (training epochs, learning rate,
schedule, centroid init, higher sparsity, QAT epochs; pqat/cqat/pcqat with more QAT epochs) with
accuracy, gzip and build time, plus
``int8(per_channel=False)`` (one weight scale per tensor) and, as a measurement that needs a package
change, the gzip size after stripping tensor names and signatures (``flatbuffer_utils.strip_strings``).
``--model models/digits_mlp.h5`` runs the same on the 85,002-parameter MLP.

Run:  python benchmarks/bench_compression.py [--explore] [--quick] [--threads 1]
      [--variants "fp32,int8,pruned(sparsity=0.8)+int8"] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import _common as c
import numpy as np

VARIANTS = [
    "fp32", "dynamic", "float16", "int8", "int16x8",
    "pruned(sparsity=0.8)+int8", "clustered(clusters=16)+int8",
    "qat", "pqat", "cqat", "pcqat",
    "distilled+int8", "lowrank(energy=0.9)+float16", "graphopt+int8",
]

# (stage-1 recipe, key parameter, value, gzip fraction of fp32, max drop in points)
SIZE_TARGETS = [
    ("pruned", "sparsity", 0.8, 8, 2.0),
    ("clustered", "clusters", 16, 6, 2.0),
]

PRUNE_SWEEP = [
    "pruned(sparsity=0.8)+int8",
    "pruned(sparsity=0.8,epochs=5)+int8",
    "pruned(sparsity=0.8,epochs=10)+int8",
    "pruned(sparsity=0.8,epochs=20)+int8",
    "pruned(sparsity=0.8,epochs=5,learning_rate=0.003)+int8",
    "pruned(sparsity=0.8,epochs=10,learning_rate=0.003)+int8",
    "pruned(sparsity=0.8,epochs=10,schedule='constant')+int8",
    "pruned(sparsity=0.8,epochs=20)+int8(per_channel=False)",
    # not the target's sparsity: how far one has to go for 1/8 with gzip
    "pruned(sparsity=0.9,epochs=20)+int8",
    "pruned(sparsity=0.9,epochs=20,learning_rate=0.003)+int8",
    "pruned(sparsity=0.9,epochs=20,learning_rate=0.003)+int8(per_channel=False)",
    "pruned(sparsity=0.93,epochs=20)+int8",
    "pruned(sparsity=0.93,epochs=20,learning_rate=0.003)+int8",
    "pruned(sparsity=0.95,epochs=20)+int8",
]
CLUSTER_SWEEP = [
    "clustered(clusters=16)+int8",
    "clustered(clusters=16,epochs=3)+int8",
    "clustered(clusters=16,epochs=3,learning_rate=0.001)+int8",
    "clustered(clusters=16,init='linear')+int8",
    "clustered(clusters=16,init='density_based')+int8",
    "clustered(clusters=16)+int8(per_channel=False)",
    "clustered(clusters=16,init='linear')+int8(per_channel=False)",
    "clustered(clusters=16,init='linear',epochs=3,learning_rate=0.001)+int8(per_channel=False)",
    # not the target's cluster count: what 1/6 would take
    "clustered(clusters=8,init='linear')+int8(per_channel=False)",
    "clustered(clusters=4,init='linear')+int8(per_channel=False)",
]
QAT_SWEEP = [
    "qat", "qat(epochs=3)", "qat(epochs=10)", "qat(epochs=10,learning_rate=0.001)", "qat(batch_size=8,epochs=3)",
    "qat(learning_rate=1e-05)", "qat(epochs=20,learning_rate=1e-05)",
    # the collaborative variants fine-tune QAT the same way (qat_epochs=1 by default)
    "pqat(qat_epochs=10)", "cqat(qat_epochs=10)", "pcqat(qat_epochs=10)",
]
QUICK_SWEEP = [
    "pruned(sparsity=0.8,epochs=20)+int8", "pruned(sparsity=0.93,epochs=20)+int8",
    "clustered(clusters=16,init='linear')+int8", "clustered(clusters=16,init='linear')+int8(per_channel=False)",
]

NOTE = """\
Note on latency: pruning and clustering only change the *values* of the weights; the .tflite still
holds dense int8 tensors of the same shapes and runs the same dense kernels. Neither the XNNPACK
delegate (as LiteRT configures it by default) nor LiteRT's builtin kernels use a sparse or
clustered kernel for these ops, so on this CPU latency does not improve (compare the p50 of
pruned/clustered+int8 with int8: the same within noise) and the raw .tflite size is identical.
Only the gzip (download) size shrinks, because runs of zeros and few distinct values compress."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default=None, help="artifact cache (default: a fresh temp dir, so all is built)")
    p.add_argument("--threads", type=int, default=1, help="LiteRT num_threads for latency and evaluation (default 1)")
    p.add_argument("--variants", default=None,
                   help="comma list replacing the default variants (commas inside parentheses are kept); "
                        "fp32 is always added")
    p.add_argument("--quick", action="store_true",
                   help="short latency measurement (0.1 s, 20 runs) and, with --explore, a 4-point sweep")
    p.add_argument("--explore", action="store_true",
                   help="also sweep training parameters for the pruning/clustering/QAT targets")
    p.add_argument("--quiet-wait", type=float, default=10.0,
                   help="before each latency measurement, wait up to this many seconds for other processes "
                        "to leave the cores idle; 0 = don't wait (default 10)")
    p.add_argument("--verbose", action="store_true", help="print the build log (stages, epochs)")
    p.add_argument("--model", default=str(c.DIGITS_MODEL),
                   help="Keras model for 8x8 digits (default models/digits_cnn.h5; models/digits_mlp.h5 is the "
                        "85,002-parameter model on which the .tflite structure no longer dominates gzip sizes)")
    return p.parse_args(argv)


# ---- measuring ----------------------------------------------------------------------------------
@dataclass
class Row:
    variant: str
    plan: Any
    accuracy: float = math.nan
    size: int = 0
    gzip: int = 0
    p50: float = math.nan
    p95: float = math.nan
    build_s: float | None = None
    reused: bool = False
    delegate: str = "?"
    load_build: float | None = None   # cores other processes kept busy while this row built
    load_latency: float | None = None  # ... and while its latency was measured
    content: bytes = field(default=b"", repr=False)
    error: str | None = None

    def key_param(self, recipe: str, key: str) -> Any:
        spec, rec = self.plan.stages[0]
        if spec.name != recipe:
            return None
        return {**rec.params, **dict(spec.params)}.get(key)

    @property
    def chain(self) -> tuple[str, ...]:
        return tuple(spec.name for spec, _ in self.plan.stages)


def measure(wb: Any, variant: str, latency: bool, quiet_wait: float, settings: Any) -> Row:
    row = Row(variant, wb.variants.resolve(variant))
    stats = wb.cache.stats
    built0, secs0 = stats.built, stats.build_seconds
    meter = c.OthersLoad()
    try:
        meter.start()
        wb.build(variant)
        meter.stop()
        row.load_build = meter.cores
        row.reused = stats.built == built0
        row.build_s = None if row.reused else stats.build_seconds - secs0
        r = wb.runnable(variant)
        row.accuracy = r.evaluate()
        row.size, row.gzip, row.content = r.size_bytes, r.gzip_size_bytes, r.artifact.content
        row.delegate = r.info.get("delegate", "?")
        if latency:
            if quiet_wait > 0:
                c.wait_for_quiet(quiet_wait)
            meter = c.OthersLoad()
            meter.start()
            s = r.latency(batch_size=1, settings=settings)
            meter.stop()
            row.p50, row.p95, row.load_latency = s.p50_ms, s.p95_ms, meter.cores
    except Exception as exc:  # report and go on: one broken variant should not hide the others
        row.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
    return row


def _load(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _kb(n: int) -> str:
    return f"{n / 1024:.2f}"


def drop_pts(row: Row, ref: Row) -> float:
    return (ref.accuracy - row.accuracy) * 100


def main_table(rows: list[Row], ref: Row) -> str:
    out = []
    for r in rows:
        if r.error:
            out.append([r.variant, "ERROR", r.error, *[""] * 9])
            continue
        build = "cached" if r.reused else f"{r.build_s:.1f}"
        out.append([
            r.variant, f"{r.accuracy:.4f}", f"{drop_pts(r, ref):+.2f}", _kb(r.size), _kb(r.gzip),
            f"{ref.gzip / r.gzip:.2f}x", "-" if math.isnan(r.p50) else f"{r.p50:.4f}",
            "-" if math.isnan(r.p95) else f"{r.p95:.4f}", build, r.delegate,
            f"{_load(None if r.reused else r.load_build)}/{_load(r.load_latency)}",
        ])
    return c.table(["variant", "top1", "drop pts", "size KB", "gzip KB", "gzip ratio", "p50 ms", "p95 ms",
                    "build s", "delegate", "others' load b/l"], out)


# ---- targets ------------------------------------------------------------------------------------
def judge_size(row: Row, ref: Row, fraction: int, max_drop: float) -> tuple[bool, str]:
    budget = ref.gzip / fraction
    size_ok = row.gzip <= budget
    d = drop_pts(row, ref)
    drop_ok = d <= max_drop + 1e-9
    text = (f"gzip {row.gzip:,} B = 1/{ref.gzip / row.gzip:.2f} of fp32 {ref.gzip:,} B "
            f"(need <= 1/{fraction} = {budget:,.0f} B) {'ok' if size_ok else 'MISS'}; "
            f"drop {d:.2f} pts (need <= {max_drop:g}) {'ok' if drop_ok else 'MISS'}")
    return size_ok and drop_ok, text


def targets(rows: list[Row], ref: Row) -> list[tuple[str, str | None, str]]:
    """(target, PASS/MISS/None when not measured, details) per target and matching variant."""
    ok_rows = [r for r in rows if not r.error]
    out: list[tuple[str, str | None, str]] = []
    for recipe, key, value, fraction, max_drop in SIZE_TARGETS:
        name = f"{recipe}({key}={value})+int8: gzip <= 1/{fraction} of fp32 and drop <= {max_drop:g} pts"
        matches = [r for r in ok_rows if r.chain == (recipe, "int8") and r.key_param(recipe, key) == value]
        if not matches:
            out.append((name, None, "not measured (add it to --variants)"))
        for r in matches:
            ok, text = judge_size(r, ref, fraction, max_drop)
            out.append((name, "PASS" if ok else "MISS", f"{r.variant}: {text}"))
    name = "qat: drop <= int8 drop"
    int8 = next((r for r in ok_rows if r.plan.id == "int8"), None)
    qats = [r for r in ok_rows if r.chain == ("qat", "int8")]
    if int8 is None or not qats:
        out.append((name, None, "not measured (needs int8 and qat in --variants)"))
    for r in qats:
        dq, di = drop_pts(r, ref), drop_pts(int8, ref)
        ok = dq <= di + 1e-9
        ranges = f"; first activation range (255 x scale): int8 {first_range(int8.content)}, {r.variant} " \
                 f"{first_range(r.content)}"
        out.append((name, "PASS" if ok else "MISS", f"{r.variant}: drop {dq:.2f} pts vs int8 {di:.2f} pts{ranges}"))
    return out


def first_range(content: bytes) -> str:
    """Quantization range (255 x scale) of the first int8 activation a compute op writes.

    int8 gets it from calibration; a QAT model from tfmot's moving-average quantizer, which starts
    at [-6, 6] (range 12) and moves with EMA decay 0.999 per training step: with few steps it stays wide.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(content), 0)
    sub = model.Subgraphs(0)
    skip = {schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.DEQUANTIZE}
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) in skip:
            continue
        t = sub.Tensors(op.Outputs(0))
        q = t.Quantization()
        if t.Type() == schema.TensorType.INT8 and q is not None and q.ScaleLength():
            return f"{255 * q.Scale(0):.2f}"
    return "-"


# ---- flatbuffer anatomy -------------------------------------------------------------------------
def _gz(data: bytes | bytearray) -> int:
    return len(gzip.compress(bytes(data), compresslevel=9, mtime=0))


def _entropy_bytes(values: np.ndarray) -> float:
    """Order-0 entropy of ``values`` (each element one symbol), in bytes for the whole array."""
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum() / 8)


def strip_names(content: bytes) -> bytes:
    """The flatbuffer without tensor names, subgraph name, description and signatures (still runs)."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(content))
    fu.strip_strings(model)
    return bytes(fu.convert_object_to_bytearray(model))


@dataclass
class Anatomy:
    raw: int
    gzip: int
    const_bytes: int          # constant tensors' buffers (weights, biases, shape constants)
    weights: int              # elements of int8 / float weight tensors (kernels)
    structure_raw: int        # raw - const_bytes
    gzip_zeroed: int          # gzip with every constant buffer zeroed: the structure floor
    gzip_zeroed_stripped: int  # ... and tensor names / signatures stripped
    gzip_constants: int       # gzip of the constant buffers alone, concatenated: the weights' download cost
    entropy: float            # order-0 byte entropy of the constant buffers, bytes
    zeros: float              # fraction of exact zeros in the kernels


def anatomy(content: bytes) -> Anatomy:
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(content)
    model = schema.Model.GetRootAs(data, 0)
    sub = model.Subgraphs(0)
    dtypes = {0: np.float32, 1: np.float16, 2: np.int32, 7: np.int16, 9: np.int8, 4: np.int64}
    views, entropy, weights, zeros = [], 0.0, 0, 0
    seen = set()
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        b = t.Buffer()
        if b in seen or b >= model.BuffersLength() or not model.Buffers(b).DataLength():
            continue
        seen.add(b)
        raw = model.Buffers(b).DataAsNumpy()  # a writable view into ``data``
        views.append(raw)
        dtype = dtypes.get(t.Type(), np.uint8)
        vals = raw.view(dtype) if raw.size % np.dtype(dtype).itemsize == 0 else raw
        entropy += _entropy_bytes(raw)  # byte symbols, as gzip sees them (int8 weights: one byte each)
        if t.ShapeLength() >= 2 and dtype in (np.int8, np.float32, np.float16):  # kernels
            weights += vals.size
            zeros += int(np.count_nonzero(vals == 0))
    const = sum(v.size for v in views)
    gzip_constants = _gz(b"".join(v.tobytes() for v in views))
    for v in views:
        v[:] = 0
    zeroed = bytes(data)
    return Anatomy(len(content), _gz(content), const, weights, len(content) - const, _gz(zeroed),
                   _gz(strip_names(zeroed)), gzip_constants, entropy, zeros / max(1, weights))


def anatomy_report(rows: list[Row], ref: Row) -> str:
    picks = [r for r in rows if not r.error and (r.plan.id in ("fp32", "int8") or any(
        r.chain == (rec, "int8") and r.key_param(rec, key) == val for rec, key, val, _, _ in SIZE_TARGETS))]
    if not picks:
        return ""
    budgets = {"pruned": 8, "clustered": 6}
    lines, table_rows, verdicts = [], [], []
    a: Anatomy | None = None
    fp32_constants = anatomy(ref.content).gzip_constants
    for r in picks:
        an = anatomy(r.content)
        frac = budgets.get(r.chain[0])
        budget = f"{ref.gzip / frac:,.0f} (1/{frac})" if frac else "-"
        best = an.gzip_zeroed + an.entropy
        if frac:
            best_stripped = an.gzip_zeroed_stripped + an.entropy
            reach = "within" if best_stripped <= ref.gzip / frac else "OVER"
            verdicts.append(f"{r.variant}: best case {best:,.0f} B ({best_stripped:,.0f} B with names stripped) vs "
                            f"1/{frac} = {ref.gzip / frac:,.0f} B: {reach} budget even for an ideal order-0 coder "
                            f"of these weights (gzip got {an.gzip:,} B)")
        table_rows.append([r.variant, f"{an.raw:,}", f"{an.const_bytes:,}", f"{an.structure_raw:,}", f"{an.gzip:,}",
                           f"{an.gzip_constants:,} (1/{fp32_constants / an.gzip_constants:.1f})",
                           f"{an.gzip_zeroed:,}", f"{an.gzip_zeroed_stripped:,}", f"{an.entropy:,.0f}",
                           f"{an.zeros:.1%}", f"{best:,.0f}", budget])
        if r.plan.id == "int8":
            a = an
    lines.append(c.table(["variant", "raw B", "constants B", "structure B", "gzip B", "gzip constants B",
                          "gzip zeroed B", "+names stripped B", "entropy B", "zero weights", "best case B",
                          "target B"], table_rows))
    lines.append("(constants = buffers of constant tensors: kernels, biases, shape constants; structure = the rest;\n"
                 " gzip constants = the constant buffers alone, concatenated and gzipped (1/x: vs fp32's);\n"
                 " gzip zeroed = gzip of the same file with every constant buffer overwritten with zeros, i.e.\n"
                 " what the structure costs; entropy = order-0 entropy of the constant bytes, the least a coder of\n"
                 " independent byte symbols (gzip's Huffman stage) needs for them; best case = gzip zeroed + entropy)")
    if a is not None:
        eighth, sixth = ref.gzip / 8, ref.gzip / 6
        n = a.weights
        left8, left6 = eighth - a.gzip_zeroed, sixth - a.gzip_zeroed
        h80 = -(0.8 * math.log2(0.8) + 0.2 * math.log2(0.2))
        h16 = math.log2(16)
        lines.append(
            f"\nint8 structure floor: {a.gzip_zeroed:,} B gzip with all {a.const_bytes:,} constant bytes zeroed "
            f"({a.gzip_zeroed_stripped:,} B with names stripped) = {a.gzip_zeroed / eighth:.0%} of the 1/8 budget "
            f"({eighth:,.0f} B) and {a.gzip_zeroed / sixth:.0%} of the 1/6 budget ({sixth:,.0f} B).\n"
            f"That leaves {left8:,.0f} B for {n:,} int8 weights (+biases) under 1/8 = {8 * left8 / n:.2f} bits/weight, "
            f"and {left6:,.0f} B under 1/6 = {8 * left6 / n:.2f} bits/weight.\n"
            f"At 80% sparsity the zero/non-zero mask alone carries {h80:.2f} bits/weight ({n * h80 / 8:,.0f} B) before "
            f"any non-zero value is coded; 16 equiprobable clusters carry {h16:.0f} bits/weight ({n * h16 / 8:,.0f} B) "
            f"(less when clusters are unevenly used, see entropy above).")
    lines.extend(verdicts)
    return "\n".join(lines)


# ---- exploration --------------------------------------------------------------------------------
def explore(wb: Any, ref: Row, int8: Row | None, sweep: list[str]) -> tuple[str, list[Row]]:
    rows = []
    for v in sweep:
        r = measure(wb, v, latency=False, quiet_wait=0, settings=None)
        rows.append(r)
        tag = "cached" if r.reused else (f"{r.build_s:.1f} s" if r.build_s is not None else "-")
        print(f"  explored {v}: {'ERROR ' + r.error if r.error else f'top1 {r.accuracy:.4f}, gzip {r.gzip:,} B'} "
              f"({tag})", flush=True)
    out = []
    for r in rows:
        if r.error:
            out.append([r.variant, "ERROR", r.error, *[""] * 7])
            continue
        stripped = _gz(strip_names(r.content))
        frac = 8 if r.chain[0] == "pruned" else 6 if r.chain[0] == "clustered" else None
        if frac:
            size_ok = r.gzip <= ref.gzip / frac
            drop_ok = drop_pts(r, ref) <= 2.0 + 1e-9
            verdict = f"size {'ok' if size_ok else 'MISS'} (1/{frac}), drop {'ok' if drop_ok else 'MISS'}"
            if r.key_param("pruned", "sparsity") not in (None, 0.8) or \
                    r.key_param("clustered", "clusters") not in (None, 16):
                verdict += " [not the target's variant]"
        elif r.chain[0] in ("qat", "pqat", "cqat", "pcqat") and int8 is not None:
            verdict = "drop ok (<= int8)" if drop_pts(r, ref) <= drop_pts(int8, ref) + 1e-9 else "drop MISS (> int8)"
            if r.chain[0] != "qat":
                verdict += " [not the target's variant]"
        else:
            verdict = "-"
        build = "cached" if r.reused else f"{r.build_s:.1f}"
        out.append([r.variant, f"{r.accuracy:.4f}", f"{drop_pts(r, ref):+.2f}", f"{r.gzip:,}",
                    f"1/{ref.gzip / r.gzip:.2f}", f"{stripped:,}", f"1/{ref.gzip / stripped:.2f}", build,
                    _load(None if r.reused else r.load_build), verdict])
    text = c.table(["variant", "top1", "drop pts", "gzip B", "of fp32", "gzip stripped B", "of fp32",
                    "build s", "others' load", "verdict (target's conditions)"], out)
    return text, rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pytest_tfopt import Workbench, tfenv
    from pytest_tfopt.measure.latency import LatencySettings
    from pytest_tfopt.variants import default_registry, split_variants

    registry = default_registry()
    settings = (LatencySettings(warmup_runs=5, min_time_s=0.1, min_runs=20) if args.quick else LatencySettings())
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="tfopt-bench-compression-")
    variants = split_variants(args.variants) if args.variants else list(VARIANTS)
    if "fp32" not in variants:
        variants.insert(0, "fp32")
    from pytest_tfopt.errors import UsageError

    for v in variants:
        try:
            registry.resolve(v)
        except UsageError as exc:
            raise SystemExit(f"--variants: {exc}") from None

    log = print if args.verbose else (lambda message: None)
    wb = Workbench(args.model, str(c.DIGITS_DATA), cache_dir=cache_dir, threads=args.threads,
                   variants=registry, latency=settings, log=log)
    print(f"bench_compression: {c.machine_line()}")
    print(f"model {os.path.basename(args.model)}, {len(wb.eval_dataset)} test samples; LiteRT threads {args.threads}; "
          f"cache {cache_dir}")
    # warm-up outside the timers: TensorFlow, tfmot, tf_keras imports, one conversion
    t0 = time.perf_counter()
    tfenv.tensorflow()
    tfenv.tfmot()
    import tf_keras  # noqa: F401

    wb.source.converter().convert()
    print(f"warm-up (imports, one conversion) {time.perf_counter() - t0:.1f} s, not counted in build times\n",
          flush=True)

    rows = []
    for v in variants:
        r = measure(wb, v, latency=True, quiet_wait=args.quiet_wait, settings=settings)
        rows.append(r)
        done = "ERROR " + r.error if r.error else f"top1 {r.accuracy:.4f}, gzip {r.gzip:,} B, p50 {r.p50:.4f} ms"
        print(f"  {v}: {done}", flush=True)
    ref = next(r for r in rows if r.plan.id == "fp32")
    if ref.error:
        print(f"fp32 failed ({ref.error}): nothing to compare against")
        return 1

    print()
    print(main_table(rows, ref))
    print("(drop pts: fp32 top1 minus variant top1, in points; gzip ratio: fp32 gzip / variant gzip;\n"
          " build s: training + conversion of this variant, single run, TensorFlow's default thread pools;\n"
          " others' load b/l: cores other processes kept busy during the build / the latency measurement,\n"
          " about 1.0 on 2 cores = one core taken the whole time; 1 KB = 1024 B)")

    print("\nTargets")
    for name, verdict, detail in targets(rows, ref):
        print(f"  {verdict or 'SKIP'}  {name}\n        {detail}")

    report = anatomy_report(rows, ref)
    if report:
        print("\nWhere the bytes are (int8 flatbuffers)")
        print(report)

    if args.explore:
        int8 = next((r for r in rows if r.plan.id == "int8" and not r.error), None)
        sweep = QUICK_SWEEP if args.quick else [*PRUNE_SWEEP, *CLUSTER_SWEEP, *QAT_SWEEP]
        print(f"\nParameter sweep ({len(sweep)} variants, no latency)", flush=True)
        text, _ = explore(wb, ref, int8, sweep)
        print()
        print(text)
        print("(int8(per_channel=False): one weight scale per tensor; gzip stripped: after\n"
              " flatbuffer_utils.strip_strings (tensor names, signatures), which the package does not do)")

    print()
    print(NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
