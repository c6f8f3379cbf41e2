"""``Dataset``: every source (npz, arrays, tf.data), seeded splits and calibration, hash, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_tfopt import Dataset, DatasetError


def one_line(excinfo: pytest.ExceptionInfo, *words: str) -> str:
    """The error is exactly DatasetError, its message one line holding every word (problem and remedy)."""
    assert excinfo.type is DatasetError, f"{excinfo.type.__name__}: {excinfo.value}"
    message = str(excinfo.value)
    assert message and "\n" not in message and message == message.strip(), repr(message)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def indexed(n: int, features: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``x[i]`` is filled with ``i`` and ``y[i] == i``: every sample says where it came from."""
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], features, axis=1)
    return x, np.arange(n)


def ids(data: Dataset) -> list[int]:
    return [int(v) for v in data.x[:, 0]]


@pytest.fixture(scope="module")
def tf():
    from pytest_tfopt import tfenv

    return tfenv.tensorflow()


@pytest.fixture(scope="module")
def digits_npz(data_path: Path) -> dict[str, np.ndarray]:
    with np.load(data_path) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def digits(data_path: Path) -> Dataset:
    return Dataset.from_npz(data_path)


# ---- .npz ------------------------------------------------------------------------------------------------
def test_npz_with_explicit_splits(digits, digits_npz):
    assert len(digits.train) == 1347 and len(digits.test) == 450
    assert len(digits) == 1347 + 450
    assert digits.name == "digits.npz"
    assert digits.x.shape[1:] == (8, 8, 1) and digits.x.dtype == np.float32
    np.testing.assert_array_equal(digits.train.x, digits_npz["x_train"])
    np.testing.assert_array_equal(digits.train.y, digits_npz["y_train"])
    np.testing.assert_array_equal(digits.test.x, digits_npz["x_test"])
    np.testing.assert_array_equal(digits.test.y, digits_npz["y_test"])


def test_npz_with_x_y_is_split_80_20_seeded(tmp_path):
    x, y = indexed(50)
    path = tmp_path / "xy.npz"
    np.savez(path, x=x, y=y)
    first, second = Dataset.from_npz(path), Dataset.from_npz(str(path))
    assert len(first.train) == 40 and len(first.test) == 10
    assert sorted(ids(first.train) + ids(first.test)) == list(range(50))  # a partition
    assert ids(first.train) != list(range(40))  # shuffled, not the first 80 %
    assert ids(first.train) == ids(second.train) and ids(first.test) == ids(second.test)
    np.testing.assert_array_equal(first.train.y, first.train.x[:, 0])  # labels travel with their samples


def test_npz_with_x_only_has_no_labels(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.ones((10, 2), np.float32))
    data = Dataset.from_npz(path)
    assert data.y is None and data.train.y is None and len(data.test) == 2


# ---- arrays ------------------------------------------------------------------------------------------------
def test_from_arrays_without_test_split(tmp_path):
    x, y = indexed(20)
    data = Dataset.from_arrays(x, y)
    assert len(data) == 20 and len(data.train) == 16 and len(data.test) == 4
    assert not set(ids(data.train)) & set(ids(data.test))
    path = tmp_path / "same.npz"
    np.savez(path, x=x, y=y)
    assert ids(Dataset.from_npz(path).test) == ids(data.test)  # one seeded split, whatever the source


def test_from_arrays_with_test_split():
    x, y = indexed(12)
    xt, yt = indexed(5)
    data = Dataset.from_arrays(x, y, x_test=xt + 100, y_test=yt + 100)
    assert len(data) == 17
    assert ids(data.train) == list(range(12))
    assert ids(data.test) == list(range(100, 105))
    np.testing.assert_array_equal(data.test.y, yt + 100)


def test_from_arrays_takes_lists_and_1d_inputs():
    data = Dataset.from_arrays([0.5, 1.5, 2.5], [0, 1, 0])
    assert data.x.shape == (3,) and data.y.tolist() == [0, 1, 0]


# ---- tf.data -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def xy() -> tuple[np.ndarray, np.ndarray]:
    return indexed(23)


@pytest.mark.parametrize(
    ("build", "n"),
    [
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices((x, y)), 23),
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(5), 23),
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(5).prefetch(2), 23),
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(5, drop_remainder=True), 20),
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(4).unbatch(), 23),
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(6).map(lambda a, b: (a * 1, b)), 23),
    ],
    ids=["unbatched", "batched", "batched-prefetch", "batched-drop-remainder", "unbatched-again", "batched-map"],
)
def test_from_tf_data_with_labels(tf, xy, build, n):
    x, y = xy
    data = Dataset.from_tf_data(build(tf, x, y))
    assert data.name == "tf.data"
    np.testing.assert_array_equal(data.x, x[:n])
    np.testing.assert_array_equal(data.y, y[:n])


@pytest.mark.parametrize("batch", [None, 4], ids=["unbatched", "batched"])
def test_from_tf_data_without_labels(tf, xy, batch):
    x, _ = xy
    ds = tf.data.Dataset.from_tensor_slices(x)
    data = Dataset.from_tf_data(ds if batch is None else ds.batch(batch))
    assert data.y is None
    np.testing.assert_array_equal(data.x, x)


def test_from_tf_data_batched_can_be_forced(tf, xy):
    x, y = xy
    whole = tf.data.Dataset.from_tensors((x, y))  # one element holding all samples
    assert Dataset.from_tf_data(whole, batched=True).x.shape == x.shape
    assert Dataset.from_tf_data(whole, batched=False).x.shape == (1, *x.shape)


def test_from_tf_data_empty(tf):
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_tf_data(tf.data.Dataset.from_tensor_slices(np.zeros((0, 3), np.float32)))
    one_line(excinfo, "tf.data.Dataset is empty", "give it at least one sample")


def test_from_tf_data_ragged_elements(tf):
    ds = tf.data.Dataset.from_generator(
        lambda: iter([np.zeros(2, np.float32), np.zeros(3, np.float32)]),
        output_signature=tf.TensorSpec((None,), tf.float32),
    )
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_tf_data(ds, batched=False)
    one_line(excinfo, "tf.data.Dataset elements do not fit together", "give every sample the same shape")


# ---- coerce ---------------------------------------------------------------------------------------------
def test_coerce_each_kind(tf, digits, data_path, xy):
    x, y = xy
    assert Dataset.coerce(digits) is digits
    for path in (data_path, str(data_path)):
        assert Dataset.coerce(path).hash == digits.hash
    pair = Dataset.coerce((x, y))
    np.testing.assert_array_equal(pair.x, x)
    np.testing.assert_array_equal(pair.y, y)
    single = Dataset.coerce((x,))
    assert single.y is None and len(single) == len(x)
    array = Dataset.coerce(x)
    assert array.y is None and array.hash == single.hash
    from_tf = Dataset.coerce(tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
    assert from_tf.hash == pair.hash


@pytest.mark.parametrize("value", [[1, 2, 3], {1, 2}, 7], ids=["list", "set", "int"])
def test_coerce_rejects_other_types(value):
    with pytest.raises(DatasetError) as excinfo:
        Dataset.coerce(value)
    one_line(excinfo, f"cannot make a data set from {type(value).__name__}",
             "return a Dataset, an .npz path, a tf.data.Dataset or an (x, y) tuple")


# ---- calibration -----------------------------------------------------------------------------------------
def test_calibration_is_seeded_and_from_train_only():
    x, y = indexed(100)
    xt, yt = indexed(30)
    data = Dataset.from_arrays(x, y, x_test=xt + 1000, y_test=yt + 1000)
    first, second = data.calibration(25), data.calibration(25)
    assert first.name == "calibration"
    assert len(first) == 25 and len(set(ids(first))) == 25  # without replacement
    assert ids(first) == ids(second)
    assert set(ids(first)) <= set(range(100))  # never a test sample
    np.testing.assert_array_equal(first.y, first.x[:, 0])
    assert ids(data.calibration(25, seed=1)) != ids(first)


def test_calibration_of_seeded_split_stays_in_train():
    data = Dataset.from_arrays(*indexed(60))
    calibration = data.calibration(20)
    assert set(ids(calibration)) <= set(ids(data.train))
    assert not set(ids(calibration)) & set(ids(data.test))


def test_calibration_is_capped_at_train_size(digits):
    assert len(digits.calibration(10_000)) == 1347
    np.testing.assert_array_equal(digits.calibration(10_000).x, digits.train.x)
    assert len(digits.calibration(1347)) == 1347
    assert len(digits.calibration(200)) == 200


def test_calibration_of_digits_is_stable(digits, data_path):
    assert digits.calibration(50).hash == Dataset.from_npz(data_path).calibration(50).hash


@pytest.mark.parametrize("size", [0, -3])
def test_calibration_size_must_be_positive(digits, size):
    with pytest.raises(DatasetError) as excinfo:
        digits.calibration(size)
    one_line(excinfo, f"calibration size {size} must be positive", "set tfopt_calibration_size >= 1")


# ---- hash ------------------------------------------------------------------------------------------------
def test_hash_is_stable():
    x, y = indexed(10)
    h = Dataset.from_arrays(x, y).hash
    assert len(h) == 64 and int(h, 16) >= 0
    assert Dataset.from_arrays(x.copy(), y.copy()).hash == h
    assert Dataset.from_arrays(x, y).hash == h


def test_hash_changes_with_one_value():
    x, y = indexed(10)
    changed = x.copy()
    changed[7, 2] += 1e-3
    assert Dataset.from_arrays(changed, y).hash != Dataset.from_arrays(x, y).hash


def test_hash_depends_on_labels_dtype_and_shape():
    x, y = indexed(10)
    base = Dataset.from_arrays(x, y).hash
    other_labels = y.copy()
    other_labels[0] = 9
    assert Dataset.from_arrays(x, other_labels).hash != base
    assert Dataset.from_arrays(x).hash != base  # no labels
    assert Dataset.from_arrays(x.astype(np.float64), y).hash != base
    assert Dataset.from_arrays(x.reshape(10, 3, 1), y).hash != base


def test_hash_of_digits_is_stable(digits, data_path):
    assert Dataset.from_npz(data_path).hash == digits.hash
    assert digits.train.hash != digits.test.hash


# ---- representative_dataset --------------------------------------------------------------------------------
def test_representative_dataset_yields_one_float32_sample_per_step():
    x = np.arange(7 * 4, dtype=np.int32).reshape(7, 2, 2)
    data = Dataset.from_arrays(x, np.zeros(7))
    generate = data.representative_dataset()
    steps = list(generate())
    assert len(steps) == len(data) == 7
    for i, step in enumerate(steps):
        assert isinstance(step, list) and len(step) == 1
        assert step[0].dtype == np.float32 and step[0].shape == (1, 2, 2)
        np.testing.assert_array_equal(step[0][0], x[i])
    assert len(list(generate())) == 7  # a generator function: the converter may call it again


def test_representative_dataset_of_digits_calibration(digits):
    calibration = digits.calibration(30)
    steps = list(calibration.representative_dataset()())
    assert len(steps) == 30
    assert all(s[0].shape == (1, 8, 8, 1) and s[0].dtype == np.float32 for s in steps)


# ---- bad input -----------------------------------------------------------------------------------------------
def test_missing_npz(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_npz(tmp_path / "nope.npz")
    one_line(excinfo, "nope.npz", "does not exist", "check tfopt_dataset")


def test_missing_npz_through_coerce(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        Dataset.coerce(str(tmp_path / "nope.npz"))
    one_line(excinfo, "does not exist")


@pytest.mark.parametrize("head", [b"", b"PK\x03\x04"], ids=["random-bytes", "zip-magic-then-garbage"])
def test_corrupt_npz(tmp_path, head):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(head + np.random.default_rng(1).bytes(1024))
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_npz(path)
    one_line(excinfo, "corrupt.npz", "is not a readable .npz", "write it with numpy.savez(x_train=")


def test_truncated_npz(tmp_path, data_path):
    path = tmp_path / "half.npz"
    content = data_path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_npz(path)
    one_line(excinfo, "half.npz", "is not a readable .npz", "numpy.savez")


def test_npy_instead_of_npz(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 2)))
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_npz(path)
    one_line(excinfo, "x.npy", "single .npy array, not an .npz", "numpy.savez(x_train=")


def test_npz_with_object_arrays_is_not_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_npz(path)
    one_line(excinfo, "objects.npz", "is not a readable .npz")


@pytest.mark.parametrize(
    ("arrays", "found"),
    [
        ({"images": np.zeros((3, 2)), "labels": np.zeros(3)}, "['images', 'labels']"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(3)}, "['x_train', 'y_train']"),
    ],
    ids=["other-names", "train-only"],
)
def test_npz_with_wrong_keys(tmp_path, arrays, found):
    path = tmp_path / "keys.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_npz(path)
    one_line(excinfo, f"has keys {found}", "it needs x_train, y_train, x_test, y_test (or x, y)")


def test_length_mismatch():
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_arrays(np.zeros((5, 2)), np.zeros(4))
    one_line(excinfo, "5 inputs but 4 labels", "give one label per sample")


def test_length_mismatch_in_test_split():
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_arrays(np.zeros((5, 2)), np.zeros(5), x_test=np.zeros((3, 2)), y_test=np.zeros(2))
    one_line(excinfo, "test: 3 inputs but 2 labels", "one label per sample")


@pytest.mark.parametrize(
    "x", [np.array(["a", "b", "c"]), np.array([b"a", b"b"]), np.array([{}, []], dtype=object)],
    ids=["str", "bytes", "object"],
)
def test_non_numeric_inputs(x):
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_arrays(x)
    one_line(excinfo, f"inputs have dtype {x.dtype}, not numeric", "convert them to float32")


def test_boolean_inputs_are_numeric_enough():
    assert len(Dataset.from_arrays(np.array([[True, False], [False, True]]))) == 2


def test_scalar_inputs():
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_arrays(3.0, 1)
    one_line(excinfo, "inputs are a scalar", "give an array whose first axis is the samples")


def test_scalar_labels():
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_arrays(np.zeros((3, 2)), 1)
    one_line(excinfo, "labels are a scalar", "one label per sample")


def test_ragged_inputs():
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_arrays([[1.0, 2.0], [3.0]], [0, 1])
    one_line(excinfo, "inputs are ragged", "pad or resize them to one shape")


def test_nan_and_inf_in_calibration_data():
    x = np.ones((10, 2, 2), np.float32)
    x[3, 1, 0] = np.nan
    x[7, 0, 1] = np.inf
    x[8, 0, 0] = -np.inf
    data = Dataset(x, name="cal")
    with pytest.raises(DatasetError) as excinfo:
        data.check_finite("calibration data")
    one_line(excinfo, "calibration data has NaN/Inf in 3 of 10 samples (first: index 3)",
             "drop or impute those samples")
    with pytest.raises(DatasetError) as excinfo:
        data.representative_dataset()
    one_line(excinfo, "calibration data (cal) has NaN/Inf in 3 of 10 samples (first: index 3)")


def test_finite_and_integer_data_pass_check_finite():
    x = np.ones((4, 2), np.float32)
    assert Dataset(x).check_finite() is None
    assert Dataset(np.full((4, 2), np.iinfo(np.int32).max)).check_finite() is None  # integers hold no NaN/Inf
    x[2, 1] = np.nan  # the same data with one NaN fails: the check did look at it
    with pytest.raises(DatasetError, match=r"data has NaN/Inf in 1 of 4 samples \(first: index 2\)"):
        Dataset(x).check_finite()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Dataset.from_arrays(np.zeros((0, 4), np.float32), np.zeros(0)),
        lambda: Dataset.from_arrays(np.zeros((0, 4), np.float32)),
        lambda: Dataset.from_arrays(np.zeros((4, 2)), np.zeros(4), x_test=np.zeros((0, 2)), y_test=np.zeros(0)),
    ],
    ids=["empty-with-labels", "empty-no-labels", "empty-test-split"],
)
def test_empty_data_set(make):
    with pytest.raises(DatasetError) as excinfo:
        make()
    one_line(excinfo, "is empty (0 samples)", "give at least one sample")


def test_empty_npz_split(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, x_train=np.zeros((0, 2)), y_train=np.zeros(0), x_test=np.zeros((3, 2)), y_test=np.zeros(3))
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_npz(path)
    one_line(excinfo, "train: the data set is empty", "at least one sample")


def test_one_sample_cannot_be_split():
    data = Dataset.from_arrays(np.zeros((1, 4)), [0])
    assert len(data) == 1
    for part in ("train", "test"):
        with pytest.raises(DatasetError) as excinfo:
            getattr(data, part)
        one_line(excinfo, "arrays: 1 sample(s) cannot be split into train and test",
                 "give at least 2 samples or explicit x_test/y_test")
    with pytest.raises(DatasetError):
        data.calibration(10)


def test_two_samples_split_one_and_one():
    data = Dataset.from_arrays(*indexed(2))
    assert len(data.train) == 1 and len(data.test) == 1


def test_train_and_test_shapes_differ():
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_arrays(np.zeros((5, 8, 8, 1)), np.zeros(5), x_test=np.zeros((3, 64)), y_test=np.zeros(3))
    one_line(excinfo, "train inputs have shape (8, 8, 1) but test inputs (64,)", "both splits need the same per-sample shape")


def test_train_and_test_shapes_differ_in_npz(tmp_path):
    """Splits may differ on free axes (a fully convolutional model tested at another size); the model decides."""
    from pytest_tfopt.signature import Signature, TensorInfo

    path = tmp_path / "mixed.npz"
    np.savez(path, x_train=np.zeros((4, 3)), y_train=np.zeros(4), x_test=np.zeros((2, 5)), y_test=np.zeros(2))
    data = Dataset.from_npz(path)
    assert data.train.x.shape == (4, 3) and data.test.x.shape == (2, 5)
    fixed = Signature((TensorInfo("x", (3,), "float32"),), (TensorInfo("y", (1,), "float32"),))
    fixed.feed(data.train.x, one_sample=False)
    with pytest.raises(DatasetError) as excinfo:
        fixed.feed(data.test.x, "evaluation data", "m", one_sample=False)
    one_line(excinfo, "evaluation data samples have shape (5,) but m expects (3,)")
    free = Signature((TensorInfo("x", (None,), "float32"),), (TensorInfo("y", (1,), "float32"),))
    assert free.feed(data.test.x, one_sample=False)["x"].shape == (2, 5)


def test_train_and_test_of_different_rank_in_npz(tmp_path):
    path = tmp_path / "mixed.npz"
    np.savez(path, x_train=np.zeros((4, 3)), x_test=np.zeros((2, 5, 1)))
    with pytest.raises(DatasetError) as excinfo:
        Dataset.from_npz(path)
    one_line(excinfo, "mixed.npz: train inputs have shape (3,) but test inputs (5, 1)", "same per-sample shape")


def test_dataset_keeps_its_own_read_only_copy():
    x = np.zeros((10, 3), np.float32)
    data = Dataset(x, np.arange(10))
    before = data.hash
    x[0, 0] = 5.0  # the caller goes on using its array
    assert data.x[0, 0] == 0.0 and data.hash == before
    with pytest.raises(ValueError):
        data.x[0, 0] = 1.0
