"""The files the CLI reads and writes: inputs checked up front, outputs written atomically.

Every problem with an input file is a :class:`UsageError` naming the file and the remedy.
"""

from __future__ import annotations

import os
from typing import Any

from .. import files as core_files
from ..errors import TfoptError, UsageError
from ..outputs import check_writable  # noqa: F401  (re-exported: the CLI commands use it)


def existing(path: str, what: str, option: str) -> str:
    """``path``, or a usage error naming ``what`` and the ``option`` to check when it does not exist."""
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist: check {option}")
    return path


def write_atomic(path: str, data: bytes, option: str = "-o") -> str:
    """Write ``data`` to ``path`` atomically (:func:`pytest_tfopt.files.write_atomic`, mode as ``open()`` gives),
    making its directory; returns the absolute path. A failure is a :class:`TfoptError` naming ``option``."""
    path = os.path.abspath(path)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return core_files.write_atomic(path, data)
    except OSError as exc:
        raise TfoptError(f"cannot write {path!r} ({exc.strerror or exc}): choose a writable {option} path") from None


def load_results(path: str, option: str) -> dict[str, Any]:
    """A results document, checked by the core (:func:`pytest_tfopt.baseline.load`); every problem is a usage
    error naming the file, what to do, and ``option``."""
    from .. import baseline

    existing(path, "results file", option)
    return baseline.load(path, "results file", "write one with 'tfopt bench --json' or pytest --tfopt-save-baseline")


def load_budgets(path: str) -> Any:
    """The :class:`~pytest_tfopt.budgets.file.BudgetsFile` at ``path`` (--budgets), with at least one entry."""
    from ..budgets import file as budgets_file

    existing(path, "budgets file", "--budgets")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"budgets file {path!r} cannot be read ({exc}): check --budgets") from None
    found = budgets_file.parse(text, path, pyproject=os.path.basename(path) == "pyproject.toml")
    if not found.entries:
        raise UsageError(f"budgets file {path!r} has no budgets entries: add [[budgets]] "
                         "(or [[tool.tfopt.budgets]] in pyproject.toml)")
    return found

