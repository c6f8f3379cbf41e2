"""``load_model`` / ``SourceModel``: every model kind loads with the right Keras, damaged input fails clearly.

Real TensorFlow, Keras 3, tf_keras and LiteRT; the models are tiny and never trained.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pytest_tfopt import DatasetError, ModelLoadError, SourceModel, load_model
from pytest_tfopt.models import check_input_shape

pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning")

TFLITE_ID = b"TFL3"


def one_line(excinfo: pytest.ExceptionInfo, exc_type: type[Exception], *words: str) -> str:
    """The error is exactly ``exc_type``, its message one line holding every word (problem and remedy)."""
    assert excinfo.type is exc_type, f"{excinfo.type.__name__}: {excinfo.value}"
    message = str(excinfo.value)
    assert message and "\n" not in message and message == message.strip(), repr(message)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# ---- shared models and files (built once per module) -------------------------------------------------
@pytest.fixture(scope="module")
def tf():
    from pytest_tfopt import tfenv

    return tfenv.tensorflow()


@pytest.fixture(scope="module")
def keras3(tf):
    import keras

    return keras


@pytest.fixture(scope="module")
def tf_keras(tf):
    import tf_keras

    return tf_keras


@pytest.fixture(scope="module")
def k3_model(keras3):
    """A Keras 3 model (4,) -> (2,)."""
    keras3.utils.set_random_seed(0)
    inp = keras3.Input((4,), name="features")
    hidden = keras3.layers.Dense(3, activation="relu")(inp)
    return keras3.Model(inp, keras3.layers.Dense(2)(hidden), name="tiny_k3")


@pytest.fixture(scope="module")
def tfk_model(tf_keras):
    """A tf_keras (Keras 2) model (4,) -> (2,)."""
    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((4,), name="features")
    hidden = tf_keras.layers.Dense(3, activation="relu")(inp)
    return tf_keras.Model(inp, tf_keras.layers.Dense(2)(hidden), name="tiny_tfk")


@pytest.fixture(scope="module")
def sample_x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory, k3_model, tfk_model, tf) -> dict[str, Path]:
    """Every file kind, written once from the two tiny models."""
    d = tmp_path_factory.mktemp("models")
    out = {
        "k3_keras": d / "k3.keras",
        "k3_h5": d / "k3.h5",
        "tfk_keras": d / "tfk.keras",
        "saved_model": d / "exported",
        "tflite": d / "tiny.tflite",
    }
    k3_model.save(out["k3_keras"])
    k3_model.save(out["k3_h5"])
    tfk_model.save(out["tfk_keras"])
    k3_model.export(str(out["saved_model"]), verbose=False)
    out["tflite"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(k3_model).convert())
    return out


@pytest.fixture(scope="module")
def digits(model_path) -> SourceModel:
    return load_model(model_path)


def outputs(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


# ---- the shipped tf_keras HDF5 model ----------------------------------------------------------------
def test_shipped_h5_loads_with_tf_keras(digits, model_path, tf_keras):
    assert digits.kind == "tf_keras"
    assert isinstance(digits.model, tf_keras.Model)
    assert digits.input_shape == (8, 8, 1)
    assert digits.input_dtype == "float32"
    assert digits.name == "digits_cnn.h5"
    assert digits.path == str(model_path)
    assert len(digits.hash) == 64 and int(digits.hash, 16) >= 0


def test_shipped_h5_hash_is_stable_and_tracks_weights(digits, model_path, tf_keras):
    assert load_model(model_path).hash == digits.hash
    copy = tf_keras.models.load_model(model_path, compile=False)
    assert load_model(copy).hash == digits.hash  # in memory: same architecture and weights, same hash
    weights = copy.get_weights()
    weights[0].flat[0] += 1e-3
    copy.set_weights(weights)
    changed = load_model(copy).hash
    assert changed != digits.hash
    assert load_model(copy).hash == changed


@pytest.mark.parametrize("name", ["copy.hdf5", "COPY.H5"])
def test_h5_suffix_variants(digits, model_path, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(model_path.read_bytes())
    source = load_model(path)
    assert source.kind == "tf_keras" and source.name == name and source.hash == digits.hash


def test_load_model_passes_a_source_model_through(digits):
    assert load_model(digits) is digits


def test_path_objects_and_strings_load_alike(digits, model_path):
    assert load_model(str(model_path)).hash == load_model(Path(model_path)).hash == digits.hash


# ---- Keras 3 and tf_keras files -----------------------------------------------------------------------
def test_keras3_dot_keras_loads_with_keras3(files, k3_model, keras3, sample_x):
    source = load_model(files["k3_keras"])
    assert source.kind == "keras3"
    assert isinstance(source.model, keras3.Model)
    assert source.input_shape == (4,)
    assert source.input_dtype == "float32"
    assert source.name == "k3.keras"
    np.testing.assert_allclose(outputs(source.model, sample_x), outputs(k3_model, sample_x), rtol=1e-6)


def test_tf_keras_dot_keras_loads_with_tf_keras(files, tfk_model, tf_keras, sample_x):
    source = load_model(files["tfk_keras"])
    assert source.kind == "tf_keras"
    assert isinstance(source.model, tf_keras.Model)
    assert source.input_shape == (4,)
    np.testing.assert_allclose(outputs(source.model, sample_x), outputs(tfk_model, sample_x), rtol=1e-6)


def test_keras3_h5_loads_with_keras3(files, k3_model, keras3, sample_x):
    source = load_model(files["k3_h5"])
    assert source.kind == "keras3"
    assert isinstance(source.model, keras3.Model)
    assert source.input_shape == (4,)
    np.testing.assert_allclose(outputs(source.model, sample_x), outputs(k3_model, sample_x), rtol=1e-6)


def test_file_hash_is_stable(files):
    for key in ("k3_keras", "k3_h5", "tfk_keras", "saved_model", "tflite"):
        assert load_model(files[key]).hash == load_model(files[key]).hash, key


# ---- SavedModel -----------------------------------------------------------------------------------------
def test_saved_model_directory(files):
    source = load_model(files["saved_model"])
    assert source.kind == "saved_model"
    assert source.name == "exported"
    assert source.input_shape == (4,)
    assert source.input_dtype == "float32"
    content = source.converter().convert()
    assert isinstance(content, bytes) and content[4:8] == TFLITE_ID


def test_tf_keras_saved_model_directory(tfk_model, tmp_path):
    path = tmp_path / "tfk_saved"
    tfk_model.save(path, save_format="tf")
    source = load_model(path)
    assert source.kind == "saved_model"
    assert source.input_shape == (4,)
    assert source.converter().convert()[4:8] == TFLITE_ID


# ---- in-memory models -------------------------------------------------------------------------------
def test_in_memory_keras3_model(k3_model):
    source = load_model(k3_model)
    assert source.kind == "keras3"
    assert source.model is k3_model
    assert source.path is None
    assert source.name == "tiny_k3"
    assert source.input_shape == (4,)
    assert source.input_dtype == "float32"
    assert source.converter().convert()[4:8] == TFLITE_ID


def test_in_memory_tf_keras_model(tfk_model):
    source = load_model(tfk_model)
    assert source.kind == "tf_keras"
    assert source.model is tfk_model
    assert source.name == "tiny_tfk"
    assert source.input_shape == (4,)
    assert source.input_dtype == "float32"
    assert source.converter().convert()[4:8] == TFLITE_ID


def test_in_memory_keras3_hash_tracks_weights(k3_model, keras3):
    copy = keras3.models.clone_model(k3_model)
    copy.set_weights(k3_model.get_weights())
    before = load_model(copy).hash
    assert load_model(copy).hash == before
    weights = copy.get_weights()
    weights[-1][0] += 0.5
    copy.set_weights(weights)
    assert load_model(copy).hash != before


def _scale_model(K, factor: float):
    """A model with a custom layer whose constructor takes an array (no get_config: to_json fails)."""

    class Scale(K.layers.Layer):
        def __init__(self, factors, **kwargs):
            super().__init__(**kwargs)
            self.factors = factors

        def call(self, x):
            return x * self.factors

    inp = K.Input((4,), name="features")
    return K.Model(inp, Scale(np.full(4, factor, np.float32), name="scale")(inp), name="scaled")


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_in_memory_model_with_unserializable_custom_layer(request, flavour):
    K = request.getfixturevalue(flavour)
    with pytest.raises(NotImplementedError):
        _scale_model(K, 1.0).to_json()  # the case under test: no config to hash
    source = load_model(_scale_model(K, 1.0))
    assert source.kind == flavour and source.input_shape == (4,)
    assert load_model(source.model).hash == source.hash
    assert load_model(_scale_model(K, 1.0)).hash == source.hash  # same build, same hash
    assert load_model(_scale_model(K, 2.0)).hash != source.hash  # the constant is part of the identity
    assert source.converter().convert()[4:8] == TFLITE_ID


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_subclassed_model_without_inputs(request, flavour):
    K = request.getfixturevalue(flavour)

    class Sub(K.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.dense = K.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Sub()
    model(np.zeros((1, 4), np.float32))  # built, yet no symbolic inputs
    if flavour == "keras3":  # Keras 3 records the traced call's input shape: taken from there
        traced = load_model(model)
        assert traced.input_shape == (4,) and traced.signature.output_names == ["output_0"]
        assert traced.converter().convert()[4:8] == TFLITE_ID
    else:
        with pytest.raises(ModelLoadError) as excinfo:
            load_model(model)
        one_line(excinfo, ModelLoadError, "'sub'", "has no defined inputs", "wrap it as keras.Model(inp, model(inp))")
    inp = K.Input((4,))
    assert load_model(K.Model(inp, model(inp))).input_shape == (4,)  # the remedy works


def test_in_memory_image_model_keeps_free_axes(keras3):
    inp = keras3.Input((None, 3))
    source = load_model(keras3.Model(inp, keras3.layers.Dense(1)(inp)))
    assert source.input_shape == (None, 3)


# ---- .tflite ------------------------------------------------------------------------------------------
def test_tflite_file(files):
    source = load_model(files["tflite"])
    content = files["tflite"].read_bytes()
    assert source.kind == "tflite"
    assert source.name == "tiny.tflite"
    assert source.input_shape == (4,)
    assert source.input_dtype == "float32"
    assert source.content == content
    assert source.hash == hashlib.sha256(content).hexdigest()


def test_tflite_cannot_be_converted_again(files):
    source = load_model(files["tflite"])
    with pytest.raises(ModelLoadError) as excinfo:
        source.converter()
    one_line(excinfo, ModelLoadError, "tiny.tflite", "already a .tflite file", "cannot be converted again",
             "point tfopt_model at the Keras or SavedModel source")


# ---- bad input ------------------------------------------------------------------------------------------
def _missing(tmp_path, files):
    return tmp_path / "nope.keras"


def _empty(tmp_path, files):
    path = tmp_path / "empty.keras"
    path.write_bytes(b"")
    return path


def _truncated(tmp_path, files):
    data = files["k3_keras"].read_bytes()
    path = tmp_path / "half.keras"
    path.write_bytes(data[: len(data) // 2])
    return path


def _random(suffix):
    def make(tmp_path, files):
        path = tmp_path / f"random{suffix}"
        path.write_bytes(np.random.default_rng(7).bytes(4096))
        return path

    return make


def _plain_dir(tmp_path, files):
    path = tmp_path / "not_a_saved_model"
    path.mkdir()
    (path / "variables").mkdir()
    return path


def _broken_saved_model(tmp_path, files):
    path = tmp_path / "broken_saved_model"
    path.mkdir()
    (path / "saved_model.pb").write_bytes(np.random.default_rng(3).bytes(512))
    return path


def _zip_without_metadata(tmp_path, files):
    import zipfile

    path = tmp_path / "plain_zip.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not a Keras archive")
    return path


def _metadata_not_an_object(tmp_path, files):
    import zipfile

    path = tmp_path / "odd_meta.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", "[3, 1]")
    return path


def _onnx(tmp_path, files):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07onnx-ish")
    return path


BAD_PATHS = [
    ("missing", _missing, ["nope.keras", "does not exist", "check tfopt_model"]),
    ("empty", _empty, ["empty.keras", "is empty", "re-save or re-download"]),
    ("truncated-keras", _truncated, ["half.keras", "damaged or unreadable", "not a zip file", "re-save it"]),
    ("random-keras", _random(".keras"), ["random.keras", "damaged or unreadable", "not a zip file", "re-save it"]),
    ("random-h5", _random(".h5"), ["random.h5", "damaged or unreadable", "not an HDF5 file", "re-save it"]),
    ("random-tflite", _random(".tflite"), ["random.tflite", "damaged or unreadable", "not a TFLite flatbuffer",
                                           "re-save it"]),
    ("zip-without-metadata", _zip_without_metadata, ["plain_zip.keras", "damaged or unreadable", "metadata.json",
                                                     "re-save it"]),
    ("metadata-not-an-object", _metadata_not_an_object, ["odd_meta.keras", "damaged or unreadable",
                                                         "metadata.json is not a JSON object", "re-save it"]),
    ("dir-without-pb", _plain_dir, ["not_a_saved_model", "is not a SavedModel (no saved_model.pb)",
                                    "export it with model.export(path)"]),
    ("broken-saved-model", _broken_saved_model, ["broken_saved_model", "damaged or unreadable", "re-save it"]),
    ("onnx", _onnx, ["model.onnx", "unknown kind", "give a .keras or .h5 file, a SavedModel directory or a .tflite"]),
]


@pytest.mark.parametrize(("make", "words"), [c[1:] for c in BAD_PATHS], ids=[c[0] for c in BAD_PATHS])
def test_bad_path_is_a_one_line_model_load_error(tmp_path, files, make, words):
    path = make(tmp_path, files)
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(path)
    one_line(excinfo, ModelLoadError, *words)


def test_saved_model_without_serving_signature(tf, tmp_path):
    path = tmp_path / "no_signature"
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(path))
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(path)
    one_line(excinfo, ModelLoadError, "no_signature", "has no 'serving_default' signature", "export it with model.export")


@pytest.mark.parametrize("value", [42, b"not a path object", [1, 2]], ids=["int", "bytes", "list"])
def test_non_model_object(value):
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(value)
    one_line(excinfo, ModelLoadError, f"cannot use a builtins.{type(value).__name__} as a model",
             "give a Keras model, or a path to a .keras/.h5 file")


def test_keras_layer_is_not_a_model(keras3):
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(keras3.layers.Dense(2))
    one_line(excinfo, ModelLoadError, "as a model", "give a Keras model")


def test_model_without_inputs(keras3):
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(keras3.Sequential([keras3.layers.Dense(2)], name="unbuilt"))
    one_line(excinfo, ModelLoadError, "'unbuilt'", "has no defined inputs", "build it with an Input layer")


@pytest.fixture(scope="module")
def two_input_model(keras3):
    a, b = keras3.Input((4,)), keras3.Input((3,))
    joined = keras3.layers.Concatenate()([a, b])
    return keras3.Model([a, b], keras3.layers.Dense(2)(joined), name="two_in")


def test_model_with_two_inputs_in_memory(two_input_model):
    source = load_model(two_input_model)
    names = source.signature.input_names
    assert len(names) == 2 and len(set(names)) == 2
    assert [t.shape for t in source.signature.inputs] == [(4,), (3,)]
    assert source.signature.output_names and len(source.signature.outputs) == 1


def test_model_with_two_inputs_from_file(two_input_model, tmp_path):
    path = tmp_path / "two.keras"
    two_input_model.save(path)
    source = load_model(path)
    assert [t.shape for t in source.signature.inputs] == [(4,), (3,)]
    assert source.signature.input_names == load_model(two_input_model).signature.input_names


LAMBDA_WORDS = ["contains Python code (a Lambda layer)", "safe mode refuses", "safe_mode=False",
                "return the model from the tfopt_model fixture"]


def test_keras3_lambda_is_refused_in_safe_mode(keras3, tmp_path):
    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Lambda(lambda t: t * 2.0)(inp))
    for name in ("lambda.keras", "lambda.h5"):
        model.save(tmp_path / name)
        with pytest.raises(ModelLoadError) as excinfo:
            load_model(tmp_path / name)
        one_line(excinfo, ModelLoadError, name, *LAMBDA_WORDS)


def test_tf_keras_lambda_is_refused_in_safe_mode(tf_keras, tmp_path):
    """tf_keras ignores safe_mode for .h5 files; the loader must still refuse the marshalled lambda."""
    inp = tf_keras.Input((4,))
    model = tf_keras.Model(inp, tf_keras.layers.Lambda(lambda t: t * 2.0)(inp))
    for name in ("tfk_lambda.keras", "tfk_lambda.h5"):
        model.save(tmp_path / name)
        with pytest.raises(ModelLoadError) as excinfo:
            load_model(tmp_path / name)
        one_line(excinfo, ModelLoadError, name, *LAMBDA_WORDS)


def test_in_memory_lambda_model_is_accepted(keras3):
    """The remedy the message gives: a model the user loaded (or built) themselves is used as is."""
    inp = keras3.Input((4,))
    source = load_model(keras3.Model(inp, keras3.layers.Lambda(lambda t: t * 2.0)(inp)))
    assert source.kind == "keras3" and source.input_shape == (4,)


def test_tf_keras_h5_without_lambda_still_loads(tf_keras, tmp_path, tfk_model):
    path = tmp_path / "plain.h5"
    tfk_model.save(path)
    assert load_model(path).kind == "tf_keras"


# ---- input shape checks -------------------------------------------------------------------------------
def test_check_inputs_accepts_matching_data(digits):
    assert digits.check_inputs(np.zeros((3, 8, 8, 1), np.float32)) is None


@pytest.mark.parametrize(
    ("shape", "got"),
    [((2, 8, 8, 3), "(8, 8, 3)"), ((2, 10), "(10,)"), ((2, 8, 8, 1, 2), "(8, 8, 1, 2)"), ((2,), "()")],
    ids=["feature-size", "rank-and-size", "extra-axis", "no-sample-axes"],
)
def test_check_inputs_wrong_shape_names_both_shapes(digits, shape, got):
    with pytest.raises(DatasetError) as excinfo:
        digits.check_inputs(np.zeros(shape, np.float32), "calibration data")
    message = one_line(excinfo, DatasetError, f"calibration data samples have shape {got}",
                       "but digits_cnn.h5 expects (8, 8, 1)", "reshape the data", "or use the matching model")
    assert "x.reshape" not in message  # sizes differ: no reshape would fit


@pytest.mark.parametrize("shape", [(2, 64), (2, 8, 8)], ids=["flat", "no-channel-axis"])
def test_check_inputs_gives_reshape_hint_when_sizes_match(digits, shape):
    x = np.zeros(shape, np.float32)
    with pytest.raises(DatasetError) as excinfo:
        digits.check_inputs(x)
    one_line(excinfo, DatasetError, f"data set samples have shape {tuple(shape[1:])}", "expects (8, 8, 1)",
             "(same size: x.reshape(-1, 8, 8, 1) would fit)")
    digits.check_inputs(x.reshape(-1, 8, 8, 1))  # the hint is right


def test_check_input_shape_free_axes():
    check_input_shape((None, 4), np.zeros((2, 7, 4)), "input", "m")  # None matches any length
    with pytest.raises(DatasetError) as excinfo:
        check_input_shape((None, 4), np.zeros((2, 4)), "input", "m")
    message = one_line(excinfo, DatasetError, "input samples have shape (4,) but m expects (?, 4)", "reshape the data")
    assert "x.reshape" not in message  # no single reshape fits a free axis


def test_check_input_shape_one_axis_is_shown_as_a_tuple():
    with pytest.raises(DatasetError) as excinfo:
        check_input_shape((4,), np.zeros((2, 3)), "input", "m")
    one_line(excinfo, DatasetError, "shape (3,) but m expects (4,)")



def test_keras3_model_converts_to_a_tflite_model_that_computes_the_same(tmp_path):
    """Regression: a Keras 3 model passed as the converter's trackable object gave all-NaN outputs."""
    import keras

    from pytest_tfopt import Workbench

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    wb = Workbench(model, (x, np.zeros(16, np.int64)), cache_dir=tmp_path, threads=1)
    out = wb.runnable("fp32").predict(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.asarray(model(x)), atol=1e-5)
