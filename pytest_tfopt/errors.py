"""One exception family for pytest-tfopt.

Every message names the problem and the remedy in one line. The plugin turns
:class:`UsageError` into ``pytest.UsageError`` (exit code 4) and the others into
test failures with no traceback.
"""

from __future__ import annotations


class TfoptError(Exception):
    """Base class of every error pytest-tfopt raises on purpose."""


class UsageError(TfoptError):
    """A bad option, ini value, marker argument or variant name."""


class ModelLoadError(TfoptError):
    """A model path is missing, of an unknown kind, or its file is damaged."""


class DatasetError(TfoptError):
    """A data set is missing, empty, malformed, or does not fit the model."""


class ConversionError(TfoptError):
    """A converter refused to build a variant."""


class BackendUnavailable(TfoptError):
    """A backend cannot run on this machine; the message names what is missing."""


class CacheError(TfoptError):
    """The artifact cache cannot be read or written."""


def first_line(exc: BaseException, limit: int = 200, empty: str | None = None) -> str:
    """The first non-blank line of ``exc``'s message, stripped and cut to ``limit`` characters.

    For quoting a library's error inside one of ours (messages stay one line). An exception with an
    empty message gives ``empty``, by default its type name (``ValueError``).
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__ if empty is None else empty
    return lines[0][:limit]
