"""TFLiteRunner falls back to the builtin kernels when LiteRT's XNNPACK delegate refuses a graph.

No mocks: the trigger is a real full-int8 model converted by ``tf.lite.TFLiteConverter``.

The model is ``y = x0 - x1`` (a one-unit matmul with weights ``[1, -1]``), calibrated on
samples with ``|x| <= 1000`` but ``x0 - x1`` within +-0.001. The converter then gives the
FULLY_CONNECTED an input scale of ~7.8, a weight scale of ~0.0079 and an output scale of
~7.9e-6, i.e. a requantization scale ``in * w / out`` of ~7800. LiteRT's builtin int8 kernel
runs it; XNNPACK's ``allocate_tensors()`` raises "failed to create XNNPACK runtime" (in
ai-edge-litert 2.3.0). The likely cause is XNNPACK's limit on requantization scales (below 256).
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_tfopt import tfenv

# The converter warns that a float-input model has no input statistics; irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


def _calibration() -> np.ndarray:
    a = np.linspace(-1000.0, 1000.0, 16, dtype=np.float32)
    b = a + np.float32(1e-3) * np.sign(np.sin(np.arange(16, dtype=np.float32)))
    return np.stack([a, b], axis=1).astype(np.float32)


def _int8_model(calibration: np.ndarray) -> bytes:
    tf = tfenv.tensorflow()
    weights = tf.constant([[1.0], [-1.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def difference(x):
        return tf.matmul(x, weights)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([difference.get_concrete_function()], difference)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


@pytest.fixture(scope="module")
def refused_model() -> bytes:
    """Full-int8 model whose FULLY_CONNECTED requantization scale (~7800) XNNPACK refuses."""
    return _int8_model(_calibration())


@pytest.fixture(scope="module")
def accepted_model() -> bytes:
    """The same graph calibrated on ordinary data: XNNPACK takes it."""
    grid = np.linspace(-1.0, 1.0, 5, dtype=np.float32)
    return _int8_model(np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2))


def test_premise_plain_interpreter_fails_on_xnnpack(refused_model):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with pytest.raises(RuntimeError, match="failed to create XNNPACK runtime"):
        interp = Interpreter(model_content=refused_model, num_threads=1)
        interp.allocate_tensors()

    # The builtin kernels run the very same flatbuffer.
    builtin = Interpreter(
        model_content=refused_model,
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    builtin.allocate_tensors()


def test_runner_falls_back_to_builtin_kernels(refused_model):
    from pytest_tfopt.backends.tflite import TFLiteRunner

    runner = TFLiteRunner(refused_model, threads=1)

    assert runner.info["delegate"] == "builtin"
    assert "XNNPACK" in runner.info["xnnpack_fallback"]
    assert runner.input_shape == (2,)

    x = _calibration()[:7]
    y = runner.predict(x)
    assert y.shape == (7, 1)
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    # The output scale is ~7.9e-6 over an int8 range, so results stay within ~0.001 of 0.
    assert np.all(np.abs(y) <= 2e-3)


def test_runner_keeps_xnnpack_when_it_accepts_the_graph(accepted_model):
    from pytest_tfopt.backends.tflite import TFLiteRunner

    runner = TFLiteRunner(accepted_model, threads=1)

    assert runner.info["delegate"] == "XNNPACK"
    assert "xnnpack_fallback" not in runner.info
    x = np.random.default_rng(1).uniform(-1.0, 1.0, (5, 2)).astype(np.float32)
    y = runner.predict(x)
    assert y.shape == (5, 1)
    np.testing.assert_allclose(y[:, 0], x[:, 0] - x[:, 1], atol=0.05)
