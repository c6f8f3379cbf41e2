"""Build and briefly train the larger image model for latency work: MobileNetV2 (alpha 0.35, 96x96x3).

``models/mobilenet_v2_035_96.h5`` is a tf_keras (Keras 2) ``MobileNetV2(alpha=0.35,
input_shape=(96, 96, 3), classes=10, weights=None)``: 406k parameters, 66 convolutions (depthwise
and pointwise), batch norm, ReLU6 — the shape of a real mobile vision model, so latency and
backend comparisons see something heavier than the 8x8 digits CNN. Accuracy is not its point: it
is trained for a few epochs on the digits upscaled to 96x96 RGB (:func:`digits96`) only so that its
outputs are not degenerate and quantized variants can be compared with fp32 meaningfully.

Deterministic: fixed seed, op determinism, one thread; a rerun writes the same weights.

Run (from the repository root, about 2-4 minutes on 2 cores)::

    python models/train_mobilenet_v2.py [--epochs 3] [--out models/mobilenet_v2_035_96.h5]
"""

from __future__ import annotations

import os

os.environ["TF_DETERMINISTIC_OPS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import tf_keras  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_digits_cnn import DEFAULT_DATA, accuracy, load_data, make_deterministic, save_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "models" / "mobilenet_v2_035_96.h5"
SIZE = 96
ALPHA = 0.35
DEFAULT_EPOCHS = 5


def digits96(x: np.ndarray) -> np.ndarray:
    """8x8x1 digits in [0, 1] as 96x96x3 images (nearest-neighbour upscaling, gray replicated to RGB)."""
    scale = SIZE // x.shape[1]
    big = np.repeat(np.repeat(x, scale, axis=1), scale, axis=2)
    return np.repeat(big, 3, axis=3).astype(np.float32)


def build_model() -> tf_keras.Model:
    """MobileNetV2, width multiplier 0.35, 96x96 RGB input, 10 classes, random initialization.

    Batch-norm momentum is lowered from Keras' 0.999 to 0.9: with a few hundred training steps the
    moving statistics would otherwise stay near their initial values and inference would output
    one class for everything.
    """
    model = tf_keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=ALPHA, weights=None, classes=10, classifier_activation="softmax"
    )
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="digits .npz fixture")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .h5 path")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"training epochs ({DEFAULT_EPOCHS})")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    make_deterministic()
    x_train, y_train, x_test, y_test = load_data(args.data)
    model = build_model()
    print(f"params: {model.count_params()}")
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(digits96(x_train), y_train, batch_size=32, epochs=args.epochs, shuffle=True, verbose=0)
    print(f"test accuracy: {accuracy(model, digits96(x_test), y_test):.4f} (not a quality bar: a latency model)")
    save_atomic(model, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size} bytes) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
