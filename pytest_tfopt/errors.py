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
