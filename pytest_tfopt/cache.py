"""On-disk artifact cache: content-addressed, atomic, and safe across processes.

Each artifact lives as ``KEY<suffix>`` beside ``KEY.json`` (its metadata and the
sha256 of its bytes). The JSON is written last, so an entry without it is
incomplete and ignored. Builds take a per-key file lock: under ``pytest -n 2``
one worker builds and the other waits, then reuses. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .artifact import Artifact
from .errors import CacheError

BUILD_LOG = "builds.log"


def cache_key(parts: dict[str, Any]) -> str:
    """A stable key for ``parts`` (canonical JSON, sha256, 32 hex digits)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class CacheStats:
    """How many artifacts this process built and reused."""

    built: int = 0
    reused: int = 0
    build_seconds: float = 0.0


class ArtifactCache:
    """A directory of artifacts keyed by :func:`cache_key`.

    ``rebuild=True`` ignores existing entries once per key in this process.
    """

    def __init__(self, root: str | os.PathLike, rebuild: bool = False, lock_timeout_s: float = 600.0):
        self.root = os.fspath(root)
        self.rebuild = rebuild
        self.lock_timeout_s = lock_timeout_s
        self.stats = CacheStats()
        self._rebuilt: set[str] = set()
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot create the artifact cache {self.root!r} ({exc.strerror}): "
                "choose a writable --tfopt-cache-dir"
            ) from None

    def get_or_build(self, key: str, build: Callable[[], Artifact]) -> Artifact:
        """The cached artifact for ``key``, building and storing it when absent or damaged."""
        from filelock import FileLock, Timeout

        lock = FileLock(os.path.join(self.root, key + ".lock"), timeout=self.lock_timeout_s)
        try:
            with lock:
                if not (self.rebuild and key not in self._rebuilt):
                    cached = self._read(key)
                    if cached is not None:
                        self.stats.reused += 1
                        return cached
                start = time.perf_counter()
                artifact = build()
                self.stats.build_seconds += time.perf_counter() - start
                stored = self._write(key, artifact)
                self._rebuilt.add(key)
                self.stats.built += 1
                self._log(key, stored)
                return stored
        except Timeout:
            raise CacheError(
                f"waited {self.lock_timeout_s:.0f} s for another process building {key} in {self.root}: "
                "remove the stale .lock file or use another --tfopt-cache-dir"
            ) from None
        except PermissionError as exc:
            raise CacheError(
                f"cannot write the artifact cache {self.root!r} ({exc.strerror}): choose a writable --tfopt-cache-dir"
            ) from None

    def _paths(self, key: str, suffix: str = ".tflite") -> tuple[str, str]:
        return os.path.join(self.root, key + suffix), os.path.join(self.root, key + ".json")

    def _read(self, key: str) -> Artifact | None:
        _, meta_path = self._paths(key)
        if not os.path.exists(meta_path):
            return None
        try:
            with open(meta_path, encoding="utf-8") as fh:
                entry = json.load(fh)
            data_path = os.path.join(self.root, key + entry["suffix"])
            with open(data_path, "rb") as fh:
                content = fh.read()
        except (OSError, ValueError, KeyError):
            warnings.warn(f"pytest-tfopt: cache entry {key} is incomplete; rebuilding it", stacklevel=2)
            return None
        if hashlib.sha256(content).hexdigest() != entry.get("sha256"):
            warnings.warn(
                f"pytest-tfopt: cached artifact {data_path} does not match its recorded hash; rebuilding it",
                stacklevel=2,
            )
            return None
        return Artifact(content, entry["metadata"], entry["suffix"], data_path)

    def _write(self, key: str, artifact: Artifact) -> Artifact:
        data_path, meta_path = self._paths(key, artifact.suffix)
        _atomic_write(data_path, artifact.content)
        entry = {"key": key, "suffix": artifact.suffix, "sha256": artifact.sha256, "metadata": artifact.metadata}
        _atomic_write(meta_path, json.dumps(entry, indent=1, sort_keys=True, default=str).encode())
        return replace(artifact, path=data_path)

    def _log(self, key: str, artifact: Artifact) -> None:
        line = f"{time.time():.3f} pid={os.getpid()} key={key} variant={artifact.variant}\n"
        with open(os.path.join(self.root, BUILD_LOG), "a", encoding="utf-8") as fh:
            fh.write(line)


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
