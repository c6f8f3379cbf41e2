"""One exception family for pytest-tfopt.

Every message names the problem and the remedy in one line. The plugin turns
:class:`UsageError` into ``pytest.UsageError`` (exit code 4) and the others into
test failures with no traceback.

Front-end neutral: where a remedy names a setting, the core writes :func:`setting` and the front end that runs
spells it — ``--tfopt-rebuild`` under pytest, ``--rebuild`` in the ``tfopt`` CLI, ``rebuild=True`` (the core API's
keyword) when neither runs. Each front end enters :func:`front_end` with its spelling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


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


# ---- settings named in remedies, spelled by the front end that runs --------------------------------------
#: how the core API spells a setting when no front end runs (its keyword, or what to call)
LIBRARY_SPELLING = {
    "rebuild": "rebuild=True", "cache_dir": "cache_dir", "cache_trust_shared": "trust_shared=True",
    "backend": "backend", "threads": "threads", "budgets": "the budgets file's path",
    "save_baseline": "pytest_tfopt.baseline.save()", "report": "the report's path", "perf": "perf",
    "inconclusive": "inconclusive", "serving_url": "url", "serving_timeout": "timeout_s", "strict": "strict",
    "history": "pytest --tfopt-history", "mlflow": "the MLflow tracking URI", "remeasure": "remeasure",
}
#: a front end's spelling: setting name -> its spelling, or ``None`` for one it does not have
Spelling = Callable[[str], "str | None"]
_front_ends: list[Spelling] = []


def setting(name: str, value: str | None = None) -> str:
    """How the running front end spells setting ``name`` (with ``value``: ``--tfopt-backend=tf``,
    ``--backend=tf``, ``backend='tf'``)."""
    for spelling in reversed(_front_ends):
        spelled = spelling(name)
        if spelled is not None:
            return spelled if value is None else f"{spelled}={value}"
    spelled = LIBRARY_SPELLING.get(name, name)
    return spelled if value is None else f"{name}={value!r}"


@contextlib.contextmanager
def front_end(spelling: Spelling) -> Iterator[None]:
    """Spell settings in messages the way ``spelling`` says while the block runs (front ends nest: a pytester
    run inside a pytest session)."""
    _front_ends.append(spelling)
    try:
        yield
    finally:
        _front_ends.remove(spelling)
