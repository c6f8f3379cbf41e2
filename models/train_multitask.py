"""Train the two-input, two-output diabetes model and save it as ``models/diabetes_multitask.keras``.

The model is a tiny Keras 3 (``import keras``) *functional* model with **dict inputs and dict
outputs**, trained on ``fixtures/diabetes.npz`` (see ``fixtures/make_diabetes.py``; the keys are
``<split>:<name>``, e.g. ``x_train:ids``, ``y_test:risk``):

* inputs ``ids`` (None, 3) int32 -- sex, age decile and bmi bucket ids in one shared vocabulary of
  20, looked up in one ``Embedding(20, 4)`` and flattened; ``features`` (None, 7) float32 -- bp and
  s1..s6, already standardized in the fixture (the model has no normalization layer);
* outputs ``risk`` (None, 2) softmax -- class 1 when disease progression is above the training
  median; ``progression`` (None, 1) linear -- the progression target / 100.

``model(x)`` with ``x = {"ids": ..., "features": ...}`` returns ``{"risk": ..., "progression": ...}``.
It is trained with one loss per output (sparse categorical cross-entropy + mean squared error,
equal weights) and saved without optimizer state or compile configuration.

Training is deterministic: fixed seeds, deterministic TensorFlow ops and a single CPU thread, so a
rerun reproduces the same weights and metrics (the ``.keras`` zip itself embeds a save timestamp).

Rerun (from the repository root)::

    python models/train_multitask.py
    python models/train_multitask.py --data fixtures/diabetes.npz \\
        --out models/diabetes_multitask.keras --epochs 60

The script exits with status 1 without saving if the test top-1 accuracy of ``risk`` is below 0.70
or the test mean absolute error of ``progression`` is above 0.50.
"""

from __future__ import annotations

import os

# Must be set before TensorFlow/Keras are imported or run any op.
os.environ["TF_DETERMINISTIC_OPS"] = "1"
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "fixtures" / "diabetes.npz"
DEFAULT_OUT = ROOT / "models" / "diabetes_multitask.keras"
DEFAULT_EPOCHS = 60
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
SEED = 0
VOCAB_SIZE = 20  # fixtures/make_diabetes.py: sex 0..1, age decile 2..11, bmi bucket 12..19
EMBED_DIM = 4
MIN_RISK_ACCURACY = 0.70
MAX_PROGRESSION_MAE = 0.50
INPUTS = ("ids", "features")
OUTPUTS = ("risk", "progression")

Split = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


def make_deterministic(seed: int = SEED) -> None:
    """Seed Python, NumPy and TensorFlow and enable deterministic TF ops."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def load_data(path: Path) -> tuple[Split, Split]:
    """Return ``((x_train, y_train), (x_test, y_test))`` as dicts keyed by input/output name."""
    with np.load(path) as data:
        def part(split: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
            return {name: data[f"{split}:{name}"] for name in names}

        return ((part("x_train", INPUTS), part("y_train", OUTPUTS)),
                (part("x_test", INPUTS), part("y_test", OUTPUTS)))


def build_model() -> keras.Model:
    """Shared id embedding + standardized features -> Dense(16, relu) -> ``risk`` and ``progression`` heads."""
    layers = keras.layers
    ids = keras.Input(shape=(3,), dtype="int32", name="ids")
    features = keras.Input(shape=(7,), dtype="float32", name="features")
    embedded = layers.Embedding(VOCAB_SIZE, EMBED_DIM, name="id_embedding")(ids)
    embedded = layers.Flatten(name="id_flatten")(embedded)
    x = layers.Concatenate(name="concat")([embedded, features])
    x = layers.Dense(16, activation="relu", name="hidden")(x)
    risk = layers.Dense(2, activation="softmax", name="risk")(x)
    progression = layers.Dense(1, name="progression")(x)
    return keras.Model(
        inputs={"ids": ids, "features": features},
        outputs={"risk": risk, "progression": progression},
        name="diabetes_multitask",
    )


def train(model: keras.Model, x: dict[str, np.ndarray], y: dict[str, np.ndarray], epochs: int) -> None:
    """Compile ``model`` with Adam and one loss per output, and fit it for a fixed number of epochs."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss={"risk": "sparse_categorical_crossentropy", "progression": "mse"},
    )
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0)


def evaluate(model: keras.Model, x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict[str, float]:
    """Return the ``risk`` top-1 accuracy and the ``progression`` MAE/RMSE of ``model`` on ``(x, y)``."""
    pred = model.predict(x, batch_size=256, verbose=0)
    err = pred["progression"] - y["progression"]
    return {
        "risk_top1": float(np.mean(np.argmax(pred["risk"], axis=1) == y["risk"])),
        "progression_mae": float(np.mean(np.abs(err))),
        "progression_rmse": float(np.sqrt(np.mean(err**2))),
    }


def without_optimizer(model: keras.Model) -> keras.Model:
    """Return an uncompiled copy of ``model`` with the same weights (so no optimizer state is saved)."""
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def _default_file_mode() -> int:
    """Return the mode a newly created file gets under the current umask (e.g. 0o644)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_atomic(model: keras.Model, out: Path) -> None:
    """Save ``model`` in the Keras 3 ``.keras`` format via a temp file and ``os.replace``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp_name)
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
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .keras model path")
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help=f"training epochs ({DEFAULT_EPOCHS})"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and save the model; return 1 if it is not good enough."""
    args = parse_args(argv)
    if args.out.suffix != ".keras":
        print(f"error: --out must end in .keras (got {args.out})")
        return 2
    start = time.perf_counter()
    make_deterministic()
    (x_train, y_train), (x_test, y_test) = load_data(args.data)
    model = build_model()
    print(f"params: {model.count_params()}")
    train(model, x_train, y_train, args.epochs)
    metrics = evaluate(model, x_test, y_test)
    n = len(y_test["risk"])
    print(f"test risk top-1: {metrics['risk_top1']:.4f} ({round(metrics['risk_top1'] * n)}/{n})")
    print(f"test progression MAE: {metrics['progression_mae']:.4f}, RMSE: {metrics['progression_rmse']:.4f} "
          "(target / 100)")
    if metrics["risk_top1"] < MIN_RISK_ACCURACY or metrics["progression_mae"] > MAX_PROGRESSION_MAE:
        print(f"error: need risk top-1 >= {MIN_RISK_ACCURACY} and progression MAE <= {MAX_PROGRESSION_MAE}; "
              "model not saved")
        return 1
    save_atomic(without_optimizer(model), args.out)
    print(f"saved {args.out} ({args.out.stat().st_size} bytes)")
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
