"""Model-level transforms (tfmot pruning, clustering, QAT), chains, their markers and bad parameters."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pytest_tfopt import ConversionError, Dataset, DatasetError, UsageError, Workbench

PRUNED = "pruned(sparsity=0.5,epochs=1)+int8"
CLUSTERED = "clustered(clusters=8)+int8"


def test_pruned_chain_reaches_sparsity_and_shrinks_gzip(bench):
    model = bench.runnable(PRUNED)
    (stage,) = model.artifact.metadata["stages"]
    assert stage["stage"] == "pruned(epochs=1,sparsity=0.5)"
    assert set(stage["sparsity"]) == {"conv1", "conv2", "dense", "probs"}
    assert min(stage["sparsity"].values()) >= 0.49
    assert model.gzip_size_bytes < bench.runnable("int8").gzip_size_bytes
    assert model.evaluate() >= 0.85
    assert model.artifact.metadata["training_hash"] == bench.dataset.train.hash


def test_clustered_chain_limits_unique_weights(bench):
    model = bench.runnable(CLUSTERED)
    (stage,) = model.artifact.metadata["stages"]
    assert stage["unique_weights"] and max(stage["unique_weights"].values()) <= 8
    assert model.evaluate() >= 0.9


def test_qat_ends_in_int8_by_default(bench):
    model = bench.runnable("qat")
    assert model.variant == "qat+int8"
    assert model.evaluate() >= 0.93
    assert model.size_bytes < 0.5 * bench.reference().size_bytes


def test_structured_two_of_four_pruning(bench):
    model = bench.runnable("pruned(m_by_n='2:4',epochs=1)")
    assert model.variant.endswith("+fp32")
    stage = model.artifact.metadata["stages"][0]
    assert stage["skipped_layers"] == ["conv1"]  # one input channel: no 2:4 pattern fits
    assert set(stage["sparsity"]) == {"conv2", "dense", "probs"}
    assert all(value >= 0.49 for value in stage["sparsity"].values())


def test_same_recipe_same_bytes(bench, tmp_path):
    first = Workbench(bench.source.path, bench.dataset, cache_dir=tmp_path / "a", threads=1).build(PRUNED)
    second = Workbench(bench.source.path, bench.dataset, cache_dir=tmp_path / "b", threads=1).build(PRUNED)
    assert first.content == second.content


def _most_scales(content: bytes) -> int:
    """The largest number of quantization scales any int8 tensor of a .tflite model has (1 = per tensor)."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=content).get_tensor_details()
    return max(len(d["quantization_parameters"]["scales"]) for d in details if d["dtype"] == np.int8)


def test_int8_per_tensor_keeps_clustered_weights_few_and_compresses_better(bench):
    """After ``clustered``, int8 defaults to one scale per tensor; ``per_channel=True`` still asks for per-channel."""
    per_channel = bench.runnable("clustered(clusters=8)+int8(per_channel=True)")
    per_tensor = bench.runnable(CLUSTERED)
    explicit = bench.build("clustered(clusters=8)+int8(per_channel=False)")
    assert explicit.content == per_tensor.artifact.content
    assert per_tensor.artifact.metadata["precision_params"]["per_channel"] is False
    assert bench.build("int8").metadata["precision_params"]["per_channel"] is True  # plain int8 is per-channel
    assert _most_scales(per_channel.artifact.content) == 32  # dense kernel: one scale per output channel
    assert _most_scales(per_tensor.artifact.content) == 1
    assert per_tensor.artifact.metadata["settings"]["per_channel"] == "False"
    # one scale per tensor: 8 centroids stay 8 int8 values, which gzip codes in fewer bytes
    assert per_tensor.gzip_size_bytes < per_channel.gzip_size_bytes
    assert per_tensor.evaluate() >= 0.9


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("int8(per_channel='no')", r"per_channel='no' must be True .* or False"),
        ("int8(per_channel=False,max_drop=0.01)", "not supported: the layer search ranks per-channel"),
        ("pruned(sparsity=1.0)", r"sparsity must be in \[0, 1\)"),
        ("pruned(schedule='cubic')", "use 'polynomial' or 'constant'"),
        ("pruned(m_by_n='4:2')", "need 0 < M < N"),
        ("pruned(epochs=0)", "epochs=0 must be an integer >= 1"),
        ("clustered(clusters=1)", "clusters=1 must be an integer >= 2"),
        ("clustered(init='best')", "use one of kmeans_plus_plus, linear, random, density_based"),
        ("int8+pruned", "'int8' is a precision and must come last; transforms are clustered, .*pruned, .*qat"),
        ("pruned+", "has an empty stage"),
        ("shrunk+int8", "unknown variant 'shrunk'"),
    ],
)
def test_bad_parameters_are_usage_errors(bench, variant, message):
    with pytest.raises(UsageError, match=message):
        bench.build(variant)


def test_model_without_prunable_layers_is_a_clear_error_and_caches_nothing(tmp_path, data_path):
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Input((8, 8, 1)), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Activation("softmax")])
    wb = Workbench(model, data_path, cache_dir=tmp_path, threads=1)
    with pytest.raises(ConversionError, match="has no prunable layers"):
        wb.build("pruned(epochs=1)+int8")
    assert [f for f in os.listdir(tmp_path) if not f.endswith(".lock")] == []


def test_unlabelled_data_cannot_fine_tune(bench, tmp_path):
    data = Dataset.from_arrays(bench.dataset.train.x, None, x_test=bench.eval_dataset.x)
    wb = Workbench(bench.source.path, data, cache_dir=tmp_path, threads=1)
    with pytest.raises(DatasetError, match="no labelled training split: give x_train and y_train"):
        wb.build("pruned(epochs=1)")


def test_keras3_model_is_rebuilt_in_tf_keras_for_tfmot(tmp_path, data_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    wb = Workbench(model, data_path, cache_dir=tmp_path, threads=1)
    pruned = wb.runnable("pruned(sparsity=0.5,epochs=1)")
    assert pruned.artifact.metadata["source_model"] == model.name
    assert min(pruned.artifact.metadata["stages"][0]["sparsity"].values()) >= 0.49
    out = pruned.predict(np.asarray(wb.eval_dataset.x[:3]))
    assert out.shape == (3, 10)


MARKER_CASES = [
    ("min_sparsity", PRUNED, "0.45", "0.9", "min_sparsity(0.9) broken: pruned(epochs=1,sparsity=0.5)+int8 on tflite: lowest layer sparsity 0.* < budget 0.9"),
    ("max_unique_weights", CLUSTERED, "8", "2", "max_unique_weights(2) broken: clustered(clusters=8)+int8 on tflite: most unique weights * > budget 2"),
    ("min_compression_ratio", PRUNED, "3, compressed=True", "100, compressed=True", "min_compression_ratio(100, compressed=True) broken: * gzip B *"),
]


@pytest.mark.parametrize(("marker", "variant", "holds", "broken", "message"), MARKER_CASES, ids=[c[0] for c in MARKER_CASES])
def test_compression_markers_pass_and_fail(suite, marker, variant, holds, broken, message):
    result = suite(
        f"""
import pytest

@pytest.mark.tfopt_variants("{variant}")
@pytest.mark.{marker}({holds})
def test_holds(optimized_model):
    pass

@pytest.mark.tfopt_variants("{variant}")
@pytest.mark.{marker}({broken})
def test_broken(optimized_model):
    pass
""",
        "--strict-markers",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*{message}*"])


def test_sparsity_marker_on_an_unpruned_variant_says_why(suite):
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.min_sparsity(0.5)
def test_it(optimized_model):
    pass
"""
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*min_sparsity(0.5) broken: int8 on tflite records no sparsity: only pruned(...) variants do*"])


def test_recipe_registered_in_conftest_is_usable(suite, pytester):
    pytester.makeconftest(
        """
import pytest
from pytest_tfopt.variants import Recipe

def _halve(model, train, params, log):
    import numpy as np
    for layer in model.layers:
        if getattr(layer, "kernel", None) is not None:
            layer.kernel.assign(np.asarray(layer.kernel) * params["factor"])
    return model, {"scaled_by": params["factor"]}

def tfopt_register_variants(registry):
    registry.register(Recipe("scaled", params={"factor": 1.0}, apply=_halve))
"""
    )
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("scaled(factor=1.0)+dynamic")
@pytest.mark.max_accuracy_drop(0.01)
def test_custom(optimized_model):
    assert optimized_model.artifact.metadata["stages"][0]["scaled_by"] == 1.0
""",
        "-v",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_custom[[]scaled(factor=1.0)+dynamic-tflite[]] PASSED*"])
