"""Reports of result rows, chosen by file extension.

``.json`` (everything, the results schema), ``.md`` (GitHub-flavoured), ``.html``
(self-contained; Vega-Lite plots with the ``report`` extra), ``.benchmark.json`` (pytest-benchmark format for
existing dashboards). Every file is written atomically (:func:`pytest_tfopt.files.write_atomic`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import UsageError, setting
from ..files import write_atomic

FORMATS = (".benchmark.json", ".json", ".md", ".html")


def format_of(path: str) -> str:
    """The report format for ``path``; a usage error for an unknown extension."""
    lower = path.lower()
    for suffix in FORMATS:
        if lower.endswith(suffix):
            return suffix
    raise UsageError(f"{setting('report')} {path}: unknown format; use one of {', '.join(FORMATS)}")


def render(path: str, doc: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The text of the report for ``path`` (format by extension)."""
    kind = format_of(path)
    if kind == ".json":
        return json.dumps(doc, indent=1, sort_keys=True, default=str)
    if kind == ".benchmark.json":
        from .benchmark import render as bench

        return bench(doc)
    if kind == ".md":
        from .markdown import render as md

        return md(doc, baseline)
    from .html import render as html

    return html(doc, baseline)


def write(path: str, doc: dict[str, Any], baseline: dict[str, Any] | None = None) -> None:
    """Write the report for ``path`` atomically (its directory made; the mode ``open()`` would give)."""
    text = render(path, doc, baseline)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, text.encode("utf-8"))
