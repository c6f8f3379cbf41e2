"""Size explanations: where an artifact's bytes go, and broken size budgets that say so."""

from __future__ import annotations

import io
import zipfile

import pytest

from pytest_tfopt import UsageError
from pytest_tfopt.artifact import Artifact
from pytest_tfopt.budgets import MaxSize, MinCompression
from pytest_tfopt.explain import explain_size
from pytest_tfopt.explain.formats import layer_of, model_prefix

# the shipped digits CNN: conv1 3x3x1x16, conv2 3x3x16x16, dense 144x32, probs 32x10
DENSE_FLOAT32_BYTES = 32 * 144 * 4


@pytest.mark.parametrize("variant", ["fp32", "float16", "dynamic", "int8", "int16x8"])
def test_breakdown_sums_to_the_artifact_size(bench, variant):
    report = explain_size(bench.runnable(variant))
    assert report.account.format == "tflite flatbuffer"
    assert report.total_bytes == bench.runnable(variant).size_bytes
    assert all(n >= 0 for _, n in report.account.overhead), report.account.overhead
    assert report.tensor_bytes + sum(n for _, n in report.account.overhead) == report.total_bytes
    assert sum(layer.nbytes for layer in report.layers()) == report.tensor_bytes
    assert report.to_dict()["total_bytes"] == report.total_bytes


def test_fp32_names_its_float32_weights_and_what_int8_would_save(bench):
    report = explain_size(bench.reference())
    top = report.layers()[0]
    assert top.layer == "dense"
    weights = top.parts[0]
    assert (weights.role, weights.dtype, weights.shape, weights.nbytes) == ("weights", "float32", (32, 144), DENSE_FLOAT32_BYTES)
    assert [g.layer for g in report.layers()[:4]] == ["dense", "conv2", "probs", "conv1"]
    said = report.diagnosis()
    assert said.startswith("28.8 KB of 32.3 KB are float32 weights of 4 layers (dense, conv2, probs, ...)")
    assert "int8 or dynamic would shrink them ~4x" in said
    assert report.int8_estimate() < report.total_bytes * 0.4


def test_float16_weights_would_halve(bench):
    said = explain_size(bench.runnable("float16")).diagnosis()
    assert "are float16 weights of 4 layers (dense, conv2, probs, ...)" in said and "~2x" in said


def test_int8_is_mostly_format_overhead_and_counts_its_scales(bench):
    report = explain_size(bench.runnable("int8"))
    dense = report.layers()[0]
    assert dense.layer == "dense" and dense.parts[0].dtype == "int8" and dense.parts[0].scales == 32  # per channel
    overhead = dict(report.account.overhead)
    assert overhead["quantization parameters"] > 1024 and overhead["tensor names"] > 0
    assert "are format overhead" in report.diagnosis()
    assert not report.weights(("float32", "float16"))


def test_broken_size_budget_explains_and_a_kept_one_does_not(bench):
    model, reference = bench.runnable("float16"), bench.reference()
    broken = MaxSize(8).check(model, reference)
    first, *rest = broken.message.splitlines()
    assert first == "max_size_kb(8) broken: float16 on tflite: 19.0 KB (fp32 32.3 KB) > budget 8 KB"
    assert rest[0].startswith("size of float16 on tflite (tflite flatbuffer): 19.0 KB = tensor data")
    assert rest[1].startswith("  1. dense 9.1 KB (48 %): weights float16 [32, 144] 9.0 KB")
    assert "still over 8.0 KB" in rest[-1]
    kept = MaxSize(40).check(model, reference)
    assert kept.passed and "\n" not in kept.message


def test_broken_compression_ratio_shows_what_caps_it(bench):
    model, reference = bench.runnable("int8"), bench.reference()
    message = MinCompression(10).check(model, reference).message
    assert "the 5.7 KB of overhead alone caps the ratio at 5.6x" in message
    gzipped = MinCompression(10, compressed=True).check(model, reference).message
    assert "gzip -9: 13.2 KB -> " in gzipped and "largest weights dense (int8, 4.5 KB) hold" in gzipped
    assert "caps the ratio" not in gzipped  # a raw-bytes cap says nothing about gzip bytes
    assert "\n" not in MinCompression(2).check(model, reference).message


SIZE_SUITE = """
import pytest

@pytest.mark.tfopt_variants("fp32", "float16")
@pytest.mark.max_size_kb(8)
def test_small(optimized_model):
    pass

@pytest.mark.tfopt_variants("float16")
@pytest.mark.max_size_kb(40)
def test_roomy(optimized_model):
    pass
"""


def test_failing_size_budget_names_the_biggest_weights(suite):
    result = suite(SIZE_SUITE)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*test_small[[]fp32-tflite[]]*",
        "max_size_kb(8) broken: fp32 on tflite: 32.3 KB (fp32 32.3 KB) > budget 8 KB",
        "size of fp32 on tflite (tflite flatbuffer): 32.3 KB = tensor data 29.1 KB (90 %) + overhead 3.2 KB (10 %)",
        "  1. dense 18.1 KB (56 %): weights float32 [[]32, 144[]] 18.0 KB, bias float32 [[]32[]] 128 B",
        "  2. conv2 9.1 KB (28 %): weights float32 [[]16, 3, 3, 16[]] 9.0 KB*",
        "*diagnosis: 28.8 KB of 32.3 KB are float32 weights of 4 layers (dense, conv2, probs, ...): int8 or dynamic "
        "would shrink them ~4x*",
        "*test_small[[]float16-tflite[]]*",
        "max_size_kb(8) broken: float16 on tflite: 19.0 KB*",
        "  1. dense 9.1 KB (48 %): weights float16 [[]32, 144[]] 9.0 KB*",
        "*diagnosis: 14.4 KB of 19.0 KB are float16 weights*",
    ])
    result.stdout.fnmatch_lines(["*test_roomy[[]float16-tflite[]]*max_size_kb PASS*"])


# ---- other formats, read without TensorFlow ----------------------------------------------------


def test_zip_artifact_is_accounted_by_member():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("variables/variables.data-00000-of-00001", b"w" * 3000)
        archive.writestr("saved_model.pb", b"g" * 500)
    content = buffer.getvalue()
    report = explain_size(Artifact(content, {"variant": "fp32"}, ".savedmodel.zip"))
    assert report.account.format == "zip archive" and "coarse" in report.account.note
    assert [(p.name, p.role, p.nbytes) for p in report.account.parts] == [
        ("variables/variables.data-00000-of-00001", "weights file", 3000), ("saved_model.pb", "graph", 500)]
    assert report.tensor_bytes + report.overhead_bytes == len(content)
    assert "note: coarse: archive members" in report.summary()


def test_onnx_artifact_is_accounted_by_initializer():
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((64, 32), np.float32), "model/dense/MatMul/ReadVariableOp:0")
    bias = numpy_helper.from_array(np.zeros(32, np.float32), "model/dense/BiasAdd/ReadVariableOp:0")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", weights.name, bias.name], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32])], [weights, bias])
    content = helper.make_model(graph).SerializeToString()
    report = explain_size(Artifact(content, {"variant": "fp32"}, ".onnx"))
    assert [(g.layer, g.nbytes) for g in report.layers()] == [("dense", 64 * 32 * 4 + 32 * 4)]
    assert report.tensor_bytes + report.overhead_bytes == len(content)
    assert "float32 weights of 1 layer (dense)" in report.diagnosis()


def test_unknown_or_damaged_artifacts_are_opaque_not_errors():
    engine = explain_size(Artifact(b"\0" * 2048, {"variant": "fp16"}, ".engine"))
    assert engine.account.format == "opaque" and engine.overhead_bytes == 2048
    assert "opaque" in engine.summary() and engine.diagnosis() == ""
    damaged = explain_size(Artifact(b"1234TFL3" + b"\xff" * 64, {"variant": "int8"}, ".tflite"))
    assert damaged.account.format == "opaque" and "could not read the .tflite artifact" in damaged.account.note
    with pytest.raises(UsageError, match="explain_size\\(\\) takes a runnable model or an Artifact, not str"):
        explain_size("model.tflite")


@pytest.mark.parametrize(("name", "fallback", "layer"), [
    ("digits_cnn/dense/MatMul", "", "dense"),
    ("digits_cnn/conv1/Relu;digits_cnn/conv1/BiasAdd;digits_cnn/conv1/Conv2D", "", "conv1"),
    ("arith.constant", "digits_cnn/flatten/Reshape", "flatten"),
    ("digits_cnn/encoder/block_1/MatMul", "", "encoder/block_1"),
    ("digits_cnn/conv2/Conv2D/ReadVariableOp:0_quantized", "", "conv2"),
    ("new_shape__19", "", "new_shape__19"),
])
def test_layer_of_a_tensor_name(name, fallback, layer):
    assert layer_of(name, "digits_cnn", fallback) == layer


def test_model_prefix_needs_a_majority():
    assert model_prefix(["m/a/MatMul", "m/b/MatMul", "arith.constant"]) == "m"
    assert model_prefix(["a/MatMul", "b/MatMul"]) == ""
