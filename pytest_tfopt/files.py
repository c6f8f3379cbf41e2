"""Files written atomically: a reader sees the old file or the whole new one, never half of one.

Reports, baselines, results documents, CLI artifacts and the artifact cache's entries all go through
:func:`write_atomic`; only the mode differs (:data:`PUBLIC` for what the user reads and shares,
:data:`PRIVATE` for cache entries, see :mod:`pytest_tfopt.security`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

#: the mode ``open()`` gives a new file: ``0o666`` less the umask (reports, baselines, results, artifacts)
PUBLIC = 0o666
#: this user only, whatever the umask allows (cache entries)
PRIVATE = 0o600
#: how temp files start (the artifact cache passes its own, by which it sweeps leftovers of killed writers)
TMP_PREFIX = ".tmp-tfopt-"


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = PUBLIC, prefix: str = TMP_PREFIX) -> str:
    """Write ``data`` to ``path`` through a temp file in the same directory, ``fsync`` and ``os.replace``.

    The file gets ``mode`` less the umask, as ``open()`` would give it (:data:`PUBLIC`), or stays
    ``0o600`` (:data:`PRIVATE`). The temp file, named ``<prefix>…<basename>``, is removed on any failure,
    interruptions included; ``OSError`` passes through. The directory must exist. Returns ``path``.
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=prefix, suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode != PRIVATE:  # mkstemp made it 0600 less the umask already
            os.chmod(tmp, mode & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def umask() -> int:
    """This process's umask, read without changing it where the system says (Linux); else set and restored."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    current = os.umask(0o077)  # briefly the strictest sensible mask, never 0: no file made meanwhile is exposed
    os.umask(current)
    return current
