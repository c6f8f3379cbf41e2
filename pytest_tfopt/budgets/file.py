"""Budgets files: thresholds kept out of test code.

``tfopt-budgets.toml`` holds ``[[budgets]]`` entries (in pyproject.toml:
``[[tool.tfopt.budgets]]``). Each entry selects results by ``test`` (a glob over the
test id), ``variant`` and ``backend`` (globs, default ``*``) and sets budgets in the
markers' vocabulary plus change thresholds against a baseline::

    [[budgets]]
    test = "*test_mobile*"
    variant = "int8*"
    max_accuracy_drop = 0.01
    max_latency_ms = { limit = 2.0, percentile = 95 }
    latency_p95 = "+10%"
    accuracy = "-0.005"
    size = "+0%"

A marker on a test overrides the file's budget of the same name; of several
matching entries, the later one wins. ``test`` matches a node id literally or as a glob
(``[float16-tflite]`` in a node id is literal text, not a character class); ``variant`` matches
the canonical variant id (``pruned(sparsity=0.5,epochs=1)`` and ``pruned(epochs=1,sparsity=0.5)``
are one variant) or as a glob. Entries that match no result are listed at the end of the run.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError, setting
from .change import CHANGE_METRICS, ChangeBudget, is_change_metric, parse_change
from .markers import PARSERS, parse_marker

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SELECTORS = ("test", "variant", "backend")
DEFAULT_FILE = "tfopt-budgets.toml"


@dataclass(frozen=True)
class Entry:
    """One ``[[budgets]]`` entry: selectors, value budgets (marker name → budget) and change thresholds."""

    test: str = "*"
    variant: str = "*"
    backend: str = "*"
    budgets: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, ChangeBudget] = field(default_factory=dict)

    def matches(self, nodeid: str, variant: str, backend: str, canon: Callable[[str], str] | None = None) -> bool:
        """Whether this entry selects the result of ``nodeid`` on ``variant`` (canonical id) and ``backend``.

        ``canon`` turns the entry's variant into its canonical id (parameters sorted) when it names one.
        """
        wanted = self.variant if canon is None else canon(self.variant)
        return (_match(nodeid, self.test) and (variant == wanted or fnmatch.fnmatchcase(variant, self.variant))
                and _match(backend, self.backend))

    def describe(self) -> str:
        """``test = "...", variant = "..."`` (the selectors given), for messages."""
        return ", ".join(f"{k} = {getattr(self, k)!r}" for k in SELECTORS if getattr(self, k) != "*") or "every test"


def _match(value: str, pattern: str) -> bool:
    """Literal equality first (node ids hold brackets), then the glob."""
    return value == pattern or fnmatch.fnmatchcase(value, pattern)


@dataclass(frozen=True)
class BudgetsFile:
    path: str
    entries: tuple[Entry, ...]

    def select(self, nodeid: str, variant: str, backend: str,
               canon: Callable[[str], str] | None = None) -> tuple[dict[str, Any], dict[str, ChangeBudget]]:
        """Value budgets and change thresholds for one result (later entries override earlier)."""
        budgets: dict[str, Any] = {}
        changes: dict[str, ChangeBudget] = {}
        for entry in self.entries:
            if entry.matches(nodeid, variant, backend, canon):
                budgets.update(entry.budgets)
                changes.update(entry.changes)
        return budgets, changes

    def unmatched(self, results: list[tuple[str, str, str]], canon: Callable[[str], str] | None = None) -> list[str]:
        """Entries that select none of ``results`` ((test, variant, backend) triples), described for a warning."""
        return [f"entry {index} ({entry.describe()})" for index, entry in enumerate(self.entries, 1)
                if not any(entry.matches(*r, canon) for r in results)]


def _line_of(text: str, key: str) -> str:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*(?:{re.escape(key)}\s*=|\[\[?\s*{re.escape(key)}\s*\]\]?)", line):
            return f"line {number}"
    return "an entry"


def _budget(name: str, value: Any) -> Any:
    if isinstance(value, dict):
        kwargs = dict(value)
        if "limit" not in kwargs:
            raise UsageError(f"{name} = {{...}} needs a 'limit' key, e.g. {name} = {{ limit = 2.0 }}")
        return parse_marker(name, (kwargs.pop("limit"),), kwargs)
    return parse_marker(name, (value,), {})


def parse(text: str, path: str, pyproject: bool = False) -> BudgetsFile:
    """Parse budgets-file ``text``; every problem is a usage error naming ``path`` and the line or key."""
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise UsageError(f"budgets file {path}: not valid TOML ({str(exc)[:120]}): fix the syntax") from None
    if pyproject:
        tool = data.get("tool", {})
        tfopt = tool.get("tfopt", {}) if isinstance(tool, dict) else None
        if not isinstance(tfopt, dict):
            raise UsageError(f"budgets file {path}: [tool] / [tool.tfopt] must be tables: write [[tool.tfopt.budgets]] entries")
        raw = tfopt.get("budgets", [])
    else:
        raw = data.get("budgets", [])
    if not pyproject:
        unknown_top = [k for k in data if k != "budgets"]
        if unknown_top:
            raise UsageError(f"budgets file {path}, {_line_of(text, unknown_top[0])}: unknown table/key "
                             f"{unknown_top[0]!r}: write entries as [[budgets]]")
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise UsageError(f"budgets file {path}: budgets must be an array of tables ([[budgets]] entries)")
    entries = []
    valid = ", ".join([*SELECTORS, *PARSERS, *CHANGE_METRICS])
    for index, item in enumerate(raw, 1):
        selectors, budgets, changes = {}, {}, {}
        for key, value in item.items():
            where = f"budgets file {path}, {_line_of(text, key)} (entry {index})"
            try:
                if key in SELECTORS:
                    if not isinstance(value, str):
                        raise UsageError(f"{key} must be a string glob, e.g. {key} = \"*\"")
                    selectors[key] = value
                elif key in PARSERS:
                    budgets[key] = _budget(key, value)
                elif is_change_metric(key):
                    changes[key] = parse_change(key, value)
                else:
                    raise UsageError(f"unknown key {key!r}: valid keys are {valid}")
            except UsageError as exc:
                raise UsageError(f"{where}: {exc}") from None
        entries.append(Entry(**selectors, budgets=budgets, changes=changes))
    return BudgetsFile(path, tuple(entries))


def find(explicit: str | None, rootdir: str) -> BudgetsFile | None:
    """The budgets file: ``explicit``, else ``tfopt-budgets.toml`` or ``[tool.tfopt.budgets]`` in rootdir."""
    if explicit:
        if not os.path.exists(explicit):
            raise UsageError(f"budgets file {explicit!r} does not exist: check {setting('budgets')}")
        with open(explicit, encoding="utf-8") as fh:
            return parse(fh.read(), explicit, pyproject=os.path.basename(explicit) == "pyproject.toml")
    default = os.path.join(rootdir, DEFAULT_FILE)
    if os.path.exists(default):
        with open(default, encoding="utf-8") as fh:
            return parse(fh.read(), default)
    pyproject = os.path.join(rootdir, "pyproject.toml")
    if os.path.exists(pyproject):
        with open(pyproject, encoding="utf-8") as fh:
            text = fh.read()
        if "tool.tfopt" in text:
            found = parse(text, pyproject, pyproject=True)
            return found if found.entries else None
    return None
