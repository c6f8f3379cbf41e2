"""A model-optimization regression suite, as a user writes it.

The digits CNN (models/digits_cnn.h5) ships to phones as TFLite. These tests gate
every change on accuracy, size and latency budgets of its optimized variants.
Run:  pytest examples
"""

import numpy as np
import pytest


@pytest.mark.max_accuracy_drop(0.01)
@pytest.mark.max_size_kb(40)
def test_variants_keep_accuracy_and_size(optimized_model):
    """Every shipped variant (ini tfopt_variants) stays within 1 point of fp32 and under 40 KB."""
    assert optimized_model.size_bytes > 0


@pytest.mark.tfopt_variants("int8", "int8_io")
@pytest.mark.max_accuracy_drop(0.01)
@pytest.mark.min_compression_ratio(2.0)
@pytest.mark.max_latency_ms(2.0, percentile=95)
def test_int8_for_mobile(optimized_model):
    """INT8 accuracy within 1% of FP32, p95 latency under 2 ms, at least 2x smaller."""
    assert optimized_model.latency().p95_ms > 0


@pytest.mark.tfopt_variants("int8")
def test_int8_agrees_with_fp32(optimized_model, reference_model, eval_dataset):
    """Label-free check: INT8 picks the same class as FP32 on at least 97% of the test split."""
    ours = optimized_model.predict(eval_dataset.x).argmax(axis=1)
    theirs = reference_model.predict(eval_dataset.x).argmax(axis=1)
    assert np.mean(ours == theirs) >= 0.97


def test_float16_halves_the_model(tfopt_variant):
    """The factory builds any variant on demand."""
    fp32, fp16 = tfopt_variant("fp32"), tfopt_variant("float16")
    assert fp16.size_bytes < 0.65 * fp32.size_bytes


@pytest.mark.tfopt_variants("pruned(sparsity=0.5)+int8")
@pytest.mark.min_sparsity(0.45)
@pytest.mark.min_compression_ratio(3.5, compressed=True)
@pytest.mark.max_accuracy_drop(0.02, confidence=0.95, method="mcnemar")
def test_pruned_for_download(optimized_model):
    """Pruned + INT8 for app downloads: half the weights zero, 3.5x smaller gzipped, and a drop of at most
    2 points that holds at 95 % confidence on the paired test predictions (not just on the point estimate)."""
    assert optimized_model.gzip_size_bytes > 0
