"""Clean failure output: native libraries' prints and warnings stay out of a tfopt test's report."""

from __future__ import annotations

import os
import warnings

import pytest

from pytest_tfopt import ConversionError, tfenv
from pytest_tfopt.variants import ptq

#: what TensorFlow, absl, the TFLite converter and LiteRT print on their own during an int8 build and run
NOISE = (
    "All log messages before absl::InitializeLog()",  # absl, at TensorFlow's import
    "fully_quantize",  # the converter's C++, straight to fd 2, for every int8 conversion
    "inference_type",
    "oneDNN custom operations",  # TensorFlow C++ INFO at import
    "cudart_stub", "cuInit",  # TensorFlow C++ INFO/ERROR on a machine without CUDA
    "XNNPACK delegate",  # LiteRT's INFO on the first interpreter
    "Captured stderr",
)


def _assert_quiet(lines: list[str]) -> None:
    noisy = [ln for ln in lines if any(n in ln for n in NOISE)]
    assert not noisy, noisy


# ---- the capture itself ------------------------------------------------------------------------


def test_native_output_keeps_fd2_prints(capfd):
    with tfenv.native_output() as log:
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] chatter\nE0000 real trouble\n")
    assert capfd.readouterr().err == ""
    assert "real trouble" in log.text
    assert log.lines() == ["E0000 real trouble"]  # INFO lines are not worth a failure's tail
    with tfenv.native_output() as outer:
        with tfenv.native_output() as inner:
            os.write(2, b"inner\n")
        os.write(2, b"outer\n")
    assert (inner.text, outer.text) == ("inner\n", "outer\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # fd 2 is back where it was


def test_native_output_replays_when_the_call_fails(capfd):
    with pytest.raises(RuntimeError, match="boom"), tfenv.native_output(replay=True):
        os.write(2, b"why it failed\n")
        raise RuntimeError("boom")
    assert "why it failed" in capfd.readouterr().err


def test_native_output_can_be_let_through(capfd, monkeypatch):
    monkeypatch.setenv(tfenv.NATIVE_LOGS_ENV, "1")
    with tfenv.native_output() as log:
        os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n" and log.text == ""


def test_library_warnings_are_dropped_and_others_kept():
    with pytest.warns(UserWarning, match="the user's own") as seen, tfenv.native_output():
        warnings.warn_explicit("Statistics for quantized inputs were expected", UserWarning,
                               "convert.py", 1, module="tensorflow.lite.python.convert")
        warnings.warn_explicit("Property target_ops is deprecated", DeprecationWarning, "lite.py", 2,
                               module="tensorflow.lite.python.lite")
        warnings.warn("the user's own warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["the user's own warning"]


# ---- the converter -----------------------------------------------------------------------------


def test_int8_conversion_prints_nothing_unless_asked(bench, capfd, monkeypatch):
    bench.build("int8(calibration_size=41)")  # a fresh cache key: the converter runs
    assert "fully_quantize" not in capfd.readouterr().err
    monkeypatch.setenv(tfenv.NATIVE_LOGS_ENV, "1")  # the control: the same build, nothing captured
    bench.build("int8(calibration_size=43)")
    assert "fully_quantize: 0, inference_type: 6" in capfd.readouterr().err


class _FailingSource:
    """Just enough of a SourceModel for ``ptq``: its converter prints to fd 2, then fails."""

    kind, name, signature = "keras", "broken_model", None

    def converter(self):
        return self

    def convert(self):
        os.write(2, b"I0000 chatter\nloc(fused['tf.Foo']): error: 'tf.Foo' op is neither a custom op nor a flex op\n"
                    b"Custom ops: Foo\n")
        raise RuntimeError("Could not translate MLIR to FlatBuffer.\nerror: 'tf.Foo' op is unknown")


def test_converter_failure_keeps_its_message_and_a_tail_of_its_log(capfd):
    with pytest.raises(ConversionError) as info:
        ptq._build("fp32")(_FailingSource(), None, {})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("TFLiteConverter could not build fp32 for broken_model: error: 'tf.Foo' op is unknown ")
    assert message.endswith("; converter log: loc(fused['tf.Foo']): error: 'tf.Foo' op is neither a custom op nor "
                            "a flex op | Custom ops: Foo")
    assert capfd.readouterr().err == ""  # in the message, not on stderr


# ---- failing tfopt tests, in a fresh process (fd 2 is real, TensorFlow imports there) -----------

#: a model whose layer computes singular values (TF op ``Svd``): no TFLite builtin, so the converter fails
SVD_CONFTEST = """
import numpy as np
import pytest


@pytest.fixture(scope="session")
def tfopt_model():
    from pytest_tfopt import tfenv

    tf = tfenv.tensorflow()  # TensorFlow imported through tfenv, as pytest-tfopt does (quietly)
    import keras

    class SingularValues(keras.layers.Layer):
        def call(self, x):
            return tf.linalg.svd(x, compute_uv=False)

    inp = keras.Input((4, 4), name="matrix")
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(SingularValues()(inp)), name="svd_model")


@pytest.fixture(scope="session")
def tfopt_dataset():
    return np.random.default_rng(0).random((40, 4, 4), dtype=np.float32), np.arange(40) % 3
"""


def test_failing_tfopt_tests_show_their_failures_and_no_library_noise(suite, pytester):
    pytester.mkpydir("svd")
    pytester.path.joinpath("svd", "conftest.py").write_text(SVD_CONFTEST)
    pytester.path.joinpath("svd", "test_svd.py").write_text(
        "import pytest\n\n\n@pytest.mark.tfopt_variants('int8')\ndef test_unconvertible(optimized_model):\n    pass\n"
    )
    result = suite(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8(calibration_size=37)")
        @pytest.mark.max_size_kb(5)
        def test_small(optimized_model):
            pass
        """,
        subprocess=True,
    )
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines([
        # a real converter failure keeps its message, and the last lines the converter printed
        "*TFLiteConverter could not build int8 for svd_model: *'tf.Svd' op is neither a custom op nor a flex op "
        "(try another variant, or check the model's ops are TFLite builtins); converter log: *Svd*",
    ])
    result.stdout.fnmatch_lines(["max_size_kb(5) broken: int8(calibration_size=37) on tflite: 13.* KB*", "*diagnosis: *"])
    _assert_quiet(result.outlines + result.errlines)
    assert "warnings summary" not in result.stdout.str()
