"""Collaborative optimization (pqat, cqat, pcqat) and knowledge distillation (distilled)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pytest_tfopt import ConversionError, Dataset, DatasetError, UsageError, Workbench
from pytest_tfopt.variants import distill

DISTILLED = "distilled(student='tiny_mlp',epochs=3)+int8"


def _stage(model):
    (stage,) = model.artifact.metadata["stages"]
    return stage


# ---- collaborative optimization -------------------------------------------------------
def test_pqat_keeps_the_sparsity_through_qat(bench):
    model = bench.runnable("pqat(sparsity=0.5)")
    assert model.variant == "pqat(sparsity=0.5)+int8"
    stage = _stage(model)
    assert set(stage["sparsity"]) == {"conv1", "conv2", "dense", "probs"}
    assert min(stage["sparsity_after_pruning"].values()) >= 0.49
    assert min(stage["sparsity"].values()) >= 0.45  # measured on the QAT kernels after training
    assert model.evaluate() >= 0.92  # measured 0.953 (fp32 0.973)
    assert model.gzip_size_bytes < bench.runnable("int8").gzip_size_bytes


def test_cqat_keeps_the_clusters_through_qat(bench):
    model = bench.runnable("cqat")
    assert model.variant == "cqat+int8"
    stage = _stage(model)
    assert set(stage["unique_weights"]) == {"conv1", "conv2", "dense", "probs"}
    assert max(stage["unique_weights_after_clustering"].values()) <= 16
    assert max(stage["unique_weights"].values()) <= 16
    assert model.evaluate() >= 0.92  # measured 0.956
    assert model.gzip_size_bytes < bench.runnable("int8").gzip_size_bytes


def test_pcqat_keeps_zeros_and_clusters(bench):
    model = bench.runnable("pcqat(sparsity=0.5,clusters=8)")
    stage = _stage(model)
    assert min(stage["sparsity_after_clustering"].values()) >= 0.45
    assert min(stage["sparsity"].values()) >= 0.45
    assert max(stage["unique_weights_after_clustering"].values()) <= 8
    per_channel = stage.get("unique_weights_per_channel", {})
    for layer, count in stage["unique_weights"].items():
        # tfmot may keep a Conv2D's clusters per output channel (see collab._per_channel)
        assert count <= 8 or per_channel[layer] <= 8, (layer, count, per_channel)
    assert model.evaluate() >= 0.92  # measured 0.947
    assert model.gzip_size_bytes < bench.runnable("pqat(sparsity=0.5)").gzip_size_bytes


# ---- distillation --------------------------------------------------------------------
def test_distilled_student_is_accurate_and_small(bench):
    model = bench.runnable(DISTILLED)
    stage = _stage(model)
    assert stage["student"] == "tiny_mlp"
    assert stage["teacher_params"] == 7450 and stage["student_params"] == 2410
    assert stage["teacher_outputs"] == "probabilities" and np.isfinite(stage["final_loss"])
    assert model.evaluate() >= 0.88  # measured 0.92 (teacher fp32 0.973)
    assert model.size_bytes < 0.5 * bench.reference().size_bytes
    probs = model.predict(np.asarray(bench.eval_dataset.x[:4]))
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)  # a softmax was appended, like the teacher


def _np_loss(y, teacher, student, t, alpha):
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    onehot = y if y.ndim == 2 else np.eye(student.shape[1])[y]
    ce = -(onehot * log_softmax(student)).sum(axis=1)
    pt = np.exp(log_softmax(teacher / t))
    kl = (pt * (log_softmax(teacher / t) - log_softmax(student / t))).sum(axis=1)
    return float(np.mean(alpha * ce + (1 - alpha) * t**2 * kl))


@pytest.mark.parametrize(("temperature", "alpha"), [(4.0, 0.1), (1.0, 0.5), (2.5, 0.0), (3.0, 1.0)])
def test_distillation_loss_matches_a_hand_computation(temperature, alpha):
    rng = np.random.default_rng(1)
    y = np.array([0, 2, 1])
    teacher = rng.normal(size=(3, 4)).astype(np.float32) * 3
    student = rng.normal(size=(3, 4)).astype(np.float32)
    expected = _np_loss(y, teacher, student, temperature, alpha)
    got = float(distill.distillation_loss(y, teacher, student, temperature, alpha))
    assert got == pytest.approx(expected, rel=1e-5)
    onehot = np.eye(4, dtype=np.float32)[y]
    assert float(distill.distillation_loss(onehot, teacher, student, temperature, alpha)) == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_hard_labels_only_ignores_the_teacher():
    y = np.array([1, 0])
    student = np.array([[0.5, 2.0, -1.0], [1.0, 0.0, 0.2]], np.float32)
    a = float(distill.distillation_loss(y, np.zeros((2, 3), np.float32), student, 4.0, 1.0))
    b = float(distill.distillation_loss(y, np.array([[9.0, -3, 0], [0, 5, 1]], np.float32), student, 4.0, 1.0))
    assert a == b == pytest.approx(_np_loss(y, np.zeros((2, 3)), student, 4.0, 1.0), rel=1e-6)
    # and with alpha=0 a student equal to the teacher has zero loss
    assert float(distill.distillation_loss(y, student, student, 4.0, 0.0)) == pytest.approx(0.0, abs=1e-6)


def test_distilled_is_deterministic(bench):
    from pytest_tfopt.variants.training import as_tf_keras

    params = {**bench.variants.stage("distilled(epochs=1)")[1].params, "epochs": 1}
    source, students = bench.source, bench.variants.students

    def run():
        teacher = as_tf_keras(source.model, source.kind, source.name)
        return distill._distill(teacher, bench.dataset.train, params, lambda _: None, students)

    (first, stats1), (second, stats2) = run(), run()
    assert stats1 == stats2
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_student_registered_in_conftest_is_usable(suite, pytester):
    pytester.makeconftest(
        """
import tf_keras

def build(input_shape, num_classes):
    return tf_keras.Sequential([
        tf_keras.layers.Input(input_shape), tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(16, activation="relu"), tf_keras.layers.Dense(num_classes),
    ])

def tfopt_register_variants(registry):
    registry.students.register("my_student", build)
"""
    )
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("distilled(student='my_student',epochs=1)")
@pytest.mark.max_size_kb(12)
def test_small(optimized_model):
    assert optimized_model.artifact.metadata["stages"][0]["student"] == "my_student"

@pytest.mark.tfopt_variants("distilled(student='my_student',epochs=1)")
@pytest.mark.max_size_kb(1)
def test_too_small(optimized_model):
    pass
""",
        "-v",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*test_small[[]distilled(student='my_student',epochs=1)-tflite[]] PASSED*",
        "*max_size_kb(1) broken: distilled(epochs=1,student='my_student')+fp32 on tflite*",
    ])


def test_student_with_the_wrong_output_shape_caches_nothing(tmp_path, model_path, data_path, monkeypatch):
    import tf_keras

    monkeypatch.setattr(distill, "STUDENTS", distill.StudentRegistry())  # keep the process-wide registry clean
    template = tf_keras.Sequential([tf_keras.layers.Input((8, 8, 1)), tf_keras.layers.Flatten(),
                                    tf_keras.layers.Dense(5)])
    distill.register_student("five_way", template)  # a model registers as an architecture template
    wb = Workbench(model_path, data_path, cache_dir=tmp_path, threads=1)
    with pytest.raises(ConversionError, match=r"student 'five_way' outputs shape \(None, 5\) but the teacher "
                                              r"digits_cnn outputs \(None, 10\)"):
        wb.build("distilled(student='five_way',epochs=1)")
    assert [f for f in os.listdir(tmp_path) if not f.endswith(".lock")] == []


def test_unlabelled_data_cannot_distill(bench, tmp_path):
    data = Dataset.from_arrays(bench.dataset.train.x, None, x_test=bench.eval_dataset.x)
    wb = Workbench(bench.source.path, data, cache_dir=tmp_path, threads=1)
    with pytest.raises(DatasetError, match="distilled .* no labelled training split"):
        wb.build("distilled(epochs=1)")


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("pqat(sparsity=1.0)", r"pqat\(sparsity=1.0\): sparsity must be in \[0, 1\)"),
        ("pcqat(sparsity=-0.1)", r"pcqat\(sparsity=-0.1\): sparsity must be in \[0, 1\)"),
        ("cqat(clusters=1)", r"cqat\(clusters=1\): clusters must be an integer >= 2"),
        ("pcqat(clusters=2.5)", r"pcqat\(clusters=2.5\): clusters must be an integer >= 2"),
        ("pqat(epochs=0)", "pqat: epochs=0 must be an integer >= 1"),
        ("cqat(qat_epochs=0)", "cqat: qat_epochs=0 must be an integer >= 1"),
        ("distilled(temperature=0)", r"distilled\(temperature=0\): temperature must be a number > 0"),
        ("distilled(alpha=1.5)", r"distilled\(alpha=1.5\): alpha .* must be in \[0, 1\]"),
        ("distilled(epochs=0)", "distilled: epochs=0 must be an integer >= 1"),
        ("distilled(student='nobody')", r"unknown student; registered students are .*tiny_mlp"),
        ("distilled(students='tiny_mlp')", "has no parameter 'students'"),
    ],
)
def test_bad_parameters_are_usage_errors(bench, variant, message):
    with pytest.raises(UsageError, match=message):
        bench.build(variant)
