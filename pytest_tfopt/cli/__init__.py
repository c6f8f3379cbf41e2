"""The ``tfopt`` command line: optimize, bench, compare, report, merge, history and cache without pytest.

A thin layer over the core (:class:`~pytest_tfopt.workbench.Workbench`, :mod:`~pytest_tfopt.baseline`,
:mod:`~pytest_tfopt.budgets.file`, :mod:`~pytest_tfopt.budgets`, :mod:`~pytest_tfopt.report`); it never
imports pytest, and imports the core only when a command runs.

Exit codes: 0 success, 1 a failure (a broken threshold, a conversion that failed, a backend
that cannot run here), 2 a usage error (bad option, missing or unreadable input file).
Every error is one line on stderr, ``tfopt: error: <message>``; output files are written
atomically, so a failed run leaves none behind.

Modules: :mod:`.parser` (options and help), :mod:`.console` (output streams, exit codes),
:mod:`.files` (inputs checked, outputs written atomically), :mod:`.workbench` (reaching the workbench),
and one module per command: :mod:`.optimize`, :mod:`.bench`, :mod:`.compare`,
:mod:`.report`, :mod:`.merge` (sharded runs' results documents as one), :mod:`.history` (metrics over commits,
steps flagged), :mod:`.cache` (housekeeping of a local or remote artifact cache).
"""

from __future__ import annotations

import os  # noqa: F401 - ``pytest_tfopt.cli.os``: tests patch os.replace through it
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import TfoptError, UsageError, first_line, front_end
from .bench import BENCH_TEST, DEFAULT_BENCH_VARIANTS, DEFAULT_BENCH_VARIANTS_NO_DATA, cmd_bench
from .compare import cmd_compare
from .console import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PROG, Console, Progress, native_output_hidden
from .files import write_atomic
from .merge import cmd_merge
from .optimize import cmd_optimize
from .parser import DEFAULT_CACHE_DIR, DEFAULT_CALIBRATION_SIZE, build_parser
from .report import cmd_report

_write_atomic = write_atomic  # its name when the CLI was one module

__all__ = [
    "BENCH_TEST", "DEFAULT_BENCH_VARIANTS", "DEFAULT_BENCH_VARIANTS_NO_DATA", "DEFAULT_CACHE_DIR",
    "DEFAULT_CALIBRATION_SIZE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "PROG",
    "Console", "Progress", "TfoptError", "UsageError", "build_parser", "cmd_bench", "cmd_compare",
    "cmd_merge", "cmd_optimize", "cmd_report", "main",
]


#: how the CLI spells the settings the core's remedies name (:func:`pytest_tfopt.errors.setting`)
SPELLING = {
    "rebuild": "--rebuild", "cache_dir": "--cache-dir", "backend": "--backend", "threads": "--threads",
    "budgets": "--budgets", "report": "-o", "save_baseline": "'tfopt bench --json' (or pytest --tfopt-save-baseline)",
    "history": "pytest --tfopt-history",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tfopt`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version, argparse errors (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    console = Console(quiet=args.quiet)
    try:
        with native_output_hidden(not args.verbose) as stream, front_end(SPELLING.get):
            console.stderr = stream
            try:
                return int(args.func(args, console))
            finally:
                console.stderr = None
    except UsageError as exc:
        return _fail(exc, EXIT_USAGE)
    except TfoptError as exc:
        return _fail(exc, EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the CLI promises one line, not a traceback
        if args.verbose:
            raise
        first = first_line(exc, limit=300, empty="")
        return _fail(f"unexpected {type(exc).__name__}: {first} (rerun with --verbose for the traceback)",
                     EXIT_FAILED)


def _fail(message: Any, code: int) -> int:
    text = " ".join(str(message).split()) or type(message).__name__  # one line, whatever the message held
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)
    return code

