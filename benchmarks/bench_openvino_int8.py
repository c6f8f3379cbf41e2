"""int8 accuracy per backend (tflite, onnxruntime, openvino) on the shipped models, with the settings each used.

For each model (``--models``: the digits CNN, MobileNetV2 on the upscaled digits, the multi-task model, whose
``risk`` head is a classifier, and the photo FCN) the rows are, every one int8 calibrated on the same 200
training samples (the Workbench's calibration split), each in a fresh Workbench over one cache:

* ``tflite``: ``TFLiteConverter`` full-integer int8, per-channel weights;
* ``onnxruntime``: ``quantize_static`` QDQ, per-channel, with ``reduce_range`` as this CPU picks it and with
  the other value (``$TFOPT_ONNX_REDUCE_RANGE``: 7-bit weights are the choice on CPUs without VNNI);
* ``openvino``: ``nncf.quantize`` (PERFORMANCE preset) with each NNCF overflow fix
  (``$TFOPT_OPENVINO_OVERFLOW_FIX``: ``first_layer`` = NNCF's default and the plugin's where VNNI exists,
  ``enable`` = 7-bit weights everywhere, the plugin's default without VNNI, ``disable``);
* ``int8(max_drop=D)`` (``--max-drop``, default 0.0; one-output classifiers only) on ``tflite`` (the
  QuantizationDebugger layer search) and on ``openvino`` with each overflow fix (NNCF's
  ``quantize_with_accuracy_control``), both judged on the calibration samples, with how long the build took
  and how many ops stayed float (``--no-search`` leaves these rows out).

Figures, against fp32 *on the same backend*: top-1 on the test split and top-1 agreement for class outputs,
SNR in dB for every output. The ``settings`` column is read back from each artifact (``info["settings"]``),
not from what was asked.

Run:  python benchmarks/bench_openvino_int8.py [--models digits,mobilenet,multitask,fcn] [--max-drop 0.0]
          [--no-search]
One sitting on one machine; the CPU and whether it has VNNI are printed first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import _common as c  # noqa: F401  (quiets TensorFlow before it is imported)
import numpy as np
from bench_backends import mobilenet_dataset

MODES = ("first_layer", "enable", "disable")
ENV = ("TFOPT_OPENVINO_OVERFLOW_FIX", "TFOPT_ONNX_REDUCE_RANGE")
MODELS = {
    "digits": (c.DIGITS_MODEL, c.DIGITS_DATA),
    "mobilenet": (c.ROOT / "models" / "mobilenet_v2_035_96.h5", None),
    "multitask": (c.ROOT / "models" / "diabetes_multitask.keras", c.ROOT / "fixtures" / "diabetes.npz"),
    "fcn": (c.ROOT / "models" / "photo_fcn.keras", c.ROOT / "fixtures" / "photos.npz"),
}


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    from pytest_tfopt.measure.fidelity import snr_db as snr

    return snr(ref, out)


def figures(model, ref) -> str:
    """top-1 / agreement of class outputs and SNR of every output, as one table cell."""
    ours, theirs = model.predictions(), ref.predictions()
    if not isinstance(ours, dict):
        ours, theirs = {"output": ours}, {"output": theirs}
    data = model.eval_dataset
    cells = []
    for name in sorted(ours):
        o, t = ours[name], theirs[name]
        text = f"snr {snr_db(t, o):.1f} dB"
        if o.ndim == 2 and o.shape[1] > 1:
            agree = float(np.mean(o.argmax(1) == t.argmax(1)))
            labels = data.labels(None if name == "output" else name)
            top1 = "" if labels is None else f"top1 {float(np.mean(o.argmax(1) == np.asarray(labels).reshape(-1))):.3f}, "
            text = f"{top1}agree {agree:.3f}, {text}"
        cells.append(text if name == "output" else f"{name}: {text}")
    return "; ".join(cells)


def settings_text(info: dict) -> str:
    """What the artifact says it was built with: the knobs that decide int8 accuracy per backend."""
    s, sel = info.get("settings", {}), info.get("selective")
    if info.get("backend") == "tflite":
        text = f"TFLiteConverter, per_channel={s.get('per_channel', 'True')}"
    elif info.get("backend") == "onnxruntime":
        text = f"quantize_static {s.get('format')}, per_channel={s.get('per_channel')}, reduce_range={s.get('reduce_range')}"
    else:
        text = f"{s.get('quantizer')} PERFORMANCE, overflow_fix={s.get('overflow_fix')}"
    if sel:
        of = f" of {sel['quantized_ops']}" if sel.get("quantized_ops") else ""
        text += (f"; {len(sel['float_layers'])}{of} ops float, calib drop {sel['rounds'][0]['drop']:.3f} -> "
                 f"{sel['drop']:.3f}")
    return text


def rows(name: str, max_drop: float | None) -> list[tuple[str, str, dict[str, str]]]:
    """(backend, variant, environment) of every row of model ``name``."""
    from pytest_tfopt.hardware import cpu_has_vnni

    other = "0" if not cpu_has_vnni() else "1"
    out = [("tflite", "int8", {}), ("onnxruntime", "int8", {}), ("onnxruntime", "int8", {ENV[1]: other})]
    out += [("openvino", "int8", {ENV[0]: mode}) for mode in MODES]
    if max_drop is not None and name in ("digits", "mobilenet"):  # one class output: what max_drop judges
        out += [("tflite", f"int8(max_drop={max_drop})", {})]
        out += [("openvino", f"int8(max_drop={max_drop})", {ENV[0]: mode}) for mode in MODES]
    return out


def run_row(path, dataset, cache: str, backend: str, variant: str, env: dict[str, str]) -> tuple[str, str, str]:
    """(build seconds, settings, figures) of one row; a failure is said in the figures cell."""
    from pytest_tfopt import Workbench

    for key in ENV:
        os.environ.pop(key, None)
    os.environ.update(env)
    wb = Workbench(str(path), dataset, cache_dir=cache, threads=2)
    try:
        fp32 = wb.runnable("fp32", backend)
        start = time.perf_counter()
        int8 = wb.runnable(variant, backend)
        seconds = f"{time.perf_counter() - start:.1f}"
        return seconds, settings_text(int8.info), figures(int8, fp32)
    except Exception as exc:  # a backend this machine lacks: say so and go on
        return "-", "-", f"failed: {str(exc).splitlines()[0][:100]}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="digits,mobilenet,multitask,fcn")
    p.add_argument("--max-drop", type=float, default=0.0, help="budget of the int8(max_drop=...) rows (default 0.0)")
    p.add_argument("--no-search", action="store_true", help="leave out the int8(max_drop=...) rows")
    args = p.parse_args()
    from pytest_tfopt.baseline import hardware
    from pytest_tfopt.hardware import cpu_has_vnni

    print(f"cpu: {hardware().get('cpu')}; VNNI: {cpu_has_vnni()}")
    print(f"{'model':10} {'backend':12} {'variant':20} {'build s':>7}  {'settings (from the artifact)':92} "
          "figures vs fp32 on the same backend")
    cache = tempfile.mkdtemp(prefix="bench-int8-")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        path, data = MODELS[name]
        dataset = mobilenet_dataset(200) if name == "mobilenet" else data
        for backend, variant, env in rows(name, None if args.no_search else args.max_drop):
            seconds, settings, shown = run_row(path, dataset, cache, backend, variant, env)
            print(f"{name:10} {backend:12} {variant:20} {seconds:>7}  {settings:92} {shown}", flush=True)
    for key in ENV:
        os.environ.pop(key, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
