"""The ``bf16`` precision: bfloat16 compute under Keras' ``mixed_bfloat16`` policy.

Only the TensorFlow backends (``tf``, ``xla``) realize it (``backends/tf.py`` rebuilds the Keras model under
the policy); the recipe registered here is what every other backend meets, and it refuses with the reason.
"""

from __future__ import annotations

from typing import Any

from ..artifact import Artifact
from ..errors import BackendUnavailable, setting
from ..models import SourceModel
from . import Recipe

BF16_DESCRIPTION = (
    "bfloat16 compute (Keras mixed_bfloat16 policy: bf16 math and activations, float32 weights "
    "and outputs); runs on backends tf and xla"
)


def _bf16_on_tflite(source: SourceModel, calibration: Any, params: dict[str, Any]) -> Artifact:
    """``bf16``'s converter recipe: the TFLite converter has no bfloat16 target, so refuse with the reason."""
    raise BackendUnavailable(
        "variant 'bf16' is not available on backend 'tflite': the TFLite converter and LiteRT have no bfloat16 "
        f"kernels; run bf16 with {setting('backend', 'tf')} or xla"
    )


def register(registry: Any) -> None:
    """Register the ``bf16`` precision (realized by the ``tf`` and ``xla`` backends)."""
    registry.register(Recipe("bf16", _bf16_on_tflite, BF16_DESCRIPTION))
