"""OpenVINO int8 with each NNCF overflow fix: what accuracy and agreement with fp32 each keeps.

For each model and each ``$TFOPT_OPENVINO_OVERFLOW_FIX`` mode (``first_layer`` = NNCF's default,
``enable`` = every layer, the plugin's default on CPUs without VNNI, ``disable``) this builds int8 on
``openvino`` (its own cache per mode) and prints, against fp32 on the same backend:

* classifiers (digits CNN, MobileNetV2 on the upscaled digits, the multi-task model's ``risk`` head):
  top-1 accuracy and top-1 agreement with fp32;
* every output: SNR in dB against fp32 (the multi-task ``progression``, the FCN's ``gray``/``edges``);
* the same figures for ``tflite`` and ``onnxruntime`` int8 (calibrated on the same samples) for comparison.

Run:  python benchmarks/bench_openvino_int8.py [--models digits,mobilenet,multitask,fcn]
One sitting on one machine; the CPU flags (VNNI or not) are printed first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import _common as c  # noqa: F401  (quiets TensorFlow before it is imported)
import numpy as np
from bench_backends import mobilenet_dataset

MODES = ("first_layer", "enable", "disable")
MODELS = {
    "digits": (c.DIGITS_MODEL, c.DIGITS_DATA),
    "mobilenet": (c.ROOT / "models" / "mobilenet_v2_035_96.h5", None),
    "multitask": (c.ROOT / "models" / "diabetes_multitask.keras", c.ROOT / "fixtures" / "diabetes.npz"),
    "fcn": (c.ROOT / "models" / "photo_fcn.keras", c.ROOT / "fixtures" / "photos.npz"),
}


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    from pytest_tfopt.measure.fidelity import snr_db as snr

    return snr(ref, out)


def figures(model, ref) -> dict[str, str]:
    """top-1 / agreement of class outputs and SNR of every output, as table cells."""
    ours, theirs = model.predictions(), ref.predictions()
    if not isinstance(ours, dict):
        ours, theirs = {"output": ours}, {"output": theirs}
    data = model.eval_dataset
    cells = {}
    for name in sorted(ours):
        o, t = ours[name], theirs[name]
        text = f"snr {snr_db(t, o):.1f} dB"
        if o.ndim == 2 and o.shape[1] > 1:
            agree = float(np.mean(o.argmax(1) == t.argmax(1)))
            labels = data.labels(None if name == "output" else name)
            top1 = "" if labels is None else f"top1 {float(np.mean(o.argmax(1) == np.asarray(labels).reshape(-1))):.3f}, "
            text = f"{top1}agree {agree:.3f}, {text}"
        cells[name] = text
    return cells


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="digits,mobilenet,multitask,fcn")
    args = p.parse_args()
    from pytest_tfopt import Workbench
    from pytest_tfopt.backends.onnx import cpu_has_vnni
    from pytest_tfopt.baseline import hardware

    hw = hardware()
    print(f"cpu: {hw.get('cpu')}; VNNI: {cpu_has_vnni()}; plugin default overflow fix: "
          f"{'first_layer' if cpu_has_vnni() else 'enable'}")
    print(f"{'model':10} {'backend / fix':26} figures vs fp32 on the same backend")
    root = tempfile.mkdtemp(prefix="bench-ov-int8-")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        path, data = MODELS[name]
        dataset = mobilenet_dataset(200) if name == "mobilenet" else data
        runs = [("tflite", None), ("onnxruntime", None), *(("openvino", mode) for mode in MODES)]
        for backend, mode in runs:
            if mode is not None:
                os.environ["TFOPT_OPENVINO_OVERFLOW_FIX"] = mode
            wb = Workbench(str(path), dataset, cache_dir=os.path.join(root, f"{backend}-{mode}"), threads=2)
            try:
                int8, fp32 = wb.runnable("int8", backend), wb.runnable("fp32", backend)
                shown = "; ".join(f"{k}: {v}" for k, v in figures(int8, fp32).items())
            except Exception as exc:  # a backend this machine lacks: say so and go on
                shown = f"failed: {str(exc).splitlines()[0][:100]}"
            label = backend + (f" / {mode}" if mode else "")
            print(f"{name:10} {label:26} {shown}", flush=True)
    os.environ.pop("TFOPT_OPENVINO_OVERFLOW_FIX", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
