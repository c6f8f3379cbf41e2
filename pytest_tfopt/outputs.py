"""Output paths (reports, baselines, result files): checked before the long work starts."""

from __future__ import annotations

import os

from .errors import UsageError


def check_writable(path: str, option: str) -> None:
    """Fail before the long work when ``path`` obviously cannot be written (a directory, a read-only parent)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise UsageError(f"{option} {path!r} is a directory: give a file name")
    check_writable_dir(os.path.dirname(path), option, path)


def check_writable_dir(directory: str, option: str, shown: str | None = None) -> None:
    """Fail when ``directory`` (or the nearest existing parent it would be made in) cannot be written."""
    parent = os.path.abspath(directory)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {shown or directory!r} cannot be written ({parent!r} is not a writable directory)")
