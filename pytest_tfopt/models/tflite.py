"""``.tflite`` sources: read from the flatbuffer (no interpreter), kept as bytes, hashed as bytes.

Such a source runs as it is; it cannot be converted again (:meth:`SourceModel.converter` refuses).
"""

from __future__ import annotations

import hashlib
import os

from ..errors import ModelLoadError
from ..litert import inspect_tflite
from .source import DEFAULT_SIGNATURE, SourceModel, damaged


def load_tflite(path: str, signature: str = DEFAULT_SIGNATURE) -> SourceModel:
    """The ``.tflite`` file at ``path``, with the inputs and outputs of its ``signature`` (see :func:`~pytest_tfopt.litert.inspect_tflite`)."""
    with open(path, "rb") as fh:
        content = fh.read()
    try:
        sig, key = inspect_tflite(content, signature)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise damaged(path, exc) from None
    return SourceModel(
        "tflite", os.path.basename(path), sig, hashlib.sha256(content).hexdigest(),
        path=path, content=content, signature_key=key,
    )
