"""Artifacts: the bytes a variant recipe produced plus where they came from."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Artifact:
    """A built model (e.g. a ``.tflite`` flatbuffer) and its provenance.

    ``metadata`` holds the variant, converter settings, source-model hash,
    calibration-data hash and library versions. ``path`` is where the cache keeps
    it (``None`` for an artifact that was never cached).
    """

    content: bytes = field(repr=False)
    metadata: dict[str, Any]
    suffix: str = ".tflite"
    path: str | None = None

    @property
    def variant(self) -> str:
        return str(self.metadata.get("variant", "?"))

    @property
    def size_bytes(self) -> int:
        """Size of the serialized model, bytes."""
        return len(self.content)

    @property
    def gzip_size_bytes(self) -> int:
        """Size after gzip -9 (what a download of it costs), bytes."""
        return len(gzip.compress(self.content, compresslevel=9, mtime=0))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()
