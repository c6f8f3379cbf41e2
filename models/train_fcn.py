"""Train the fully convolutional two-output photo model and save it as ``models/photo_fcn.keras``.

The model is a tiny Keras 3 (``import keras``) functional, *fully convolutional* model whose height
and width are ``None``: input ``image`` (None, None, None, 3) float32 in [0, 1], two outputs **as a
list**, ``keras.Model(image, [gray, edges])``:

* ``gray`` (None, None, None, 1) -- the luminance 0.299 R + 0.587 G + 0.114 B (one 1x1 convolution);
* ``edges`` (None, None, None, 1) -- the Sobel gradient magnitude of the luminance divided by 4
  (a unit step edge gives 1.0), from a 3x3 and a 1x1 ReLU convolution and a 1x1 linear one.

Every convolution uses ``padding="same"`` and there is no pooling, so each output has the input's
height and width; ``model(x)`` returns a list ``[gray, edges]``. The targets are computed with NumPy
(:func:`luminance`, :func:`sobel_edges`); the Sobel filter treats pixels outside the image as 0,
exactly like a ``padding="same"`` convolution, so border pixels are learnable too.

It is trained on ``x_train`` of ``fixtures/photos.npz`` (256 crops of 32x32, see
``fixtures/make_photos.py``) and evaluated on ``x_test`` (64 crops of 48x48 from another part of
the photos, so the test also runs the model at a size it was not trained at). The model is saved
without optimizer state or compile configuration.

Training is deterministic: fixed seeds, deterministic TensorFlow ops and a single CPU thread, so a
rerun reproduces the same weights and metrics (the ``.keras`` zip itself embeds a save timestamp).

Rerun (from the repository root)::

    python models/train_fcn.py
    python models/train_fcn.py --data fixtures/photos.npz --out models/photo_fcn.keras --epochs 150

It uses Adam with a cosine-decayed learning rate (peak 0.02), batch size 16 and 150 epochs. The
script exits with status 1 without saving if the test SNR of ``gray`` is below 40 dB or that of
``edges`` is below 25 dB (SNR = 10 log10(mean(target^2) / mean((output - target)^2))).
"""

from __future__ import annotations

import os

# Must be set before TensorFlow/Keras are imported or run any op.
os.environ["TF_DETERMINISTIC_OPS"] = "1"
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_multitask import make_deterministic, save_atomic, without_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "fixtures" / "photos.npz"
DEFAULT_OUT = ROOT / "models" / "photo_fcn.keras"
DEFAULT_EPOCHS = 150
BATCH_SIZE = 16
LEARNING_RATE = 2e-2  # peak; cosine decay to 0 over the run (higher rates kill the edge ReLUs)
MIN_GRAY_SNR_DB = 40.0
MIN_EDGES_SNR_DB = 25.0
OUTPUTS = ("gray", "edges")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
EDGE_SCALE = 4.0  # |Sobel| of a unit step edge


def luminance(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` RGB in [0, 1] -> ``(N, H, W, 1)`` float32 luminance 0.299 R + 0.587 G + 0.114 B."""
    return (images.astype(np.float64) @ LUMA)[..., None].astype(np.float32)


def sobel_edges(gray: np.ndarray) -> np.ndarray:
    """``(N, H, W, 1)`` luminance -> ``(N, H, W, 1)`` float32 Sobel magnitude / 4, zero outside the image."""
    g = np.pad(gray[..., 0].astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    h, w = gray.shape[1:3]
    gx = np.zeros(gray.shape[:3])
    gy = np.zeros(gray.shape[:3])
    for i in range(3):
        for j in range(3):
            window = g[:, i:i + h, j:j + w]
            gx += SOBEL_X[i, j] * window
            gy += SOBEL_X[j, i] * window
    return (np.sqrt(gx**2 + gy**2) / EDGE_SCALE)[..., None].astype(np.float32)


def targets(images: np.ndarray) -> list[np.ndarray]:
    """Return the NumPy targets ``[gray, edges]`` for ``images``."""
    gray = luminance(images)
    return [gray, sobel_edges(gray)]


def build_model() -> keras.Model:
    """``image`` -> ``gray`` (1x1 conv) and ``image`` -> 3x3/1x1 ReLU convs -> ``edges`` (1x1 conv)."""
    layers = keras.layers
    image = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    gray = layers.Conv2D(1, 1, padding="same", name="gray")(image)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(image)
    x = layers.Conv2D(16, 1, padding="same", activation="relu", name="conv2")(x)
    edges = layers.Conv2D(1, 1, padding="same", name="edges")(x)
    return keras.Model(image, [gray, edges], name="photo_fcn")


def train(model: keras.Model, x: np.ndarray, y: list[np.ndarray], epochs: int) -> None:
    """Compile ``model`` with Adam (cosine-decayed rate) and one MSE loss per output, and fit it for ``epochs``."""
    steps = epochs * -(-len(x) // BATCH_SIZE)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss=["mse", "mse"])
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0)


def evaluate(model: keras.Model, x: np.ndarray, y: list[np.ndarray]) -> dict[str, float]:
    """Return per-output MSE and SNR (dB, target power over error power) of ``model`` on ``x``."""
    pred = model.predict(x, batch_size=64, verbose=0)
    metrics = {}
    for name, p, t in zip(OUTPUTS, pred, y, strict=True):
        mse = float(np.mean((p.astype(np.float64) - t) ** 2))
        metrics[f"{name}_mse"] = mse
        metrics[f"{name}_snr_db"] = float(10.0 * np.log10(np.mean(t.astype(np.float64) ** 2) / mse))
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="input .npz fixture (x_train, x_test)")
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
    with np.load(args.data) as data:
        x_train, x_test = data["x_train"], data["x_test"]
    model = build_model()
    print(f"params: {model.count_params()}")
    train(model, x_train, targets(x_train), args.epochs)
    metrics = evaluate(model, x_test, targets(x_test))
    print(f"test ({x_test.shape[0]} crops {x_test.shape[1]}x{x_test.shape[2]}):")
    for name in OUTPUTS:
        print(f"  {name}: MSE {metrics[f'{name}_mse']:.3e}, SNR {metrics[f'{name}_snr_db']:.1f} dB")
    if metrics["gray_snr_db"] < MIN_GRAY_SNR_DB or metrics["edges_snr_db"] < MIN_EDGES_SNR_DB:
        print(f"error: need gray SNR >= {MIN_GRAY_SNR_DB} dB and edges SNR >= {MIN_EDGES_SNR_DB} dB; "
              "model not saved")
        return 1
    save_atomic(without_optimizer(model), args.out)
    print(f"saved {args.out} ({args.out.stat().st_size} bytes)")
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
