"""Directories as artifact bytes: a deterministic zip (sorted names, fixed timestamps and modes).

A SavedModel is a directory; artifacts are bytes cached by content. :func:`pack` turns the
same directory contents into the same bytes in every process, :func:`unpack` refuses
members that would land outside the target directory.
"""

from __future__ import annotations

import io
import os
import zipfile

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip can hold


def pack(directory: str | os.PathLike) -> bytes:
    """The files under ``directory`` as zip bytes: names sorted, ``/``-separated, fixed time and mode."""
    root = os.fspath(directory)
    names = []
    for base, dirs, files in os.walk(root):
        dirs.sort()
        for fname in files:
            names.append(os.path.relpath(os.path.join(base, fname), root).replace(os.sep, "/"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name in sorted(names):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, so the mode above means the same everywhere
            with open(os.path.join(root, *name.split("/")), "rb") as fh:
                zf.writestr(info, fh.read(), compresslevel=6)
    return buf.getvalue()


def unpack(content: bytes, directory: str | os.PathLike) -> None:
    """Extract zip ``content`` into ``directory`` (which must exist)."""
    root = os.path.realpath(os.fspath(directory))
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        for name in zf.namelist():
            target = os.path.realpath(os.path.join(root, name))
            if os.path.commonpath([root, target]) != root:
                raise ValueError(f"archive member {name!r} points outside the target directory")
        zf.extractall(root)
