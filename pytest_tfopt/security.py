"""Whom the artifact cache trusts: private directories, no followed links, signed entries in shared caches.

The threat (docs/security.md): on a shared machine another user who can write into a cache directory can
plant an artifact under a variant's key (a good model under a bad variant's key turns a broken gate green)
and fix up the sha256 recorded beside it. Some artifacts execute on load (SavedModels run TensorFlow ops,
TensorRT engines can carry plugins). So:

- defaults live in the per-user cache directory (``~/.cache/pytest-tfopt`` on Linux), created ``0700``;
- a cache directory must be owned by the current user and not writable by group or others (OpenSSH's rule
  for ``~/.ssh``) unless the user says it is a deliberately shared team cache (``--tfopt-cache-trust-shared``);
- in a shared cache, entries are signed with an HMAC over key, metadata and bytes with the secret in
  ``$TFOPT_CACHE_SECRET``; unsigned or badly signed entries are rebuilt, never loaded — and without a
  secret, entries that execute on load are never taken from a shared cache.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import sys
from typing import Any

from .errors import CacheError, setting

SECRET_ENV = "TFOPT_CACHE_SECRET"
APP = "pytest-tfopt"
#: artifact file endings whose loading runs code: SavedModels (TensorFlow ops), TensorRT engines (plugins)
EXECUTES_ON_LOAD = (".savedmodel.zip", ".engine", ".plan", ".trt")


def user_cache_dir(*parts: str) -> str:
    """The per-user cache directory of pytest-tfopt (``~/.cache/pytest-tfopt`` on Linux), joined with ``parts``."""
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir(APP, appauthor=False), *parts)


def private_dir(path: str) -> str:
    """``path`` created (with its parents) as a directory only this user can use (``0700``); checked after."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"cannot create {path!r} ({exc.strerror or exc}): choose another directory") from None
    check_private(path)
    return path


def problem(path: str, directory: bool = True, owned: bool = True) -> str | None:
    """Why ``path`` is not private (a link, not a directory when one is wanted, and with ``owned`` another
    owner or group/other write), else ``None``; a path that does not exist is no problem here."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None  # created private by whoever creates it
    except OSError as exc:
        return f"it cannot be inspected ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return f"it is a symbolic link to {os.path.realpath(path)!r}"
    if directory and not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if not owned or sys.platform == "win32":  # POSIX owners and modes do not apply; the per-user default is private there
        return None
    if st.st_uid != os.getuid():
        return f"it is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by {'group and others' if st.st_mode & stat.S_IWOTH else 'its group'} " \
               f"(mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_private(path: str) -> None:
    """Raise a one-line :class:`CacheError` when ``path`` is not a private directory (see :func:`problem`)."""
    why = problem(path)
    if why is not None:
        raise CacheError(
            f"refusing the artifact cache {path!r}: {why}, so others could plant artifacts in it; use a directory "
            f"only you can write (chmod 700 {path}), or pass {setting('cache_trust_shared')} for a deliberately shared "
            f"team cache (entries are then signed with ${SECRET_ENV})"
        )


def tighten(path: str) -> None:
    """Make a directory of ours that group or others can reach ``0700`` (pytest creates its cache directories
    with the umask's mode); anything else is left for :func:`check_private` to report."""
    try:
        st = os.lstat(path)
        if (stat.S_ISDIR(st.st_mode) and hasattr(os, "getuid") and st.st_uid == os.getuid()
                and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)):
            os.chmod(path, 0o700)
    except OSError:
        pass  # reported as one line when the cache is first used


def is_link(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def secret() -> bytes | None:
    """The signing secret from ``$TFOPT_CACHE_SECRET`` (never printed), or ``None``."""
    value = os.environ.get(SECRET_ENV, "")
    return value.encode() if value else None


def signature(key: str, metadata: dict[str, Any], content: bytes, secret_value: bytes) -> str:
    """HMAC-SHA256 over the key, the canonical metadata JSON and the bytes' sha256."""
    message = json.dumps({"key": key, "metadata": metadata, "sha256": hashlib.sha256(content).hexdigest()},
                         sort_keys=True, separators=(",", ":"), default=str).encode()
    return hmac.new(secret_value, message, hashlib.sha256).hexdigest()


def executes_on_load(suffix: str) -> bool:
    """Whether loading an artifact of this kind runs code from it (SavedModels, TensorRT engines)."""
    return suffix.lower().endswith(EXECUTES_ON_LOAD)
