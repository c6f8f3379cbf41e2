"""Per-op profiles of broken timing gates, and the breakdown of a broken memory gate. Real runtimes, no mocks.

The int8-slower model is a small Keras CNN with PReLU activations (TOOLCHAIN.md §10): LiteRT's XNNPACK runs int8
PRELU nowhere, so those ops fall back to the builtin kernels and int8 is slower than fp32 on one thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_tfopt import Workbench
from pytest_tfopt.budgets import MaxLatency, MaxMemory, MinSpeedup, MinThroughput
from pytest_tfopt.errors import BackendUnavailable
from pytest_tfopt.explain import Profile, explain_memory, profile_artifact
from pytest_tfopt.report.html import render
from pytest_tfopt.results import result_row

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


def _prelu_cnn():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((48, 48, 3), name="image")
    x = inp
    for i, filters in enumerate((16, 24, 32, 32, 48)):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.PReLU(shared_axes=[1, 2], name=f"prelu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="probs")(x))


@pytest.fixture(scope="module")
def prelu_bench(tmp_path_factory):
    rng = np.random.default_rng(0)
    data = (rng.random((32, 48, 48, 3), dtype=np.float32), rng.integers(0, 10, 32))
    return Workbench(_prelu_cnn(), data, cache_dir=tmp_path_factory.mktemp("prelu-cache"), threads=1)


@pytest.fixture(scope="module")
def slow_int8(prelu_bench):
    """(int8, fp32) of the PReLU CNN on LiteRT and the broken min_speedup(1.0) verdict of int8."""
    model, reference = prelu_bench.runnable("int8"), prelu_bench.reference()
    return model, reference, MinSpeedup(1.0).check(model, reference)


def _tflite_op_names(model) -> set[str]:
    """The output tensor names of every op of a LiteRT model (what a LiteRT profile names ops by)."""
    interp = model.runner.interpreter
    names = {int(d["index"]): d["name"] for d in interp.get_tensor_details()}
    return {names[int(op["outputs"][0])] for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"}


def test_broken_min_speedup_names_the_prelu_ops_that_fell_back(slow_int8):
    model, reference, verdict = slow_int8
    assert verdict.passed is False, verdict.message
    first, *rest = verdict.message.splitlines()
    assert first.startswith("min_speedup(1, reference='fp32') broken: int8 on tflite:")
    text = "\n".join(rest)
    assert text.startswith("per-op profile (LiteRT op by op")
    prelu = next(line for line in rest if line.strip().startswith("PRELU"))
    assert "5 x" in prelu and "[builtin]" in prelu and "5 fell back" in prelu
    conv = next(line for line in rest if line.strip().startswith("CONV_2D"))
    assert "[XNNPACK]" in conv and "fell back" not in conv
    diagnosis = rest[-1]
    assert diagnosis.startswith("  diagnosis: 5 PRELU ops ran on fallback kernels (builtin) in int8, not the fast ones:")
    assert "keep them float" in diagnosis
    # the PReLU ops are most of the difference: int8's PRELU time exceeds fp32's by more than half the gap
    mine, theirs = model.profile(), reference.profile()
    prelu_mine = next(g for g in mine.by_type() if g["type"] == "PRELU")["ms"]
    prelu_theirs = next(g for g in theirs.by_type() if g["type"] == "PRELU")["ms"]
    assert prelu_mine - prelu_theirs > 0.5 * (mine.sum_ms - theirs.sum_ms)
    assert "inserted quantize/dequantize ops: 2" in text  # QUANTIZE in, DEQUANTIZE out


def test_litert_profile_names_real_ops_and_accounts_for_the_whole_model(slow_int8):
    model, reference, _ = slow_int8
    for m in (model, reference):
        prof = m.profile()
        assert {o.name for o in prof.ops} == _tflite_op_names(m)
        assert all(o.ms > 0 for o in prof.ops)
        assert 0.5 < prof.sum_ms / prof.model_ms < 2.0, prof.render()  # the method's overhead, documented
    assert all(o.kernel == "XNNPACK" for o in reference.profile().ops if o.type == "CONV_2D")


def test_failing_gates_on_the_shipped_model_carry_profiles_and_passing_ones_do_not(bench):
    model, reference = bench.runnable("int8"), bench.reference()
    model.begin_test("holds")
    held = MinSpeedup(0.01).check(model, reference)
    assert held.passed is True and "\n" not in held.message
    assert "profile" not in model.measurements and not model._profiles  # a gate that holds costs no profile
    broken = MaxLatency(1e-6).check(model, reference)
    assert broken.passed is False
    lines = broken.message.splitlines()
    assert lines[1].startswith("per-op profile") and any(ln.strip().startswith("CONV_2D") for ln in lines)
    assert "fp32" in lines[2] and "int8" in lines[2]
    assert MinThroughput(1e9).check(model, reference).message.count("per-op profile") == 1
    row = result_row("t", model, reference, [broken], "failed")
    assert row["profile"]["variant"] == "int8" and row["reference_profile"]["variant"] == "fp32"
    assert {o["name"] for o in row["profile"]["ops"]} == _tflite_op_names(model)
    json.dumps(row, default=str)
    page = render({"rows": [row]})
    assert "<details><summary>per-op profile:" in page and "CONV_2D" in page


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_profiles_give_per_node_rows(bench, backend):
    pytest.importorskip("onnxruntime" if backend == "onnxruntime" else "openvino")
    prof = bench.runnable("int8", backend).profile()
    assert isinstance(prof, Profile) and prof.backend == backend and prof.runs >= 10
    assert len(prof.ops) >= 3 and prof.sum_ms > 0 and prof.model_ms > 0
    assert all(o.name and o.type and o.kernel for o in prof.ops)
    types = {o.type for o in prof.ops}
    assert types & {"Conv", "QLinearConv", "Convolution", "ConvInteger"}, types
    if backend == "onnxruntime":
        assert any(o.quant for o in prof.ops), types  # the int8 graph's quantize/dequantize nodes are named
    else:  # the CPU plugin may fuse every FakeQuantize into its consumer: then the int8 kernels show it
        kernels = {o.kernel for o in prof.ops}
        assert any(o.quant or "Quantized" in o.type for o in prof.ops) or any(
            k.lower().endswith(("_i8", "_u8")) for k in kernels), (types, kernels)
    if backend == "openvino":
        assert all(o.fast is not None for o in prof.ops)  # exec_type says reference (ref_*) or not
    text = prof.render()
    assert text.startswith(f"int8 on {backend}: ")


@pytest.mark.parametrize("backend", ["tf", "xla"])
def test_tensorflow_profile_names_the_graph_ops(bench, backend):
    prof = bench.runnable("fp32", backend).profile()
    assert prof.backend == backend and prof.ops and prof.model_ms > 0
    types = {o.type for o in prof.ops}
    if backend == "tf":  # oneDNN's fused kernels of the Keras layers, named by graph node
        assert {"FusedConv2D", "FusedMatMul", "MaxPool"} <= types, types
        assert {"digits_cnn/conv1/Relu", "digits_cnn/pool/MaxPool"} <= {o.name for o in prof.ops}
    else:  # the XLA executable's kernels
        assert "Conv2D" in types and all(o.kernel == "XLA" for o in prof.ops), types


def test_backend_without_profiler_says_so_in_one_line():
    x = np.zeros((1, 8, 8, 1), np.float32)
    with pytest.raises(BackendUnavailable, match=r"no per-op profile for backend 'tensorrt': profiles exist for "):
        profile_artifact("tensorrt", b"", 1, x, "fp32")


def test_broken_memory_gate_breaks_the_peak_down_and_it_sums(bench):
    model, reference = bench.runnable("int8"), bench.reference()
    verdict = MaxMemory(0.001).check(model, reference)
    assert verdict.passed is False
    lines = verdict.message.splitlines()
    assert lines[1].startswith("memory breakdown of ") and "weights" in lines[1] and "arena" in lines[1]
    assert lines[2].startswith("  in time: loading ")
    stats = model.memory()
    breakdown = explain_memory(stats)
    assert abs(sum(p.mb for p in breakdown.parts) - stats.peak_mb) <= 0.01 * stats.peak_mb
    assert breakdown.parts[0].source == "the runtime's constant tensors"
    assert "\n" not in MaxMemory(10_000).check(model, reference).message
    row = result_row("t", model, reference, [verdict], "failed")
    assert abs(sum(p["mb"] for p in row["memory_breakdown"]["parts"]) - row["memory_peak_mb"]) <= 0.01 * stats.peak_mb


PROFILE_SUITE = """
def test_profile(optimized_model):
    prof = optimized_model.profile()
    assert prof.variant == "int8" and prof.ops
    assert any(o.type == "CONV_2D" for o in prof.ops)
    print(prof.render(3))
"""


def test_bench_explain_prints_profile_size_and_memory(bench, tmp_path, capsys):
    from pytest_tfopt.cli import main

    root = Path(__file__).resolve().parent.parent
    code = main(["bench", str(root / "models/digits_cnn.h5"), "--data", str(root / "fixtures/digits.npz"), "--variant", "fp32,int8",
                 "--cache-dir", str(bench.cache.root), "--threads", "1", "--latency-time", "0.05", "--explain",
                 "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "== int8 on tflite ==" in out and "per-op profile (LiteRT op by op" in out
    assert "size of int8 on tflite" in out and "memory breakdown of " in out
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert all(r["profile"]["ops"] and r["memory_breakdown"]["parts"] for r in rows)


def test_optimized_model_profile_from_a_test(suite):
    result = suite(PROFILE_SUITE, "--tfopt-variants=int8", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*int8 on tflite: * ops, * ms summed over ops, * ms whole model (LiteRT op by op*"])


ON_DEMAND_SUITE = """
import pytest

@pytest.mark.max_size_kb(1000)
def test_small(optimized_model):
    pass
"""


def test_tfopt_profile_puts_every_rows_profile_in_the_report_and_not_without_it(suite, tmp_path):
    """``--tfopt-profile``: passing gates are profiled too (variant and fp32 reference, side by side); without
    the option a passing row carries no profile (profiling costs time and is never done unasked)."""
    for flag, report in (("--tfopt-profile", tmp_path / "with.json"), (None, tmp_path / "without.json")):
        result = suite(ON_DEMAND_SUITE, "--tfopt-variants=int8", f"--tfopt-report={report}", *([flag] if flag else []))
        result.assert_outcomes(passed=1)
        (row,) = json.loads(report.read_text())["rows"]
        if flag:
            assert row["profile"]["ops"] and row["reference_profile"]["ops"]
            assert {o["type"] for o in row["profile"]["ops"]} >= {"CONV_2D", "QUANTIZE"}
        else:
            assert row.get("profile") is None and row.get("reference_profile") is None
