"""Several named inputs/outputs in the core: data sets by name, one-line input errors, TFLite by signature name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_tfopt import Dataset, Workbench
from pytest_tfopt.errors import DatasetError, UsageError
from pytest_tfopt.models import load_model
from pytest_tfopt.signature import Signature, TensorInfo

ROOT = Path(__file__).resolve().parent.parent
MULTITASK = ROOT / "models" / "diabetes_multitask.keras"
DIABETES = ROOT / "fixtures" / "diabetes.npz"
SIG = Signature((TensorInfo("ids", (3,), "int32"), TensorInfo("features", (7,), "float32")),
                (TensorInfo("risk", (2,), "float32"), TensorInfo("progression", (1,), "float32")))


def one_line(excinfo: pytest.ExceptionInfo, kind: type, *words: str) -> str:
    text = str(excinfo.value)
    assert excinfo.type is kind, f"{excinfo.type.__name__}: {text}"
    assert "\n" not in text
    for word in words:
        assert word in text
    return text


def test_feed_names_every_input_and_casts_ids():
    feed = SIG.feed({"ids": np.array([[1.0, 2.0, 3.0]]), "features": np.zeros((1, 7))})
    assert feed["ids"].dtype == np.int32 and feed["features"].dtype == np.float32
    one = SIG.feed({"ids": np.array([1, 2, 3]), "features": np.zeros(7)})  # one sample gains a batch axis
    assert one["ids"].shape == (1, 3)


@pytest.mark.parametrize(("x", "words"), [
    ({"features": np.zeros((2, 7))}, ["missing ids", "expects ids (3,) int32, features (7,) float32"]),
    ({"ids": np.zeros((2, 3)), "features": np.zeros((2, 7)), "mask": np.zeros((2, 3))}, ["unknown mask"]),
    (np.zeros((2, 7)), ["is one array but m has 2 inputs", "mapping name → array"]),
    ({"ids": np.full((2, 3), 0.5), "features": np.zeros((2, 7))}, ["'ids' holds fractional floats", "astype('int32')"]),
    ({"ids": np.zeros((2, 4)), "features": np.zeros((2, 7))}, ["'ids' samples have shape (4,) but m expects ids (3,) int32"]),
    ({"ids": np.zeros((2, 3)), "features": np.zeros((3, 7))}, ["different numbers of samples"]),
], ids=["missing", "extra", "one-array", "fractional-ids", "shape", "counts"])
def test_bad_feeds_are_one_line(x, words):
    with pytest.raises(DatasetError) as excinfo:
        SIG.feed(x, "data", "m", one_sample=False)
    one_line(excinfo, DatasetError, *words)


def test_unknown_output_lists_the_outputs():
    with pytest.raises(UsageError) as excinfo:
        SIG.output("boxes")
    one_line(excinfo, UsageError, "output='boxes'", "risk, progression")
    with pytest.raises(UsageError) as excinfo:
        SIG.output(None)
    one_line(excinfo, UsageError, "2 outputs", "risk, progression")


def test_npz_with_named_inputs_and_outputs():
    data = Dataset.from_npz(DIABETES)
    assert set(data.train.x) == {"ids", "features"} and set(data.test.y) == {"risk", "progression"}
    assert data.test.labels("risk").ndim == 1 and data.test.labels("boxes") is None
    assert len(data.calibration(50)) == 50 and set(data.calibration(50).x) == {"ids", "features"}


@pytest.mark.parametrize(("arrays", "words"), [
    ({"x_train:ids": np.zeros((4, 3)), "x_train": np.zeros((4, 3)), "x_test": np.zeros((2, 3))}, ["both", "x_train"]),
    ({"x_train:ids": np.zeros((4, 3)), "x_test:idz": np.zeros((2, 3))}, ["train inputs are named ['ids']", "['idz']"]),
    ({"x_train:": np.zeros((4, 3)), "x_test": np.zeros((2, 3))}, ["':<name>'"]),
    ({"inputs:ids": np.zeros((4, 3))}, ["it needs x_train", "'inputs:ids' is neither"]),
], ids=["mixed", "names-differ", "empty-name", "unknown"])
def test_npz_key_convention_errors(tmp_path, arrays, words):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_npz(path)
    one_line(excinfo, DatasetError, *words)


def test_tf_data_with_dict_elements(preloaded_runtimes):
    import tensorflow as tf

    x = {"ids": np.arange(12, dtype=np.int32).reshape(4, 3), "features": np.ones((4, 7), np.float32)}
    y = {"risk": np.array([0, 1, 0, 1])}
    data = Dataset.from_tf_data(tf.data.Dataset.from_tensor_slices((x, y)).batch(3))
    assert data.x["ids"].tolist() == x["ids"].tolist() and data.y["risk"].tolist() == [0, 1, 0, 1]
    unlabeled = Dataset.from_tf_data(tf.data.Dataset.from_tensor_slices(x))
    assert unlabeled.y is None and len(unlabeled) == 4


def test_dataset_hash_depends_on_names():
    a = Dataset({"a": np.zeros((2, 3)), "b": np.ones((2, 3))})
    b = Dataset({"b": np.zeros((2, 3)), "a": np.ones((2, 3))})
    assert a.hash != b.hash


@pytest.fixture(scope="module")
def bench(tmp_path_factory, preloaded_runtimes):
    return Workbench(MULTITASK, DIABETES, cache_dir=tmp_path_factory.mktemp("cache"), threads=1)


def test_keras_dict_model_names(bench):
    sig = bench.source.signature
    assert sig.input_names == ["features", "ids"] or sig.input_names == ["ids", "features"]
    assert {t.name: t.dtype for t in sig.inputs} == {"ids": "int32", "features": "float32"}
    assert {t.name: t.shape for t in sig.outputs} == {"risk": (2,), "progression": (1,)}


@pytest.mark.parametrize("variant", ["fp32", "int8", "int8_io"])
def test_tflite_runs_by_name_and_keeps_ids_integer(bench, variant):
    import keras

    model = bench.runnable(variant)
    x = bench.eval_dataset.x
    out = model.predict(x)
    assert set(out) == {"risk", "progression"} and out["risk"].shape == (len(bench.eval_dataset), 2)
    dtypes = {d["name"]: d["dtype"] for d in model.runner._interp.get_input_details()}
    assert any("ids" in n and t == np.int32 for n, t in dtypes.items()), dtypes  # never quantized
    if variant == "int8_io":
        assert any("features" in n and t == np.int8 for n, t in dtypes.items()), dtypes
    ref = keras.models.load_model(MULTITASK, compile=False)(x)
    tol = 1e-5 if variant == "fp32" else 0.1
    for name in ("risk", "progression"):
        assert np.max(np.abs(out[name] - np.asarray(ref[name]))) < tol, name


def test_evaluate_per_output(bench):
    fp32 = bench.runnable("fp32")
    assert 0.6 < fp32.evaluate(output="risk") <= 1.0
    mae = fp32.evaluate(output="progression", metric="mae")
    assert 0 < mae < 1
    assert fp32.measurements["accuracy[progression]"] == mae and fp32.measurements["metric[progression]"] == "mae"
    with pytest.raises(UsageError) as excinfo:
        fp32.evaluate()
    one_line(excinfo, UsageError, "labels 2 outputs", "output=")


def test_latency_feeds_every_input(bench):
    stats = bench.runnable("int8").latency(batch_size=2)
    assert stats.p50_ms > 0 and stats.n >= 1


def test_saved_model_with_another_signature_and_several_outputs(tmp_path, preloaded_runtimes):
    import keras
    import tensorflow as tf

    from pytest_tfopt.errors import ModelLoadError

    model = keras.models.load_model(MULTITASK, compile=False)
    spec = {"ids": tf.TensorSpec((None, 3), tf.int32, name="ids"),
            "features": tf.TensorSpec((None, 7), tf.float32, name="features")}
    fn = tf.function(lambda feed: dict(model(feed, training=False)), input_signature=[spec])
    holder = tf.Module()
    holder.v = [v.value for v in model.variables]
    path = tmp_path / "sm"
    tf.saved_model.save(holder, str(path), signatures={"predict": fn.get_concrete_function()})
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(path)
    one_line(excinfo, ModelLoadError, "no 'serving_default' signature (it has: predict)", "tfopt_signature")
    wb = Workbench(path, DIABETES, cache_dir=tmp_path / "cache", threads=1, signature="predict")
    assert wb.source.signature.output_names == ["progression", "risk"]
    out = wb.runnable("int8").predict(wb.eval_dataset.x)
    ref = model(wb.eval_dataset.x)
    assert np.mean(out["risk"].argmax(1) == np.asarray(ref["risk"]).argmax(1)) > 0.9


@pytest.mark.parametrize(("variant", "stat"), [
    ("pruned(sparsity=0.5,epochs=2)+int8", "sparsity"),
    ("clustered(clusters=8)+int8", "unique_weights"),
    ("qat(epochs=1)", "touched_layers"),
])
def test_tfmot_transforms_on_named_inputs_and_outputs(bench, variant, stat):
    """Rebuilt in tf_keras with the dict structure kept, fine-tuned on both labeled heads, ids never quantized."""
    model = bench.runnable(variant)
    stages = model.info["stages"]
    assert stages and stat in stages[0]
    if stat == "sparsity":
        assert all(v >= 0.45 for v in stages[0]["sparsity"].values()), stages[0]
    if stat == "unique_weights":
        assert all(v <= 8 for v in stages[0]["unique_weights"].values()), stages[0]
    out = model.predict(bench.eval_dataset.x)
    assert set(out) == {"risk", "progression"}
    assert model.evaluate(output="risk") > 0.6
    assert model.evaluate(output="progression", metric="mae") < 0.7
    dtypes = {d["name"]: d["dtype"] for d in model.runner._interp.get_input_details()}
    assert any("ids" in n and t == np.int32 for n, t in dtypes.items()), dtypes


def test_distillation_of_several_outputs_is_refused_before_training(bench):
    from pytest_tfopt.errors import ConversionError

    before = sorted(p for p in Path(bench.cache.root).rglob("*") if p.suffix != ".lock")
    with pytest.raises(ConversionError) as excinfo:
        bench.build("distilled")
    one_line(excinfo, ConversionError, "distilled cannot be defined for", "2 inputs and 2 outputs",
             "one class output")
    assert "epoch" not in str(excinfo.value)
    assert sorted(p for p in Path(bench.cache.root).rglob("*") if p.suffix != ".lock") == before  # nothing cached


def test_int8_max_drop_on_several_outputs_is_refused_before_converting(bench):
    from pytest_tfopt.errors import ConversionError

    with pytest.raises(ConversionError) as excinfo:
        bench.build("int8(max_drop=0.01)")
    one_line(excinfo, ConversionError, "int8(max_drop=...) on diabetes_multitask.keras (2 inputs, 2 outputs)",
             "max_accuracy_drop(..., output=...)")


def test_cli_bench_reports_each_labeled_output(tmp_path, capsys, preloaded_runtimes):
    import json

    from pytest_tfopt.cli import main

    out = tmp_path / "bench.json"
    code = main(["bench", str(MULTITASK), "--data", str(DIABETES), "--variant", "int8", "--no-latency",
                 "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "progression 0.45" in table and "risk 0.7" in table
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["int8"]["metric[risk]"] == "top1" and rows["int8"]["metric[progression]"] == "mae"
    assert abs(rows["int8"]["accuracy_drop[risk]"]) < 0.05 and rows["fp32"]["outputs"] == ["progression", "risk"]


def test_tflite_source_with_a_signature(bench, tmp_path):
    path = tmp_path / "multitask.tflite"
    path.write_bytes(bench.build("fp32").content)
    source = load_model(path)
    assert source.kind == "tflite"
    assert {t.name: t.dtype for t in source.signature.inputs} == {"features": "float32", "ids": "int32"}
    assert source.signature.output_names == ["progression", "risk"]
    wb = Workbench(path, DIABETES, cache_dir=tmp_path / "cache", threads=1)
    out = wb.runnable("fp32").predict(wb.eval_dataset.x)
    ref = bench.runnable("fp32").predict(bench.eval_dataset.x)
    assert all(np.array_equal(out[k], ref[k]) for k in ("risk", "progression"))


def _subclassed(keras):
    class Heads(keras.Model):
        """A face-style multi-task head: box (4) and score (1) from one feature vector."""

        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(16, activation="relu")
            self.box = keras.layers.Dense(4)
            self.score = keras.layers.Dense(1, activation="sigmoid")

        def call(self, x):
            h = self.hidden(x)
            return {"box": self.box(h), "score": self.score(h)}

    class Tokens(keras.Model):
        def __init__(self):
            super().__init__()
            self.embed = keras.layers.Embedding(30, 4)
            self.flat = keras.layers.Flatten()
            self.out = keras.layers.Dense(2, activation="softmax")

        def call(self, inputs):
            return self.out(keras.ops.concatenate([self.flat(self.embed(inputs["ids"])), inputs["extra"]], axis=-1))

    return Heads, Tokens


def test_subclassed_models_traced_at_their_call(tmp_path, preloaded_runtimes):
    import keras

    Heads, Tokens = _subclassed(keras)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    heads = Heads()
    x = rng.random((40, 6)).astype(np.float32)
    heads(x[:2])  # traced once: its build records the input shape
    wb = Workbench(heads, Dataset(x), cache_dir=tmp_path / "a", threads=1)
    assert {t.name: t.shape for t in wb.source.signature.outputs} == {"box": (4,), "score": (1,)}
    out = wb.runnable("int8").predict(wb.eval_dataset.x)
    ref = heads(wb.eval_dataset.x)
    assert set(out) == {"box", "score"} and np.max(np.abs(out["box"] - np.asarray(ref["box"]))) < 0.1

    tokens = Tokens()
    data = {"ids": rng.integers(0, 30, (40, 3)).astype(np.int32), "extra": rng.random((40, 5)).astype(np.float32)}
    tokens({k: v[:2] for k, v in data.items()})
    wb = Workbench(tokens, Dataset(data), cache_dir=tmp_path / "b", threads=1)
    assert {t.name: t.dtype for t in wb.source.signature.inputs} == {"ids": "int32", "extra": "float32"}
    out = wb.runnable("int8").predict(wb.eval_dataset.x)
    assert out.shape == (len(wb.eval_dataset), 2)
    assert np.mean(out.argmax(1) == np.asarray(tokens(wb.eval_dataset.x)).argmax(1)) > 0.9


def test_a_never_called_subclassed_model_names_the_remedy(preloaded_runtimes):
    import keras

    from pytest_tfopt.errors import ModelLoadError

    Heads, _ = _subclassed(keras)
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(Heads())
    one_line(excinfo, ModelLoadError, "has no defined inputs", "call a subclassed model once on a batch",
             "model.export(path, input_signature=[...])")
