"""Post-training quantization through ``tf.lite.TFLiteConverter``.

``fp32`` (no optimization), ``dynamic`` (dynamic-range int8 weights), ``float16``
(fp16 weights), ``int8`` (full integer, float I/O, calibrated), ``int8_io`` (full
integer with int8 input and output) and ``int16x8`` (int16 activations, int8 weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..dataset import Dataset
from ..errors import ConversionError, DatasetError, UsageError
from ..models import SourceModel
from . import Recipe, VariantRegistry


def configure(variant: str, converter: Any, calibration: Dataset | None,
               params: dict[str, Any] | None = None, signature: Any = None) -> dict[str, str]:
    """Set ``converter`` up for ``variant``; return the settings as strings (for metadata)."""
    tf = tfenv.tensorflow()
    settings: dict[str, str] = {}
    if variant == "fp32":
        return settings
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    settings["optimizations"] = "DEFAULT"
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
        settings["supported_types"] = "float16"
    if variant in ("int8", "int8_io", "int16x8"):
        if calibration is None or len(calibration) == 0:
            raise DatasetError(f"{variant} needs calibration data but the calibration set is empty: give tfopt_dataset training samples")
        # by input name, each in its own dtype: integer ids are fed as integers, never quantized
        converter.representative_dataset = calibration.representative_dataset(signature or np.float32)
        settings["representative_dataset"] = f"{len(calibration)} samples"
        ops = "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8" if variant == "int16x8" else "TFLITE_BUILTINS_INT8"
        converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, ops)]
        settings["supported_ops"] = ops
        if (params or {}).get("per_channel") is False:
            # one scale per weight tensor: k clustered centroids stay k int8 values (per-channel
            # scales turn them into ~k x channels distinct bytes), which is what gzip rewards
            converter._experimental_disable_per_channel = True
            settings["per_channel"] = "False"
    if variant == "int8_io":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        settings["inference_io_type"] = "int8"
    return settings


def _build(variant: str) -> Any:
    def build(source: SourceModel, calibration: Dataset | None, params: dict[str, Any]) -> Artifact:
        if source.kind == "tflite":
            if variant != "fp32":
                source.converter()  # raises the "already converted" error
            return Artifact(source.content or b"", {"variant": variant, "source": "tflite file as given"})
        if calibration is not None:
            source.check_inputs(calibration.x, "calibration data")
        # the converter prints to fd 2 (MLIR diagnostics, "fully_quantize: 0, ...") and warns: kept for a failure
        with tfenv.native_output(replay=True) as log:
            converter = source.converter()
            settings = configure(variant, converter, calibration, params, source.signature)
            try:
                content = converter.convert()
            except (DatasetError, KeyboardInterrupt):
                raise
            except Exception as exc:
                failure: Exception | None = exc
            else:
                failure = None
        if failure is not None:
            raise ConversionError(_failure_message(variant, source.name, failure, log)) from None
        return Artifact(content, {"variant": variant, "converter": "tf.lite.TFLiteConverter", "settings": settings})

    return build


def _failure_message(variant: str, name: str, exc: BaseException, log: tfenv.NativeLog) -> str:
    """One line: the converter's error, the remedy, then the last lines it printed (when any)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    detail = next((ln.strip() for ln in lines if "error" in ln.lower()), lines[0] if lines else type(exc).__name__)
    message = (f"TFLiteConverter could not build {variant} for {name}: {detail[:200]} "
               "(try another variant, or check the model's ops are TFLite builtins)")
    printed = log.tail()
    return f"{message}; converter log: {printed}" if printed else message


DESCRIPTIONS = {
    "fp32": "no optimization: the float reference",
    "dynamic": "dynamic-range quantization: int8 weights, float activations",
    "float16": "float16 weights",
    "int8": "full-integer quantization with float input/output, calibrated",
    "int8_io": "full-integer quantization with int8 input/output, calibrated",
    "int16x8": "int16 activations, int8 weights, calibrated",
}
CALIBRATED = ("int8", "int8_io", "int16x8")


def validate_calibration_size(params: dict[str, Any]) -> None:
    """``calibration_size`` is None (the ini default) or a whole number >= 1; ``per_channel`` a bool."""
    value = params.get("calibration_size")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"calibration_size={value!r} must be a whole number >= 1 (samples drawn from the training split)")
    per_channel = params.get("per_channel", True)
    if not isinstance(per_channel, bool):
        raise UsageError(
            f"per_channel={per_channel!r} must be True (one weight scale per output channel, the default) "
            "or False (one per tensor)"
        )


def register(registry: VariantRegistry) -> None:
    """Register the post-training quantization recipes."""
    for name, text in DESCRIPTIONS.items():
        calibrated = name in CALIBRATED
        params = {"calibration_size": None, "per_channel": True} if calibrated else {}
        registry.register(Recipe(name, _build(name), text, params, needs_calibration=calibrated,
                                 validate=validate_calibration_size if calibrated else None))
