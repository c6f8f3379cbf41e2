"""Quantization triage (QuantizationDebugger) and accuracy-aware ``int8(max_drop=...)``.

Real TensorFlow and LiteRT, no mocks. Besides the shipped digits CNN, two hand-built tf_keras
models: ``y = x0 - x1`` with a degenerate calibration (its int8 graph is refused by XNNPACK, see
test_xnnpack_fallback.py), and a classifier with one *sensitive* Dense layer. That layer reads a
unit that is always 0 through a weight row of 1e4, so its per-channel int8 weight scale is ~79 and
every useful weight (|w| ~ 0.3) rounds to 0: plain int8 falls to chance while the float model is
exact (labels are the float model's own arg-max). Its kernel has >= 1024 elements, so dynamic-range
quantization (the last-resort fallback) breaks it as well.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_tfopt import Dataset, UsageError, Workbench, tfenv
from pytest_tfopt.models import load_model
from pytest_tfopt.triage import Triage, failure_note, quantization_triage

pytestmark = pytest.mark.filterwarnings(
    "ignore:Statistics for quantized inputs:UserWarning",
    "ignore:.*tf.lite.Interpreter is deprecated:UserWarning",
)

DIGITS_LAYERS = {"conv1", "conv2", "pool", "flatten", "dense", "probs"}


# ---- models ---------------------------------------------------------------------------------------------
def _difference_model():
    """tf_keras ``y = x0 - x1`` and a calibration with |x| <= 1000 but x0 - x1 within +-0.001."""
    tfenv.tensorflow()
    import tf_keras

    inp = tf_keras.Input((2,), name="pair")
    model = tf_keras.Model(inp, tf_keras.layers.Dense(1, use_bias=False, name="diff")(inp), name="difference")
    model.get_layer("diff").set_weights([np.array([[1.0], [-1.0]], np.float32)])
    a = np.linspace(-1000.0, 1000.0, 16, dtype=np.float32)
    b = a + np.float32(1e-3) * np.sign(np.sin(np.arange(16, dtype=np.float32)))
    return model, np.stack([a, b], axis=1).astype(np.float32)


def _sensitive_bench(cache, near: float = 0.0, n: int = 16, hidden: int = 32, classes: int = 4) -> Workbench:
    """features -> split (relu(x), relu(-x), a dead unit) -> sensitive (linear) -> probs (softmax).

    ``near``: fraction of samples moved next to the boundary of their top two classes (margin 1e-3),
    so that any remaining quantization noise flips some of them.
    """
    tfenv.tensorflow()
    import tf_keras

    rng = np.random.default_rng(0)
    q = (rng.normal(size=(n, hidden)) / np.sqrt(n)).astype(np.float32)
    r = (rng.normal(size=(hidden, classes)) / np.sqrt(hidden)).astype(np.float32)
    inp = tf_keras.Input((n,), name="features")
    h = tf_keras.layers.Dense(2 * n + 1, activation="relu", name="split")(inp)
    z = tf_keras.layers.Dense(hidden, name="sensitive")(h)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(classes, activation="softmax", name="probs")(z), name="mlp")
    k1 = np.zeros((n, 2 * n + 1), np.float32)
    k1[:, :n], k1[:, n : 2 * n] = np.eye(n), -np.eye(n)
    b1 = np.zeros(2 * n + 1, np.float32)
    b1[-1] = -1.0  # the dead unit: relu(-1) = 0 for every input
    model.get_layer("split").set_weights([k1, b1])
    k2 = np.concatenate([q, -q, np.full((1, hidden), 1e4, np.float32)])
    model.get_layer("sensitive").set_weights([k2, np.zeros(hidden, np.float32)])
    model.get_layer("probs").set_weights([r, np.zeros(classes, np.float32)])

    x = rng.normal(size=(1000, n)).astype(np.float32)
    w = q @ r
    for i in rng.choice(len(x), int(near * len(x)), replace=False):
        logits = x[i] @ w
        a, b = np.argsort(logits)[::-1][:2]
        d = w[:, a] - w[:, b]
        x[i] -= (logits[a] - logits[b] - 1e-3) / (d @ d) * d
    y = (x @ w).argmax(1)
    data = Dataset.from_arrays(x[:800], y[:800], x_test=x[800:], y_test=y[800:])
    return Workbench(model, data, cache_dir=cache, threads=1)


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory) -> Workbench:
    return _sensitive_bench(tmp_path_factory.mktemp("sensitive"))


@pytest.fixture(scope="module")
def sensitive_near_boundary(tmp_path_factory) -> Workbench:
    return _sensitive_bench(tmp_path_factory.mktemp("sensitive-near"), near=0.3)


# ---- triage -----------------------------------------------------------------------------------------------
def test_triage_ranks_the_digits_cnn_layers(bench):
    triage = quantization_triage(bench.source, bench.calibration(), bench.eval_dataset)

    assert triage.available, triage.error
    finite = [r for r in triage.ranking if math.isfinite(r.rmse_scale)]
    assert len(triage.layers) == min(5, len(finite)) == 5
    scores = [r.rmse_scale for r in triage.layers]
    assert all(math.isfinite(s) and s >= 0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    for row in triage.layers:
        assert row.op and row.tensor and row.layer in DIGITS_LAYERS
    # rows name TFLite tensors; the Keras names come from them
    assert {r.layer for r in triage.layers} >= {"conv1", "conv2", "dense", "probs"}
    assert triage.denylisted_nodes and set(triage.denylisted_nodes) <= {r.tensor for r in triage.ranking}
    assert triage.samples == 50

    text = triage.summary()
    assert text.startswith("quantization triage (QuantizationDebugger, RMSE/scale")
    assert "denylisted_nodes=[" in text and "int8(max_drop=" in text
    assert "model input is not visible" in text
    assert f"1. {triage.layers[0].layer} ({triage.layers[0].op}" in text


def test_stock_debugger_fails_on_the_xnnpack_refused_graph():
    """The premise: tf.lite.experimental.QuantizationDebugger's own interpreter uses XNNPACK."""
    from pytest_tfopt.variants.ptq import configure

    tf = tfenv.tensorflow()
    model, x = _difference_model()
    converter = load_model(model).converter()
    configure("int8", converter, Dataset(x))
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([x[i : i + 1]] for i in range(len(x)))
    )
    with pytest.raises(RuntimeError, match="XNNPACK"):
        debugger.run()


def test_triage_works_where_xnnpack_refuses_the_int8_graph():
    model, x = _difference_model()

    triage = quantization_triage(load_model(model), Dataset(x))

    assert triage.available, triage.error
    (row,) = triage.layers
    assert row.op == "FULLY_CONNECTED" and row.layer == "diff"
    assert row.rmse_scale > 10  # the output scale (~8e-6) cannot hold x0 - x1 computed from int8 inputs
    assert triage.denylisted_nodes == (row.tensor,)


def test_triage_problems_become_one_line(bench, tmp_path):
    wrong_shape = quantization_triage(bench.source, Dataset(np.zeros((4, 3), np.float32)))
    path = tmp_path / "digits.tflite"
    path.write_bytes(bench.build("fp32").content)
    tflite = quantization_triage(load_model(path), bench.calibration())

    for triage in (wrong_shape, tflite):
        assert isinstance(triage, Triage) and not triage.available
        assert triage.summary().startswith("quantization triage unavailable: ")
        assert "\n" not in triage.summary()
    assert "already a .tflite file" in tflite.summary()


def test_failure_note_for_a_broken_accuracy_budget(sensitive):
    from pytest_tfopt.budgets import Verdict

    model = sensitive.runnable("int8")
    broken = Verdict("max_accuracy_drop", False, 0.3, 1.0, 0.01, "max_accuracy_drop(0.01) broken: ...")
    held = Verdict("max_size_kb", False, 9.0, 8.0, 1.0, "max_size_kb(1) broken: ...")

    assert failure_note(sensitive, model, [held]) is None  # not an accuracy budget
    assert failure_note(sensitive, sensitive.runnable("dynamic"), [broken]) is None  # not full-integer
    note = failure_note(sensitive, model, [held, broken])
    assert "1. sensitive (FULLY_CONNECTED" in note
    assert f"kept artifact: {model.path}" in note and model.path
    assert isinstance(model.measurements["quantization_triage"], Triage)


# ---- int8(max_drop=...) -------------------------------------------------------------------------------------
def test_int8_without_max_drop_is_the_plain_recipe(bench):
    meta = bench.runnable("int8").artifact.metadata
    assert meta["variant"] == "int8" and "selective" not in meta
    assert meta["converter"] == "tf.lite.TFLiteConverter"


def test_loose_budget_is_met_by_plain_int8(bench):
    model = bench.runnable("int8(max_drop=0.5)")

    selective = model.artifact.metadata["selective"]
    assert selective["met"] is True and selective["chosen_round"] == 0
    assert selective["float_layers"] == [] and selective["fallback"] is None
    assert [r["round"] for r in selective["rounds"]] == [0]
    assert selective["drop"] <= 0.5 and selective["validation"].startswith("calibration samples (200")
    assert model.artifact.content == bench.runnable("int8").artifact.content
    assert model.artifact.metadata["calibration_hash"] == bench.calibration().hash


def test_max_drop_keeps_the_sensitive_layer_float(sensitive):
    plain = sensitive.runnable("int8")
    model = sensitive.runnable("int8(max_drop=0.02)")
    reference = sensitive.reference().evaluate()

    selective = model.artifact.metadata["selective"]
    assert selective["met"] is True and selective["drop"] <= 0.02
    assert selective["rounds"][0]["drop"] > 0.5  # plain int8 on the calibration samples
    first = selective["float_layers"][0]
    assert first["layer"] == "sensitive" and first["op"] == "FULLY_CONNECTED" and first["rmse_scale"] > 10
    assert "RMSE/scale" in first["why"]
    assert first["tensor"] in model.artifact.metadata["settings"]["denylisted_nodes"]
    # better on the evaluation split too, which the search never saw
    assert reference - model.evaluate() < 0.05 < 0.5 < reference - plain.evaluate()


def test_unmeetable_budget_keeps_the_best_artifact(sensitive_near_boundary):
    model = sensitive_near_boundary.runnable("int8(max_drop=0.0)")

    selective = model.artifact.metadata["selective"]
    rounds = selective["rounds"]
    assert selective["met"] is False
    assert selective["drop"] == min(r["drop"] for r in rounds) > 0
    assert selective["drop"] < rounds[0]["drop"]
    assert rounds[selective["chosen_round"]]["size_bytes"] == model.size_bytes
    assert selective["float_layers"] and selective["fallback"] is None
    assert "dynamic-range" in rounds[-1]["fallback"]  # tried last, after every scored layer went float
    assert model.predict(sensitive_near_boundary.eval_dataset.x[:3]).shape == (3, 4)


@pytest.mark.parametrize("value", [-0.1, "0.01", True])
def test_bad_max_drop_is_a_usage_error(bench, value):
    with pytest.raises(UsageError, match=r"max_drop must be a number >= 0"):
        bench.runnable(f"int8(max_drop={value!r})")


def test_failing_accuracy_gate_carries_the_triage_and_the_kept_artifact(suite):
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.001)
def test_int8_accuracy(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_size_kb(1)
def test_int8_size(optimized_model):
    pass
""",
        "--tfopt-report=r.json",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "max_accuracy_drop(0.001) broken: int8 on tflite: *",
        "quantization triage (QuantizationDebugger, RMSE/scale*",
        "*dense*FULLY_CONNECTED*",
        "*denylisted_nodes=*",
        "kept artifact: *.tflite",
    ])
    result.stdout.fnmatch_lines(["max_size_kb(1) broken: *", "kept artifact: *.tflite"])
    import json

    with open("r.json") as fh:
        rows = json.load(fh)["rows"]
    assert any("RMSE/scale" in (r.get("triage") or "") for r in rows)
