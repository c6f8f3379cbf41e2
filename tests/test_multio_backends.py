"""Named inputs and outputs, integer ids and free axes on the tf, xla, onnxruntime and openvino backends.

Three small in-memory Keras 3 models, each shared by one module-scoped :class:`Workbench` (one cache):

* ``multitask``: dict inputs ``ids`` (3 int32 ids → Embedding) and ``features`` (5 floats), dict outputs
  ``risk`` (softmax over 2) and ``progression`` (Dense(1));
* ``fcn``: fully convolutional on ``Input((None, None, 3))`` with two list outputs ``gray`` and ``edges``,
  calibrated at 32x32 and run at 48x40;
* the multitask model saved as a SavedModel whose only signature is ``predict`` (no ``serving_default``).

Every variant's outputs are compared with the Keras model's own, by output name.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from pytest_tfopt import BackendUnavailable, Dataset, DatasetError, Workbench
from pytest_tfopt.models import load_model

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

# backend -> precisions it builds (others are covered by the one-input suites)
PRECISIONS = {
    "tf": ("fp32", "bf16"),
    "xla": ("fp32",),
    "onnxruntime": ("fp32", "float16", "int8"),
    "openvino": ("fp32", "float16", "int8"),
}
CASES = [(backend, variant) for backend, variants in PRECISIONS.items() for variant in variants]
FP32_ATOL = 1e-4
HALF_ATOL = {"bf16": 3e-2, "float16": 1e-2}  # absolute, on outputs of magnitude ~1
N_SAMPLES, N_IDS = 160, 20
CALIBRATION_HW, RUN_HW = (32, 32), (48, 40)


def runnable(wb: Workbench, variant: str, backend: str):
    """``variant`` on ``backend``, skipping (with the backend's reason) where this machine cannot run it."""
    try:
        return wb.runnable(variant, backend)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def check_close(got: np.ndarray, want: np.ndarray, variant: str, what: str) -> float:
    """Assert ``got`` is ``want`` within the precision's tolerance; returns the max |diff|."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, Keras gives {want.shape}"
    diff = float(np.abs(got.astype(np.float64) - want).max())
    if variant == "fp32":
        assert diff <= FP32_ATOL, f"{what}: max |diff| {diff:.3g} > {FP32_ATOL}"
    elif variant in HALF_ATOL:
        assert diff <= HALF_ATOL[variant], f"{what}: max |diff| {diff:.3g} > {HALF_ATOL[variant]}"
    else:  # int8: the same function, coarsely
        assert correlation(got, want) > 0.9, f"{what}: correlation {correlation(got, want):.3f} with Keras"
    return diff


# ---- multitask: dict inputs (int ids + floats), dict outputs ----------------------------------------
def build_multitask():
    keras.utils.set_random_seed(0)
    ids = keras.Input((3,), dtype="int32", name="ids")
    features = keras.Input((5,), name="features")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(N_IDS, 4)(ids))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([embedded, features]))
    risk = keras.layers.Dense(2, activation="softmax", name="risk")(hidden)
    progression = keras.layers.Dense(1, name="progression")(hidden)
    return keras.Model({"ids": ids, "features": features}, {"risk": risk, "progression": progression},
                       name="multitask")


@pytest.fixture(scope="module", autouse=True)
def _runtimes_loaded_once(preloaded_runtimes):
    """TensorFlow, OpenVINO and NNCF's lazily imported backends loaded for the session (see conftest)."""


@pytest.fixture(scope="module")
def multitask():
    return build_multitask()


@pytest.fixture(scope="module")
def tabular():
    rng = np.random.default_rng(0)
    return {"ids": rng.integers(0, N_IDS, (N_SAMPLES, 3)).astype(np.int32),
            "features": rng.normal(size=(N_SAMPLES, 5)).astype(np.float32)}


@pytest.fixture(scope="module")
def tabular_reference(multitask, tabular):
    return {k: np.asarray(v) for k, v in multitask(tabular, training=False).items()}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("multio-cache")


@pytest.fixture(scope="module")
def multitask_wb(multitask, tabular, tabular_reference, cache_dir):
    labels = {"risk": tabular_reference["risk"].argmax(axis=1)}
    return Workbench(multitask, Dataset(tabular, labels), cache_dir=cache_dir, threads=1, calibration_size=64)


@pytest.mark.parametrize(("backend", "variant"), CASES)
def test_dict_inputs_and_outputs_match_keras(multitask_wb, tabular, tabular_reference, backend, variant):
    rm = runnable(multitask_wb, variant, backend)
    assert rm.runner.signature.input("ids").dtype == "int32", "integer ids must be fed as integers"
    assert rm.runner.signature.input("features").dtype == "float32"
    out = rm.predict(tabular)
    assert isinstance(out, dict) and sorted(out) == ["progression", "risk"]
    check_close(out["progression"], tabular_reference["progression"], variant, f"{variant} on {backend}: progression")
    check_close(out["risk"], tabular_reference["risk"], variant, f"{variant} on {backend}: risk")
    agreement = float((out["risk"].argmax(1) == tabular_reference["risk"].argmax(1)).mean())
    assert agreement >= (0.99 if variant == "fp32" else 0.9), f"{variant} on {backend}: risk top-1 agreement {agreement}"


@pytest.mark.parametrize("backend", list(PRECISIONS))
def test_ids_given_as_whole_floats_are_cast_and_one_sample_runs(multitask_wb, tabular, backend):
    rm = runnable(multitask_wb, "fp32", backend)
    as_ints = rm.predict(tabular)
    as_floats = rm.predict({**tabular, "ids": tabular["ids"].astype(np.float64)})
    np.testing.assert_array_equal(as_floats["risk"], as_ints["risk"])
    one = rm.predict({k: v[3] for k, v in tabular.items()})  # one sample, no batch axis
    assert one["risk"].shape == (1, 2) and one["progression"].shape == (1, 1)
    np.testing.assert_allclose(one["risk"][0], as_ints["risk"][3], atol=FP32_ATOL)
    rm.runner.prepare({k: v[:4] for k, v in tabular.items()})()  # loads a mapping and runs once
    with pytest.raises(DatasetError, match="missing ids"):
        rm.runner.prepare({"features": tabular["features"][:4]})


@pytest.mark.parametrize("backend", list(PRECISIONS))
def test_a_missing_input_is_a_one_line_dataset_error(multitask_wb, tabular, backend):
    rm = runnable(multitask_wb, "fp32", backend)
    with pytest.raises(DatasetError) as info:
        rm.predict({"features": tabular["features"]})
    message = str(info.value)
    assert "\n" not in message and "missing ids" in message and "ids (3,) int32" in message, message
    with pytest.raises(DatasetError, match="features"):  # a wrong shape names the input too
        rm.predict({**tabular, "features": tabular["features"][:, :4]})


def test_onnxruntime_int8_leaves_the_integer_input_alone(multitask_wb):
    onnx = pytest.importorskip("onnx")
    rm = runnable(multitask_wb, "int8", "onnxruntime")
    proto = onnx.load_from_string(rm.artifact.content)
    inputs = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    assert inputs["ids"] == onnx.TensorProto.INT32
    ops = {n.op_type for n in proto.graph.node}
    assert "QuantizeLinear" in ops, "the float path is quantized"
    on_ids = [n.op_type for n in proto.graph.node if "ids" in n.input]
    assert on_ids and not {"QuantizeLinear", "DequantizeLinear"} & set(on_ids), on_ids


def test_openvino_int8_leaves_the_integer_input_alone(multitask_wb):
    rm = runnable(multitask_wb, "int8", "openvino")
    with zipfile.ZipFile(io.BytesIO(rm.artifact.content)) as zf:
        xml = zf.read("model.xml").decode()
    assert "FakeQuantize" in xml, "the float path is quantized"
    assert rm.runner.signature.input("ids").dtype == "int32"


# ---- fcn: free height/width, two list outputs ----------------------------------------------------
@pytest.fixture(scope="module")
def fcn():
    keras.utils.set_random_seed(1)
    image = keras.Input((None, None, 3), name="image")
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    gray = keras.layers.Conv2D(1, 1, name="gray")(hidden)
    edges = keras.layers.Conv2D(2, 3, padding="same", name="edges")(hidden)
    return keras.Model(image, [gray, edges], name="fcn")


@pytest.fixture(scope="module")
def fcn_wb(fcn, cache_dir):
    images = np.random.default_rng(1).random((24, *CALIBRATION_HW, 3), dtype=np.float32)
    return Workbench(fcn, Dataset(images), cache_dir=cache_dir, threads=1, calibration_size=16)


@pytest.mark.parametrize(("backend", "variant"), CASES)
def test_fcn_runs_at_another_size_than_it_was_calibrated_at(fcn, fcn_wb, backend, variant):
    images = np.random.default_rng(2).random((3, *RUN_HW, 3), dtype=np.float32)
    gray, edges = (np.asarray(y) for y in fcn(images, training=False))
    rm = runnable(fcn_wb, variant, backend)
    assert rm.runner.signature.inputs[0].shape == (None, None, 3)
    out = rm.predict(images)
    assert isinstance(out, dict) and sorted(out) == ["edges", "gray"]
    check_close(out["gray"], gray, variant, f"{variant} on {backend}: gray")
    check_close(out["edges"], edges, variant, f"{variant} on {backend}: edges")


class ExtraLeadingAxis:
    """An ``InferenceSession`` stand-in returning output ``name`` with a spurious leading axis of 1."""

    def __init__(self, session, name):
        self._session, self._name = session, name

    def __getattr__(self, attr):
        return getattr(self._session, attr)

    def run(self, names, feed):
        return [out[np.newaxis] if n.split(":")[0] == self._name else out
                for n, out in zip(names, self._session.run(names, feed), strict=True)]


def test_onnxruntime_output_of_the_wrong_rank_is_a_one_line_conversion_error(fcn_wb, monkeypatch):
    from pytest_tfopt.errors import ConversionError

    runner = runnable(fcn_wb, "fp32", "onnxruntime").runner
    images = np.random.default_rng(4).random((3, *RUN_HW, 3), dtype=np.float32)
    assert runner.predict(images)["gray"].shape == (3, *RUN_HW, 1)
    monkeypatch.setattr(runner, "_session", ExtraLeadingAxis(runner._session, "gray"))
    with pytest.raises(ConversionError) as info:
        runner.predict(images)
    message = str(info.value)
    assert "\n" not in message and "output 'gray'" in message
    assert f"shape (1, 3, {RUN_HW[0]}, {RUN_HW[1]}, 1)" in message and "declares (3, ?, ?, 1)" in message


# ---- a SavedModel whose only signature is "predict" ----------------------------------------------
@pytest.fixture(scope="module")
def predict_savedmodel(multitask, tmp_path_factory):
    specs = {"ids": tf.TensorSpec((None, 3), tf.int32, name="ids"),
             "features": tf.TensorSpec((None, 5), tf.float32, name="features")}

    @tf.function(input_signature=[specs["ids"], specs["features"]])
    def serve(ids, features):
        return multitask({"ids": ids, "features": features}, training=False)

    holder = tf.Module()
    holder.model_variables = [v.value for v in multitask.variables]  # the tf.Variables Keras 3 variables wrap
    path = tmp_path_factory.mktemp("savedmodel") / "multitask_predict"
    tf.saved_model.save(holder, str(path), signatures={"predict": serve.get_concrete_function()})
    return path


@pytest.fixture(scope="module")
def savedmodel_wb(predict_savedmodel, tabular, cache_dir):
    source = load_model(str(predict_savedmodel), signature="predict")
    return Workbench(source, Dataset(tabular), cache_dir=cache_dir, threads=1)


@pytest.mark.parametrize("backend", list(PRECISIONS))
def test_savedmodel_with_a_non_default_signature(predict_savedmodel, savedmodel_wb, tabular, tabular_reference, backend):
    assert sorted(tf.saved_model.load(str(predict_savedmodel)).signatures) == ["predict"]
    assert savedmodel_wb.source.signature_key == "predict"
    rm = runnable(savedmodel_wb, "fp32", backend)
    out = rm.predict(tabular)
    assert isinstance(out, dict) and sorted(out) == ["progression", "risk"]
    for name in ("risk", "progression"):
        check_close(out[name], tabular_reference[name], "fp32", f"fp32 on {backend} from SavedModel: {name}")
    if backend in ("tf", "xla"):
        assert "re-saved" in rm.artifact.metadata["settings"]["export"]
