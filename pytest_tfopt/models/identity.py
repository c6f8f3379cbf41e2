"""A source model's identity — name, hash, signature — remembered per file, so a warm run needs no TensorFlow.

The artifact cache keys on the model's hash (of its config and weights for Keras files), which takes loading the
model, and loading a Keras model imports TensorFlow. The first load of a file stores a record mapping the sha256
of the file's bytes (every file of a SavedModel directory) to what the cache key and the input checks need;
later runs read it back (:func:`from_record`) and load the model only when something must be built. One changed
byte of the file is another fingerprint: the record no longer applies and the model is loaded again.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from ..cache import cache_key
from ..signature import Signature
from .saved_model import hash_dir
from .source import SourceModel

#: the record layout; a new one ignores the old records (they are recomputed)
RECORD_VERSION = 1


def file_fingerprint(path: str) -> str | None:
    """sha256 of the bytes of the model file (of every file of a directory), or ``None`` when unreadable."""
    try:
        if os.path.isdir(path):
            return hash_dir(path)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def record_name(fingerprint: str, signature_key: str) -> str:
    """The cache record of a file with this fingerprint, tested through ``signature_key``."""
    return "source-" + cache_key({"file": fingerprint, "signature": signature_key, "version": RECORD_VERSION})


def to_record(source: SourceModel) -> dict[str, Any]:
    """What :func:`from_record` needs, JSON-able (never the model: building always loads it)."""
    return {"kind": source.kind, "name": source.name, "hash": source.hash, "signature": source.signature.to_dict(),
            "signature_key": source.signature_key}


def from_record(doc: dict[str, Any], path: str) -> SourceModel:
    """A :class:`SourceModel` without its model (``model`` is ``None``): enough for cache keys and input checks.

    ``ValueError`` for a record that is not one.
    """
    fields = ("kind", "name", "hash", "signature_key")
    if not all(isinstance(doc.get(f), str) for f in fields) or doc["kind"] not in ("keras3", "tf_keras",
                                                                                    "saved_model", "tflite"):
        raise ValueError("not a source record")
    return SourceModel(doc["kind"], doc["name"], Signature.from_dict(doc["signature"]), doc["hash"], model=None,
                       path=path, signature_key=doc["signature_key"])
