"""A shared artifact cache behind an fsspec URL (``s3://``, ``gs://``, ``az://``, ``file://``, ...).

The local cache stays the one the code reads: a private read-through copy per remote (under the per-user cache
directory, one subdirectory per URL hash). On a local miss the remote is asked; its entry is downloaded,
verified (the recorded sha256, and the shared-cache signature rules of :mod:`~pytest_tfopt.cache`) and only
then published locally through the local cache's atomic path. After a local build the artifact is uploaded.

Remote layout (``<url>/``): ``KEY.json`` (the entry, as locally) and its payload ``KEY-<sha256[:16]><suffix>``,
named for its bytes; ``records/<name>.json`` for small records. The payload goes first and ``KEY.json`` last,
each written whole: one PUT on an object store (S3, GCS, Azure: an object appears complete or not at all),
elsewhere (``file://``, ...) a unique ``.tmp-<uuid>-...`` name moved to the final one. A reader never sees half
an object, a key is published only by its JSON, and because the JSON names the payload by its hash, two
writers racing on one key each publish a consistent pair (the last JSON wins; both verify).

Failures (see docs/reliability.md): a remote that is missing, denied or unreachable costs one warning line
and the session continues on the local copy (``strict``: a :class:`CacheError` instead). Credentials come
only from fsspec's and the cloud SDKs' standard sources; ``user:pass@`` in a URL is stripped from every
message (:func:`redact`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any

from . import security
from .artifact import Artifact
from .cache import RECORDS, TMP_PREFIX, ArtifactCache, _atomic_write, _signed, parse_entry, signature_problem
from .errors import CacheError, UsageError, first_line, setting

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_LOCAL_PROTOCOLS = ("file", "local")
#: object stores whose PUT is atomic (an object appears whole, on completion, or not at all): no temp name needed
_ATOMIC_PUT = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
#: written beside the first upload: a cache that has it answers the probe with one small read, not a listing
MARKER = ".tfopt-remote-cache.json"
#: a remote JSON (entry or record) larger than this is refused unread as damaged
MAX_JSON_BYTES = 1 << 20
#: per-process: remotes found unreachable (redacted URL → reason), so later caches of this process stay silent
_UNREACHABLE: dict[str, str] = {}
#: per-process: remotes that refused an upload (read-only credentials, a full bucket): still read, never written
_NO_UPLOADS: set[str] = set()
#: per-process: remotes whose one warning line was given
_WARNED: set[str] = set()


def is_url(path: str | os.PathLike) -> bool:
    """Whether a cache directory setting is a URL (``scheme://...``) rather than a local path."""
    return bool(_SCHEME.match(os.fspath(path)))


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it removed."""
    return _USERINFO.sub(r"\1", text)


def describe(cache_dir: str | os.PathLike) -> str:
    """How to show a cache setting: a redacted URL, or the normalized local path."""
    value = os.fspath(cache_dir)
    return redact(value.rstrip("/")) if is_url(value) else os.path.normpath(value)


def open_cache(root: str | os.PathLike, rebuild: bool = False, *, trust_shared: bool = False,
               lock_timeout_s: float = 600.0, strict: bool = False,
               warn: Callable[[str], None] | None = None) -> ArtifactCache:
    """The cache for a ``--tfopt-cache-dir`` setting: a :class:`RemoteArtifactCache` for a URL, else the local
    :class:`ArtifactCache` exactly as before."""
    if is_url(root):
        return RemoteArtifactCache(os.fspath(root), rebuild, lock_timeout_s=lock_timeout_s, strict=strict, warn=warn)
    return ArtifactCache(root, rebuild, lock_timeout_s, trust_shared=trust_shared)


def local_copy_dir(url: str) -> str:
    """The private read-through directory of the remote ``url`` (per user, one per redacted URL)."""
    return security.user_cache_dir("remote", hashlib.sha256(describe(url).encode()).hexdigest()[:16])


def payload_name(key: str, entry: dict[str, Any]) -> str:
    """The remote name of an entry's bytes: ``KEY-<sha256[:16]><suffix>``."""
    return f"{key}-{entry['sha256'][:16]}{entry['suffix']}"


class RemoteStore:
    """Objects under one fsspec URL: get, atomic put, list, remove. Errors other than a missing object raise."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.display = describe(url)
        if self.display != self.url:
            raise UsageError(f"the cache URL {self.display} carries credentials (user:password@): remove them and "
                             "configure them where fsspec and the cloud SDKs look (environment variables, profile "
                             "or fsspec config files), which are never printed")
        try:
            import fsspec  # lazy: an optional dependency (the [s3] / [gcs] extras), needed only for a URL
        except ImportError:
            raise UsageError(f"the cache {self.display} is a URL, which needs fsspec: pip install "
                             "'pytest-tfopt[s3]' (or [gcs], or fsspec and your filesystem's package)") from None
        protocol = _SCHEME.match(self.url).group(1).lower()  # type: ignore[union-attr]
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.url, **_timeouts(protocol, fsspec.config.conf))
        except ImportError as exc:  # fsspec knows the protocol, its package is missing
            raise UsageError(f"the cache {self.display} needs a package: {redact(first_line(exc))}") from None
        except ValueError as exc:  # an unknown protocol
            raise UsageError(f"the cache {self.display}: {redact(first_line(exc))}") from None
        self.on_disk = protocol in _LOCAL_PROTOCOLS
        self.atomic_put = protocol in _ATOMIC_PUT
        self.marked = False

    def path(self, name: str) -> str:
        return f"{self.base.rstrip('/')}/{name}"

    def probe(self) -> None:
        """Prove the remote answers: its :data:`MARKER` can be read or, before the first upload, its directory
        (when that is still empty, its bucket) can be listed."""
        if self.on_disk:
            self.fs.makedirs(self.base, exist_ok=True)
        self.marked = self.get(MARKER) is not None
        if self.marked:
            return
        try:
            self.fs.ls(self.base, detail=False)
        except FileNotFoundError:
            if self.on_disk or "/" not in self.base.strip("/"):
                raise
            self.fs.ls(self.base.strip("/").split("/")[0], detail=False)  # a fresh prefix in a bucket that exists
        self.fs.invalidate_cache()

    def get(self, name: str, limit: int | None = None) -> bytes | None:
        """The bytes of object ``name``, or ``None`` when it does not exist (or is larger than ``limit``)."""
        try:
            if limit is None:
                return self.fs.cat_file(self.path(name))
            data = self.fs.cat_file(self.path(name), start=0, end=limit + 1)  # one ranged read, no size request
            return data if len(data) <= limit else None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):  # no such object (a prefix is none)
            return None

    def put(self, name: str, data: bytes) -> None:
        """Write ``name`` so that no reader sees a partial object: one PUT on an object store, else a unique
        temp name, then a move."""
        final = self.path(name)
        if self.atomic_put:
            self.fs.pipe_file(final, data)
            return
        tmp = self.path(f"{os.path.dirname(name)}/{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(name)}".lstrip("/"))
        if self.on_disk:
            self.fs.makedirs(os.path.dirname(final), exist_ok=True)
        self.fs.pipe_file(tmp, data)
        try:
            self.fs.mv(tmp, final)
        except BaseException:
            self.remove(tmp)
            raise

    def listing(self) -> list[dict[str, Any]]:
        """Every object (``name`` relative to the base, ``size``, ``mtime`` in epoch seconds or ``None``)."""
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self.base, detail=True)
        except FileNotFoundError:
            return []
        prefix = self.base.strip("/") + "/"
        return [{"name": path.strip("/")[len(prefix):], "size": info.get("size") or 0, "mtime": _mtime(info)}
                for path, info in sorted(found.items()) if info.get("type", "file") == "file"]

    def remove(self, name_or_path: str) -> None:
        path = name_or_path if name_or_path.startswith(self.base) else self.path(name_or_path)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass


class RemoteArtifactCache(ArtifactCache):
    """An :class:`ArtifactCache` on a private local copy that reads through to, and uploads to, a remote URL.

    The remote is a *shared* cache whatever ``trust_shared`` says: its entries are held to the signature rules
    of a shared cache (``$TFOPT_CACHE_SECRET``), its records count only when signed. ``strict``: an unreachable
    remote is a :class:`CacheError`, not a warning. ``warn``: where the one warning line goes (default: a
    Python warning). ``fetched`` counts the artifacts taken from the remote (they are also ``reused``), ``uploaded`` those sent.
    """

    def __init__(self, url: str, rebuild: bool = False, *, lock_timeout_s: float = 600.0, strict: bool = False,
                 warn: Callable[[str], None] | None = None, local_dir: str | None = None) -> None:
        super().__init__(local_dir or local_copy_dir(url), rebuild, lock_timeout_s, trust_shared=False)
        self.url = url.rstrip("/")
        self.display = describe(url)
        self.strict = strict
        self._warn = warn or _python_warning
        self._store: RemoteStore | None = None
        self.remote_problem: str | None = _UNREACHABLE.get(self.display)

    @property
    def fetched(self) -> int:
        """Artifacts taken from the remote (``stats.fetched``)."""
        return self.stats.fetched

    @property
    def uploaded(self) -> int:
        """Artifacts sent to the remote (``stats.uploaded``)."""
        return self.stats.uploaded

    @property
    def online(self) -> bool:
        """Whether the remote is used (reachable when first asked, and no error since)."""
        return self._connect() is not None

    def check(self) -> None:
        super().check()
        self._connect()

    def _connect(self) -> RemoteStore | None:
        if self.remote_problem is not None and self.strict:  # found dead earlier in this process
            raise self._strict_error("unreachable", self.remote_problem)
        if self._store is None and self.remote_problem is None:
            store = RemoteStore(self.url)  # a usage error (no fsspec, unknown protocol) is raised, never degraded
            try:
                store.probe()
            except Exception as exc:  # any SDK's error: missing, denied, unreachable, timed out
                self._lost(exc, "unreachable")
                return None
            self._store = store
        return self._store

    def _lost(self, exc: BaseException, what: str = "failed", reads: bool = True) -> None:
        """Stop using the remote (``reads=False``: only uploading to it) for the rest of this process: one
        warning line per remote and process, or under ``strict`` an error."""
        reason = redact(first_line(exc))
        if self.strict:
            raise self._strict_error(what, reason)
        if reads:
            self._store = None
            self.remote_problem = _UNREACHABLE.setdefault(self.display, reason)
        else:
            _NO_UPLOADS.add(self.display)
        if self.display not in _WARNED:
            _WARNED.add(self.display)
            then = "using the local cache only" if reads else "reading it, not writing it"
            self._warn(f"WARNING remote cache {self.display} {what} ({reason}): {then}")

    def _uploader(self) -> RemoteStore | None:
        return None if self.display in _NO_UPLOADS else self._connect()

    def _strict_error(self, what: str, reason: str) -> CacheError:
        return CacheError(f"remote cache {self.display} {what} ({reason}): fix its URL, bucket or credentials, "
                          f"or run without {setting('strict')} to use the local cache only")

    # ---- artifacts ----
    def _read(self, key: str) -> Artifact | None:
        found = super()._read(key)
        if found is not None or self._connect() is None:
            return found
        try:
            fetched = self._fetch(key)
        except Exception as exc:
            self._lost(exc)
            return None
        return super()._read(key) if fetched else None

    def _fetch(self, key: str) -> bool:
        """Download ``key``'s entry and payload, verify them as a shared cache's, publish them locally."""
        store = self._store
        raw = store.get(f"{key}.json", MAX_JSON_BYTES)  # type: ignore[union-attr]
        if raw is None:
            return False
        entry = parse_entry(raw, key)
        content = None if entry is None else store.get(payload_name(key, entry))  # type: ignore[union-attr]
        if entry is None or content is None:
            return self._refuse(key, "is incomplete or damaged")
        if hashlib.sha256(content).hexdigest() != entry["sha256"]:
            return self._refuse(key, "does not match its recorded hash")
        refused = signature_problem(key, entry, content)
        if refused:
            return self._refuse(key, refused)
        data_path, meta_path = self._paths(key, entry["suffix"])
        _atomic_write(data_path, content)
        _atomic_write(meta_path, raw)  # last: the local entry is published by its JSON, as in the local cache
        self.stats.fetched += 1
        return True

    def _refuse(self, key: str, why: str) -> bool:
        warnings.warn(f"pytest-tfopt: remote cache entry {key} in {self.display} {why}; rebuilding it", stacklevel=4)
        return False

    def _write(self, key: str, artifact: Artifact) -> Artifact:
        stored = super()._write(key, artifact)
        store = self._uploader()
        if store is not None:
            _, meta_path = self._paths(key)
            try:
                with open(meta_path, "rb") as fh:
                    meta = fh.read()
                store.put(payload_name(key, json.loads(meta)), artifact.content)
                store.put(f"{key}.json", meta)  # last: publishes the key
                if not store.marked:
                    store.put(MARKER, json.dumps({"layout": 1}).encode())
                    store.marked = True
                self.stats.uploaded += 1
            except Exception as exc:
                self._lost(exc, "refused an upload", reads=False)
        return stored

    # ---- records ----
    def read_record(self, name: str) -> dict[str, Any] | None:
        found = super().read_record(name)
        if found is not None or security.secret() is None or self._connect() is None:
            return found  # without the secret a shared cache's records never count: don't even ask
        try:
            local = self._record_path(name, create=True)  # also refuses a bad name before it reaches the remote
        except (OSError, ValueError, CacheError):
            return None
        try:
            raw = self._store.get(f"{RECORDS}/{name}.json", MAX_JSON_BYTES)  # type: ignore[union-attr]
        except Exception as exc:
            self._lost(exc)
            return None
        if raw is None or not _signed_record(raw, name):
            return None
        try:
            _atomic_write(local, raw)
        except OSError:
            return None
        return super().read_record(name)

    def write_record(self, name: str, doc: dict[str, Any]) -> None:
        super().write_record(name, doc)
        store = self._uploader()
        if store is None or security.secret() is None:
            return  # an unsigned record would count for no reader of a shared cache
        try:
            with open(self._record_path(name), "rb") as fh:
                data = fh.read()
        except (OSError, ValueError, CacheError):
            return  # the local record is missing: nothing to share
        try:
            store.put(f"{RECORDS}/{name}.json", data)
        except Exception as exc:
            self._lost(exc, "refused an upload", reads=False)


def _signed_record(raw: bytes, name: str) -> bool:
    try:
        entry = json.loads(raw)
    except ValueError:
        return False
    secret = security.secret()
    return (isinstance(entry, dict) and entry.get("record") == name and isinstance(entry.get("doc"), dict)
            and secret is not None and _signed(entry, name, entry["doc"], b"", secret))


def _timeouts(protocol: str, conf: dict[str, Any]) -> dict[str, Any]:
    """Short timeouts and few retries for object stores, unless the user's fsspec config sets their own: an
    unreachable remote must cost seconds, not minutes."""
    if protocol in ("s3", "s3a") and "config_kwargs" not in conf.get(protocol, {}):
        return {"config_kwargs": {"connect_timeout": 5, "read_timeout": 30,
                                  "retries": {"max_attempts": 2, "mode": "standard"}}}
    return {}


def _mtime(info: dict[str, Any]) -> float | None:
    """An object's modification time in epoch seconds from an fsspec ``info`` (each backend names it its way)."""
    for field in ("mtime", "LastModified", "updated", "last_modified", "created"):
        value = info.get(field)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if hasattr(value, "timestamp"):
            return value.timestamp()
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return None


def _python_warning(message: str) -> None:
    warnings.warn(f"pytest-tfopt: {message}", stacklevel=4)
