"""Budgets per output of a multi-task model (two named inputs, two named outputs).

``output="name"`` picks the head a budget is about; label-free budgets without it judge every
output and fail on the worst, naming it. Run:  pytest examples
"""

import pytest


@pytest.mark.tfopt_variants("int8", "float16")
@pytest.mark.max_accuracy_drop(0.03, output="risk")  # top-1 of the risk class, at most 3 points worse
@pytest.mark.max_accuracy_drop(0.02, output="progression", metric="mae")  # regression head: MAE at most +0.02
@pytest.mark.min_fidelity(25, metric="snr_db")  # every output within 25 dB SNR of fp32's
@pytest.mark.max_size_kb(40)
def test_both_heads_hold(optimized_model):
    """Each head keeps its own budget; the integer ids input is fed as integers."""
    out = optimized_model.predict(optimized_model.eval_dataset.x)
    assert set(out) == {"risk", "progression"}


@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_latency_ms(2.0, percentile=95)  # one invocation feeds every input
def test_int8_latency(optimized_model):
    assert optimized_model.latency().p95_ms > 0
