"""Train the small digits CNN fixture and save it as ``models/digits_cnn.h5``.

The model is a tiny convolutional network built with **tf_keras** (the
Keras 2 package; ``tf.keras`` in this TensorFlow version is Keras 3 and is
deliberately not used). It is trained on the ``x_train``/``y_train`` arrays of
``fixtures/digits.npz`` (see ``fixtures/make_digits.py``), evaluated on
``x_test``/``y_test``, and saved in the legacy HDF5 format without optimizer
state. The last layer outputs softmax probabilities over the 10 digits.

Training is deterministic: fixed seeds, deterministic TensorFlow ops and a
single CPU thread, so a rerun reproduces the same weights and accuracy.

Rerun (from the repository root)::

    python models/train_digits_cnn.py
    python models/train_digits_cnn.py --data fixtures/digits.npz \\
        --out models/digits_cnn.h5 --epochs 60

The script exits with status 1 if the test accuracy is below 0.95.
"""

from __future__ import annotations

import os

# Must be set before TensorFlow is imported or runs any op.
os.environ["TF_DETERMINISTIC_OPS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import tf_keras  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "fixtures" / "digits.npz"
DEFAULT_OUT = ROOT / "models" / "digits_cnn.h5"
DEFAULT_EPOCHS = 60
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
SEED = 0
MIN_ACCURACY = 0.95
NUM_CLASSES = 10

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def make_deterministic(seed: int = SEED) -> None:
    """Seed Python, NumPy and TensorFlow and enable deterministic TF ops."""
    tf_keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def load_data(path: Path) -> Arrays:
    """Return ``(x_train, y_train, x_test, y_test)`` from the fixture ``.npz``."""
    with np.load(path) as data:
        return (data["x_train"], data["y_train"], data["x_test"], data["y_test"])


def build_mlp() -> tf_keras.Model:
    """The larger digits model (``--arch mlp``): 85,002 parameters in three dense layers.

    It exists for the compression benchmark: on the 7,450-parameter CNN a .tflite file's fixed
    structure (operators, quantization parameters, names) is most of an int8 file's gzip size, so
    size ratios say more about the format than about pruning or clustering.
    """
    layers = tf_keras.layers
    inputs = tf_keras.Input(shape=(8, 8, 1), name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(256, activation="relu", name="dense1")(x)
    x = layers.Dense(256, activation="relu", name="dense2")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probs")(x)
    return tf_keras.Model(inputs, outputs, name="digits_mlp")


ARCHS = {"cnn": ("build_model", "digits_cnn.h5"), "mlp": ("build_mlp", "digits_mlp.h5")}


def build_model() -> tf_keras.Model:
    """Build the small CNN: two 3x3 convolutions, max-pooling and two dense layers."""
    layers = tf_keras.layers
    inputs = tf_keras.Input(shape=(8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="dense")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probs")(x)
    return tf_keras.Model(inputs, outputs, name="digits_cnn")


def train(model: tf_keras.Model, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """Compile ``model`` with Adam and fit it for a fixed number of epochs."""
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0)


def accuracy(model: tf_keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Return the classification accuracy of ``model`` on ``(x, y)``."""
    probs = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == y))


def _default_file_mode() -> int:
    """Return the mode a newly created file gets under the current umask (e.g. 0o644)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_atomic(model: tf_keras.Model, out: Path) -> None:
    """Save ``model`` as HDF5 (no optimizer) via a temp file and ``os.replace``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".h5")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # HDF5 is chosen on purpose; silence tf_keras's "legacy format" notice.
            warnings.filterwarnings("ignore", message=".*HDF5 file.*", category=UserWarning)
            model.save(tmp_name, save_format="h5", include_optimizer=False)
        os.chmod(tmp_name, _default_file_mode())  # mkstemp creates files as 0600
        os.replace(tmp_name, out)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="input .npz fixture")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="cnn",
                        help="cnn: the shipped 7,450-parameter CNN; mlp: the 85,002-parameter MLP (default cnn)")
    parser.add_argument("--out", type=Path, default=None, help="output .h5 model path (default models/digits_ARCH.h5)")
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help=f"training epochs ({DEFAULT_EPOCHS})"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and save the model; return 1 if accuracy is too low."""
    args = parse_args(argv)
    start = time.perf_counter()
    make_deterministic()
    x_train, y_train, x_test, y_test = load_data(args.data)
    builder, filename = ARCHS[args.arch]
    out = args.out or DEFAULT_OUT.with_name(filename)
    model = globals()[builder]()
    print(f"params: {model.count_params()}")
    train(model, x_train, y_train, args.epochs)
    test_acc = accuracy(model, x_test, y_test)
    print(f"test accuracy: {test_acc:.4f} ({len(y_test)} samples)")
    if test_acc < MIN_ACCURACY:
        print(f"error: accuracy {test_acc:.4f} < {MIN_ACCURACY}; model not saved")
        return 1
    save_atomic(model, out)
    print(f"saved {out} ({out.stat().st_size} bytes)")
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
