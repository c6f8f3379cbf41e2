"""Low-rank factorization (``lowrank``) and Grappler graph optimization (``graphopt``) transforms."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from pytest_tfopt import ConversionError, UsageError, Workbench

LOWRANK = "lowrank(rank=8)+float16"


def _nothing_cached(path) -> bool:
    return [f for f in os.listdir(path) if not f.endswith(".lock")] == []


# ---- lowrank ------------------------------------------------------------------------
def test_lowrank_by_rank_shrinks_dense_and_keeps_accuracy(bench):
    model = bench.runnable(LOWRANK)
    (stage,) = model.artifact.metadata["stages"]
    assert stage["stage"] == "lowrank(rank=8)"
    assert stage["touched_layers"] == ["dense"]
    assert stage["lowrank"]["dense"] == {"rank": 8, "params_before": 144 * 32 + 32, "params_after": 8 * (144 + 32) + 32,
                                         "energy": pytest.approx(0.55, abs=0.01)}
    assert "probs" in stage["skipped_layers"]  # 8 * (32 + 10) >= 32 * 10: no saving
    assert stage["params_before"] == 7450 and stage["params_after"] == 7450 - 4640 + 1440
    assert model.size_bytes < bench.runnable("float16").size_bytes
    assert model.evaluate() >= 0.75  # measured 0.804 (fp32 0.973) without fine-tuning


def test_lowrank_by_energy_picks_the_rank(bench):
    model = bench.runnable("lowrank(energy=0.9)")
    assert model.variant == "lowrank(energy=0.9)+fp32"
    stage = model.artifact.metadata["stages"][0]
    assert stage["lowrank"]["dense"]["rank"] == 23 and stage["lowrank"]["dense"]["energy"] >= 0.9
    assert stage["params_after"] < stage["params_before"]
    assert model.evaluate() >= 0.94  # measured 0.967
    # no rank and no energy: energy=0.9 is the default
    assert bench.build("lowrank").metadata["stages"][0]["lowrank"] == stage["lowrank"]


def test_lowrank_fine_tuning_recovers_accuracy(bench):
    tuned = bench.runnable("lowrank(rank=8,epochs=1,batch_size=64,learning_rate=0.001)")
    assert tuned.evaluate() >= 0.93  # measured 0.962
    assert tuned.evaluate() > bench.runnable("lowrank(rank=8)").evaluate()
    assert tuned.artifact.metadata["training_hash"] == bench.dataset.train.hash


def test_lowrank_factorization_is_exact_at_the_kernel_rank():
    """Dense and strided 1x1 Conv2D kernels of rank 2, in functional and Sequential models."""
    import tf_keras

    from pytest_tfopt.variants import default_registry

    rng = np.random.default_rng(0)
    inp = tf_keras.Input((6, 6, 8))
    x = tf_keras.layers.Conv2D(16, 1, strides=2, padding="same", activation="relu", name="pointwise")(inp)
    x = tf_keras.layers.Conv2D(4, 3, name="spatial")(x)
    x = tf_keras.layers.Flatten()(x)
    out = tf_keras.layers.Dense(12, activation="relu", name="fc")(x)
    functional = tf_keras.Model(inp, out)
    sequential = tf_keras.Sequential([tf_keras.layers.Dense(8, input_shape=(20,), name="a"),
                                      tf_keras.layers.Dense(3, activation="softmax", name="b")])
    _, recipe = default_registry().stage("lowrank(rank=2)")
    params = {**recipe.params, "rank": 2}
    for model, shape, touched in [(functional, (6, 6, 8), ["pointwise", "fc"]), (sequential, (20,), ["a", "b"])]:
        for name in touched:
            layer = model.get_layer(name)
            n_in, n_out = layer.kernel.shape[-2:]
            low = rng.normal(size=(n_in, 2)) @ rng.normal(size=(2, n_out))
            layer.kernel.assign(low.reshape(layer.kernel.shape).astype(np.float32))
        factorized, stats = recipe.apply(model, None, params, lambda _: None)
        assert stats["touched_layers"] == touched
        assert len(factorized.layers) == len(model.layers) + len(touched)
        assert stats["params_after"] == factorized.count_params() < model.count_params()
        probe = rng.random((4, *shape), dtype=np.float32)
        np.testing.assert_allclose(factorized(probe), model(probe), atol=1e-4, rtol=1e-4)


def test_lowrank_skips_shared_layers_and_refuses_subclassed_models():
    import tf_keras

    from pytest_tfopt.variants import default_registry

    _, recipe = default_registry().stage("lowrank(rank=4)")
    params = {**recipe.params, "rank": 4}
    inp = tf_keras.Input((5, 40))
    shared = tf_keras.layers.Dense(40, name="shared")
    out = tf_keras.layers.Dense(30, name="head")(shared(shared(inp)))  # Dense on a sequence: the last axis
    factorized, stats = recipe.apply(tf_keras.Model(inp, out), None, params, lambda _: None)
    assert stats["touched_layers"] == ["head"]
    assert stats["skipped_layers"] == {"shared": "shared layer (called more than once)"}
    assert factorized.output_shape == (None, 5, 30)

    class Subclassed(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = tf_keras.layers.Dense(40)

        def call(self, x):
            return self.fc(x)

    model = Subclassed()
    model(np.zeros((1, 60), np.float32))
    with pytest.raises(ConversionError, match="is a subclassed model: build it with the Sequential or functional API"):
        recipe.apply(model, None, params, lambda _: None)


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("lowrank(rank=8,energy=0.9)", r"give rank or energy, not both"),
        ("lowrank(energy=0)", r"energy must be in \(0, 1\]"),
        ("lowrank(energy=1.5)", r"energy must be in \(0, 1\]"),
        ("lowrank(rank=0)", "rank=0 must be an integer >= 1"),
        ("lowrank(rank=2.5)", "rank=2.5 must be an integer >= 1"),
        ("lowrank(rank=4,epochs=-1)", "epochs=-1 must be an integer >= 0"),
        ("float16+lowrank", "'float16' is a precision and must come last"),
        ("graphopt(level=2)", "variant 'graphopt' has no parameter 'level'"),
    ],
)
def test_bad_lowrank_parameters_are_usage_errors(bench, variant, message):
    with pytest.raises(UsageError, match=message):
        bench.build(variant)


def test_rank_above_a_layer_rank_is_a_usage_error_naming_the_layer(bench, tmp_path):
    wb = Workbench(bench.source.path, bench.dataset, cache_dir=tmp_path, threads=1)
    with pytest.raises(UsageError, match=r"lowrank\(rank=11\): layer 'probs' has a 32x10 kernel.*choose rank <= 10"):
        wb.build("lowrank(rank=11)+float16")
    assert _nothing_cached(tmp_path)


def test_lowrank_that_changes_nothing_is_a_conversion_error_and_caches_nothing(bench, tmp_path, data_path):
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Input((8, 8, 1)), tf_keras.layers.Conv2D(10, 3),
                                 tf_keras.layers.GlobalAveragePooling2D(), tf_keras.layers.Activation("softmax")])
    wb = Workbench(model, data_path, cache_dir=tmp_path / "a", threads=1)
    with pytest.raises(ConversionError, match=r"has no factorizable layers \(Dense, 1x1 Conv2D\)"):
        wb.build("lowrank(rank=2)+float16")
    assert _nothing_cached(tmp_path / "a")
    wb = Workbench(bench.source.path, bench.dataset, cache_dir=tmp_path / "b", threads=1)
    with pytest.raises(ConversionError, match=r"lowrank\(energy=1\) makes no layer of digits_cnn smaller"):
        wb.build("lowrank(energy=1.0)")  # full rank saves nothing anywhere
    assert _nothing_cached(tmp_path / "b")


# ---- graphopt -----------------------------------------------------------------------
def test_graphopt_keeps_predictions_and_removes_ops(bench):
    fp32 = bench.reference()
    optimized = bench.runnable("graphopt")
    assert optimized.variant == "graphopt+fp32"
    (stage,) = optimized.artifact.metadata["stages"]
    assert stage["ops_after"] <= stage["ops_before"]  # measured 34 -> 25
    assert stage["op_types_after"]["Conv2D"] == 2 and stage["op_types_after"]["MatMul"] == 2
    assert "_FusedConv2D" not in stage["op_types_after"]  # TFLite cannot convert remapper's fused ops
    assert stage["max_abs_diff"] <= 1e-4
    x = np.asarray(bench.eval_dataset.x)
    np.testing.assert_allclose(optimized.predict(x), fp32.predict(x), atol=1e-4, rtol=0)

    int8 = bench.runnable("graphopt+int8")
    assert int8.artifact.metadata["stages"][0]["ops_after"] == stage["ops_after"]
    assert int8.size_bytes < 0.5 * fp32.size_bytes
    assert int8.evaluate() >= 0.95  # measured 0.971, as plain int8


def test_graphopt_savedmodel_lives_as_long_as_the_model(bench):
    _, recipe = bench.variants.stage("graphopt")
    result, stats = recipe.apply(bench.source, bench.dataset.train, {}, lambda _: None)
    path = result.path
    assert result.kind == "saved_model" and os.path.exists(os.path.join(path, "saved_model.pb"))
    assert (result.input_shape, result.input_dtype) == (bench.source.input_shape, "float32") and result.hash
    assert stats["ops_after"] <= stats["ops_before"]
    del result
    gc.collect()
    assert not os.path.exists(path)


def test_graphopt_on_a_savedmodel_source(tmp_path, data_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.export(str(tmp_path / "exported"), verbose=False)
    wb = Workbench(tmp_path / "exported", data_path, cache_dir=tmp_path / "cache", threads=1)
    assert wb.source.kind == "saved_model"
    optimized = wb.runnable("graphopt")
    stage = optimized.artifact.metadata["stages"][0]
    assert stage["ops_after"] <= stage["ops_before"]
    x = np.asarray(wb.eval_dataset.x[:32])
    np.testing.assert_allclose(optimized.predict(x), wb.reference().predict(x), atol=1e-4, rtol=0)


def test_graphopt_needs_a_tensorflow_graph(bench, tmp_path):
    tflite = tmp_path / "digits.tflite"
    tflite.write_bytes(bench.reference().artifact.content)
    wb = Workbench(tflite, bench.dataset, cache_dir=tmp_path / "cache", threads=1)
    with pytest.raises(ConversionError, match="graphopt optimizes a TensorFlow graph but digits.tflite is a tflite model"):
        wb.build("graphopt")
    assert _nothing_cached(tmp_path / "cache")


# ---- markers ------------------------------------------------------------------------
def test_lowrank_variant_under_accuracy_budget(suite):
    result = suite(
        f"""
import pytest

@pytest.mark.tfopt_variants("{LOWRANK}")
@pytest.mark.max_accuracy_drop(0.2)
def test_holds(optimized_model):
    assert optimized_model.artifact.metadata["stages"][0]["params_after"] < 7450

@pytest.mark.tfopt_variants("{LOWRANK}")
@pytest.mark.max_accuracy_drop(0.0)
def test_broken(optimized_model):
    pass
""",
        "--strict-markers",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*test_broken[[]lowrank(rank=8)+float16-tflite[]]*",
        "*max_accuracy_drop(0) broken: lowrank(rank=8)+float16 on tflite: top1 0.8* vs fp32 0.9*, drop 0.1* > budget 0*",
    ])
