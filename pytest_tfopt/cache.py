"""On-disk artifact cache: content-addressed, atomic, and safe across processes.

Each artifact lives as ``KEY<suffix>`` beside ``KEY.json`` (its metadata and the
sha256 of its bytes). The JSON is written last, so an entry without it is
incomplete and ignored. Builds take a per-key file lock: under ``pytest -n 2``
one worker builds and the other waits, then reuses. Nothing is pickled.

Trust (see docs/security.md): the directory must be private to this user (owner, no group/other write)
unless the caller says it is a deliberately shared one (``trust_shared``); links are never followed; in a
shared cache, entries are signed with ``$TFOPT_CACHE_SECRET`` and artifacts that run code on load are
taken only with a valid signature.

Faults (see docs/reliability.md): a writer killed mid-write leaves at most a
``.tmp-*`` file, which the next writer of that key removes; its ``flock`` dies
with it. A full disk or an unwritable directory is a one-line :class:`CacheError`
and leaves no partial entry. A damaged entry is rebuilt with a warning, never served.

A cache directory given as a URL (``s3://...``) is :class:`~pytest_tfopt.remote_cache.RemoteArtifactCache`: this
cache on a private local copy, reading through to the remote.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import hashlib
import hmac
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import files, security
from .artifact import Artifact
from .errors import CacheError, setting

BUILD_LOG = "builds.log"
#: the subdirectory of small JSON records (a model file's identity, ...)
RECORDS = "records"
TMP_PREFIX = ".tmp-"
_SUFFIX = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_RECORD = re.compile(r"[a-z]+-[0-9a-f]{32}")
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def cache_key(parts: dict[str, Any]) -> str:
    """A stable key for ``parts`` (canonical JSON, sha256, 32 hex digits)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class CacheStats:
    """How many artifacts this process built and reused (and, with a remote cache, fetched from it and uploaded)."""

    built: int = 0
    reused: int = 0
    build_seconds: float = 0.0
    #: of the reused, how many came from a remote cache (:mod:`pytest_tfopt.remote_cache`)
    fetched: int = 0
    #: artifacts built here and sent to a remote cache
    uploaded: int = 0

    def add(self, other: CacheStats | dict[str, Any]) -> None:
        """Add ``other``'s counts (a :class:`CacheStats` or its :meth:`as_dict`, e.g. from an xdist worker)."""
        values = other if isinstance(other, dict) else other.as_dict()
        for name in self.as_dict():
            setattr(self, name, getattr(self, name) + values.get(name, 0))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cache_error(root: str, exc: OSError, doing: str = "write") -> CacheError:
    """A one-line :class:`CacheError` for an ``OSError`` met while using the cache at ``root``."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in _NO_SPACE:
        remedy = f"free disk space or choose another {setting('cache_dir')}"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOENT, errno.EEXIST):
        remedy = f"choose a writable {setting('cache_dir')}"
    else:
        remedy = f"check the disk or choose another {setting('cache_dir')}"
    return CacheError(f"cannot {doing} the artifact cache {root!r} ({reason}): {remedy}")


class ArtifactCache:
    """A directory of artifacts keyed by :func:`cache_key`.

    ``rebuild=True`` ignores existing entries once per key in this process. Nothing
    touches the disk until the first :meth:`get_or_build` (or :meth:`check`), so a
    bad directory is reported where the error can be shown as one line.
    """

    def __init__(self, root: str | os.PathLike, rebuild: bool = False, lock_timeout_s: float = 600.0,
                 trust_shared: bool = False):
        self.root = os.fspath(root)
        self.rebuild = rebuild
        self.trust_shared = trust_shared
        self.lock_timeout_s = lock_timeout_s
        self.stats = CacheStats()
        self._rebuilt: set[str] = set()
        self._checked = False

    def check(self) -> None:
        """Create the directory if need be and prove files can be created in it; else a :class:`CacheError`.

        A directory that exists but refuses new files (read-only mount, ``/proc``,
        no permission) would otherwise make the lock wait ``lock_timeout_s`` and then
        blame another process.
        """
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise cache_error(self.root, exc, "create") from None
        if self._checked:
            return
        try:
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=TMP_PREFIX, suffix=".probe")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise cache_error(self.root, exc) from None
        if not self.trust_shared:  # writable, but by whom else?
            security.check_private(self.root)
        self._checked = True

    def get_or_build(self, key: str, build: Callable[[], Artifact]) -> Artifact:
        """The cached artifact for ``key``, building and storing it when absent or damaged.

        Errors of ``build`` itself pass through unchanged; disk errors become a :class:`CacheError`.
        """
        from filelock import FileLock, Timeout

        self.check()  # also recreates the directory if someone removed it mid-run
        lock_path = os.path.join(self.root, key + ".lock")
        if security.is_link(lock_path):  # opening a planted link would truncate whatever it points at
            os.unlink(lock_path)
        lock = FileLock(lock_path, timeout=self.lock_timeout_s)
        try:
            lock.acquire()
        except Timeout:
            raise CacheError(
                f"waited {self.lock_timeout_s:.0f} s for another process building {key} in {self.root}: "
                f"remove the stale .lock file or use another {setting('cache_dir')}"
            ) from None
        except OSError as exc:
            raise cache_error(self.root, exc) from None
        try:
            self._sweep(key)
            if not (self.rebuild and key not in self._rebuilt):
                cached = self._read(key)
                if cached is not None:
                    self.stats.reused += 1
                    return cached
            start = time.perf_counter()
            artifact = build()
            self.stats.build_seconds += time.perf_counter() - start
            try:
                stored = self._write(key, artifact)
            except OSError as exc:
                raise cache_error(self.root, exc) from None
            self._rebuilt.add(key)
            self.stats.built += 1
            self._log(key, stored)
            return stored
        finally:
            lock.release()

    def _paths(self, key: str, suffix: str = ".tflite") -> tuple[str, str]:
        return os.path.join(self.root, key + suffix), os.path.join(self.root, key + ".json")

    def _sweep(self, key: str) -> None:
        """Remove temp files of ``key`` left by a writer that died (we hold the key's lock, so none is live)."""
        for path in glob.glob(os.path.join(glob.escape(self.root), f"{TMP_PREFIX}*{key}.*")):
            try:
                os.unlink(path)
            except OSError:
                pass

    def _read(self, key: str) -> Artifact | None:
        _, meta_path = self._paths(key)
        if not os.path.lexists(meta_path):
            return None
        try:
            entry = self._trusted_json(meta_path)
            if not is_entry(entry, key):
                raise ValueError("not a cache entry")
            data_path = os.path.join(self.root, key + entry["suffix"])
            self._trusted_file(data_path)
            with open(data_path, "rb") as fh:
                content = fh.read()
        except _Untrusted as exc:
            warnings.warn(f"pytest-tfopt: cache entry {key} is not trusted ({exc}); rebuilding it", stacklevel=3)
            return None
        except (OSError, ValueError):  # includes a missing artifact and undecodable or malformed JSON
            warnings.warn(f"pytest-tfopt: cache entry {key} is incomplete or damaged; rebuilding it", stacklevel=3)
            return None
        if hashlib.sha256(content).hexdigest() != entry["sha256"]:
            warnings.warn(
                f"pytest-tfopt: cached artifact {data_path} does not match its recorded hash; rebuilding it",
                stacklevel=3,
            )
            return None
        refused = self._signature_problem(key, entry, content)
        if refused:
            warnings.warn(f"pytest-tfopt: cache entry {key} in the shared cache {self.root} {refused}; rebuilding it",
                          stacklevel=3)
            return None
        return Artifact(content, entry["metadata"], entry["suffix"], data_path)

    def _trusted_json(self, path: str) -> Any:
        """The JSON document at ``path``, read only after :meth:`_trusted_file` (raises ``OSError``, ``ValueError``)."""
        self._trusted_file(path)
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)

    def _trusted_file(self, path: str) -> None:
        """Raise :class:`_Untrusted` for a link (never followed) or, in a private cache, a file that is not
        this user's or that group/others may write."""
        why = security.problem(path, directory=False, owned=not self.trust_shared)
        if why is not None:
            raise _Untrusted(f"{os.path.basename(path)}: {why}")

    def _signature_problem(self, key: str, entry: dict[str, Any], content: bytes) -> str | None:
        """Why a shared cache's entry may not be used (see :func:`signature_problem`); ``None`` in a private cache."""
        return signature_problem(key, entry, content) if self.trust_shared else None

    def _write(self, key: str, artifact: Artifact) -> Artifact:
        data_path, meta_path = self._paths(key, artifact.suffix)
        entry = {"key": key, "suffix": artifact.suffix, "sha256": artifact.sha256, "metadata": artifact.metadata}
        _sign(entry, key, json.loads(json.dumps(artifact.metadata, default=str)), artifact.content)
        meta = json.dumps(entry, indent=1, sort_keys=True, default=str).encode()
        _atomic_write(data_path, artifact.content)
        try:
            _atomic_write(meta_path, meta)
        except BaseException:
            # No artifact without its JSON: an old JSON would now disagree with the new bytes anyway.
            for path in (data_path, meta_path):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise
        return replace(artifact, path=data_path)

    # ---- small records: what the cache knows about its inputs (a source file's identity, measurements) ----
    def read_record(self, name: str) -> dict[str, Any] | None:
        """The JSON document stored as ``name`` (``source-<key>``, ...), or ``None`` when absent.

        Held to the same trust as artifacts (private directory, no links, signed in a shared cache); a damaged
        or untrusted record is ignored with a warning, so its caller computes the value again.
        """
        try:
            path = self._record_path(name)
        except CacheError as exc:
            warnings.warn(f"pytest-tfopt: {exc}; computing record {name} again", stacklevel=3)
            return None
        if not os.path.lexists(path):
            return None
        try:
            entry = self._trusted_json(path)
            if not (isinstance(entry, dict) and entry.get("record") == name and isinstance(entry.get("doc"), dict)):
                raise ValueError("not a record")
        except _Untrusted as exc:
            warnings.warn(f"pytest-tfopt: cache record {name} is not trusted ({exc}); computing it again",
                          stacklevel=3)
            return None
        except (OSError, ValueError):
            warnings.warn(f"pytest-tfopt: cache record {name} is damaged; computing it again", stacklevel=3)
            return None
        if self.trust_shared:
            secret = security.secret()
            if secret is None or not _signed(entry, name, entry["doc"], b"", secret):
                return None  # a shared cache's records count only when signed with our secret
        return entry["doc"]

    def write_record(self, name: str, doc: dict[str, Any]) -> None:
        """Store JSON-able ``doc`` as ``name`` (atomically, private); a disk error only costs the record."""
        entry: dict[str, Any] = {"record": name, "doc": json.loads(json.dumps(doc, default=str))}
        _sign(entry, name, entry["doc"], b"")
        try:
            self.check()
            _atomic_write(self._record_path(name, create=True), json.dumps(entry, sort_keys=True).encode())
        except (OSError, CacheError) as exc:
            warnings.warn(f"pytest-tfopt: cannot store cache record {name} ({exc})", stacklevel=3)

    def _record_path(self, name: str, create: bool = False) -> str:
        """``<root>/records/<name>.json``: apart from the artifact entries (``<key>.json``) they must not be taken for."""
        if not _RECORD.fullmatch(name):
            raise ValueError(f"bad record name {name!r}")
        directory = os.path.join(self.root, RECORDS)
        if security.is_link(directory):
            raise CacheError(f"{directory} is a link: the cache never follows links (remove it)")
        if create:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        return os.path.join(directory, name + ".json")

    def _log(self, key: str, artifact: Artifact) -> None:
        line = f"{time.time():.3f} pid={os.getpid()} key={key} variant={artifact.variant}\n"
        if security.is_link(os.path.join(self.root, BUILD_LOG)):
            return  # appending would write through a planted link
        try:
            with open(os.path.join(self.root, BUILD_LOG), "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:  # the artifact is stored; only the diagnostic log line is lost
            warnings.warn(f"pytest-tfopt: cannot append to {BUILD_LOG} in {self.root} ({exc.strerror})", stacklevel=3)


def is_entry(entry: Any, key: str) -> bool:
    """Whether ``entry`` (a decoded ``KEY.json``) is a well-formed cache entry of ``key``."""
    return (isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("suffix"), str)
            and bool(_SUFFIX.fullmatch(entry["suffix"])) and isinstance(entry.get("sha256"), str)
            and bool(re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])) and isinstance(entry.get("metadata"), dict))


def parse_entry(raw: bytes, key: str) -> dict[str, Any] | None:
    """The cache entry of ``key`` in the JSON bytes ``raw``, or ``None`` when they are not one."""
    try:
        entry = json.loads(raw)
    except ValueError:  # includes undecodable bytes
        return None
    return entry if is_entry(entry, key) else None


def signature_problem(key: str, entry: dict[str, Any], content: bytes) -> str | None:
    """Why a *shared* cache's entry may not be used: a bad or missing signature, or code-running bytes without
    ``$TFOPT_CACHE_SECRET`` to check them; ``None`` when it may."""
    secret = security.secret()
    if secret is None:
        if security.executes_on_load(entry["suffix"]):
            return f"runs code on load ({entry['suffix']}) and ${security.SECRET_ENV} is not set to check it"
        return None
    if not _signed(entry, key, entry["metadata"], content, secret):
        return "is unsigned or its signature does not match"
    return None


class _Untrusted(Exception):
    """A cache file that must not be read (a link, or someone else's)."""


def _sign(entry: dict[str, Any], key: str, doc: dict[str, Any], content: bytes) -> None:
    """Add the HMAC of ``key``, ``doc`` and ``content`` to ``entry`` when ``$TFOPT_CACHE_SECRET`` is set (never
    the secret itself)."""
    secret = security.secret()
    if secret is not None:
        entry["hmac"] = security.signature(key, doc, content, secret)


def _signed(entry: dict[str, Any], key: str, doc: dict[str, Any], content: bytes, secret: bytes) -> bool:
    """Whether ``entry`` carries the HMAC of ``key``, ``doc`` and ``content`` under ``secret``."""
    return hmac.compare_digest(str(entry.get("hmac", "")), security.signature(key, doc, content, secret))


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and rename: readers never see half a file; private (0600)."""
    files.write_atomic(path, data, mode=files.PRIVATE, prefix=TMP_PREFIX)
