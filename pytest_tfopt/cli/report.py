"""``tfopt report``: render a results document as .html, .md, .json or .benchmark.json."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from .console import EXIT_OK, Console
from .files import check_writable, load_results, write_atomic


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from .. import report

    outputs = list(dict.fromkeys(args.output))
    for path in outputs:
        try:
            report.format_of(path)
        except UsageError:
            raise UsageError(f"-o {path}: unknown report format; use one of {', '.join(report.FORMATS)}") from None
    for path in outputs:
        check_writable(path, "-o")
    doc = load_results(args.results, "RESULTS")
    base = load_results(args.baseline, "--baseline") if args.baseline else None
    texts = [(path, report.render(path, doc, base)) for path in outputs]  # render all before writing any
    for path, text in texts:
        write_atomic(path, text.encode("utf-8"))
        console.out(f"wrote {os.path.abspath(path)} ({report.format_of(path).lstrip('.')}, {len(doc['rows'])} rows)")
    return EXIT_OK

