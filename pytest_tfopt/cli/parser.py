"""The ``tfopt`` argument parser: every subcommand, option, help text and default."""

from __future__ import annotations

import argparse
import math
import shutil
import textwrap
from collections.abc import Callable
from typing import Any

from .. import __version__, metrics
from ..report import FORMATS
from ..security import user_cache_dir
from ..workbench import DEFAULT_CALIBRATION_SIZE
from .bench import BENCH_TEST, DEFAULT_BENCH_VARIANTS, DEFAULT_BENCH_VARIANTS_NO_DATA, cmd_bench
from .cache import cmd_cache
from .compare import cmd_compare
from .console import EXIT_USAGE, PROG
from .history import cmd_history
from .merge import cmd_merge
from .optimize import cmd_optimize
from .report import cmd_report

DEFAULT_CACHE_DIR = user_cache_dir("artifacts")  # the Workbench default: per user, never a shared temp dir
_NPZ = "data set (.npz with x_train, y_train, x_test, y_test, or x, y)"  # the layout --data and --calibration read


class _Formatter(argparse.HelpFormatter):
    """Wrapped help text; description/epilog lines that start with two spaces (examples) stay as written."""

    def __init__(self, prog: str) -> None:
        width = min(100, max(60, shutil.get_terminal_size().columns - 2))
        super().__init__(prog, max_help_position=30, width=width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for para in text.splitlines():
            if not para.strip() or para.startswith("  "):
                lines.append(indent + para)
            else:
                lines += textwrap.wrap(para, width, initial_indent=indent, subsequent_indent=indent)
        return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``tfopt: error: ...``, exit 2) instead of usage + error."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{PROG}: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``tfopt`` argument parser (all subcommands)."""
    common = _output_options()
    parser = _top_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)
    sub.required = True
    for add_command in (_add_optimize, _add_bench, _add_compare, _add_report, _add_merge, _add_cache,
                        _add_history):
        add_command(sub, common)
    return parser


def _output_options() -> argparse.ArgumentParser:
    """The options every command takes (--quiet, --verbose), as a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    out = common.add_argument_group("output")
    out.add_argument("-q", "--quiet", action="store_true",
                     help="no progress lines on stderr, only results and errors (default: off)")
    out.add_argument("-v", "--verbose", action="store_true",
                     help="also show TensorFlow's and the converter's own log output, Python warnings and the "
                          "traceback of unexpected errors (default: off)")
    return common


def _top_parser() -> _Parser:
    """``tfopt`` itself: its description, examples, exit codes and --version."""
    parser = _Parser(
        prog=PROG, formatter_class=_Formatter,
        description="Build optimized variants of a TensorFlow/Keras model, measure them, and compare results "
                    "against budgets: pytest-tfopt without pytest.",
        epilog="examples:\n"
               "  tfopt optimize models/digits_cnn.h5 --variant int8 --calibration fixtures/digits.npz -o int8.tflite\n"
               "  tfopt bench models/digits_cnn.h5 --data fixtures/digits.npz --json head.json\n"
               "  tfopt compare base.json head.json --budgets tfopt-budgets.toml\n"
               "  tfopt report head.json -o report.html --baseline base.json\n"
               "  tfopt merge shard-*.json -o head.json\n"
               "  tfopt history tfopt-history.sqlite --plot history.html --fail-on-step\n\n"
               "exit codes: 0 ok, 1 failure (broken threshold, failed conversion, backend unavailable), "
               "2 usage error.\nRun 'tfopt COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    return parser


def _command(sub: Any, common: argparse.ArgumentParser, name: str, func: Callable[..., int], *, summary: str,
             description: str, example: str) -> argparse.ArgumentParser:
    """Subcommand ``name`` of ``sub``, run by ``func``: ``summary`` in ``tfopt --help``, one ``example`` command."""
    p = sub.add_parser(name, parents=[common], formatter_class=_Formatter, help=summary, description=description,
                       epilog=f"example:\n  {example}")
    p.set_defaults(func=func)
    return p


def _add_optimize(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub, common, "optimize", cmd_optimize,
        summary="build one optimized variant of a model and write the artifact",
        description="Build one variant of MODEL (through the artifact cache) and write the artifact to -o "
                    "atomically. Prints the variant, its size and gzip size, and where it was written.",
        example="tfopt optimize models/digits_cnn.h5 --variant int8 --calibration fixtures/digits.npz "
                "-o digits_int8.tflite",
    )
    _model_argument(p)
    p.add_argument("--variant", required=True, metavar="SPEC",
                   help="the variant to build, e.g. int8, float16, dynamic, int8(calibration_size=100), "
                        "pruned(sparsity=0.8)+int8 (required)")
    p.add_argument("--calibration", metavar="NPZ",
                   help=f"{_NPZ}: calibration samples come from its training split; needed by calibrated variants "
                        "(int8, int8_io, int16x8) and by transforms that train (pruned, qat, ...) (default: none)")
    _calibration_size_option(p)
    p.add_argument("--backend", default="tflite", metavar="NAME",
                   help="backend to build for: tflite or tensorrt (default: %(default)s)")
    _cache_options(p)
    p.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="where to write the artifact, e.g. model.tflite (required)")


def _add_bench(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub, common, "bench", cmd_bench,
        summary="build and measure variants; print a table, optionally save a results document",
        description="Build each variant on each backend and measure it: accuracy and drop vs fp32 (with "
                    "labelled --data), size, gzip size, compression ratio, p50/p95 latency of one batch-1 "
                    "invocation, build time. fp32 (the reference) is always measured. --json saves a results "
                    f"document whose rows carry test = {BENCH_TEST!r}, for 'tfopt compare' and 'tfopt report'.",
        example="tfopt bench models/digits_cnn.h5 --data fixtures/digits.npz --variant fp32,int8 --json head.json",
    )
    _model_argument(p)
    p.add_argument("--data", metavar="NPZ",
                   help=f"{_NPZ}: calibration from the training split, accuracy and latency inputs from the test "
                        "split (default: none: no accuracy, random latency inputs, no calibrated variants)")
    p.add_argument("--variant", action="append", metavar="LIST",
                   help="comma-separated variants, repeatable, e.g. --variant fp32,int8 --variant "
                        f"'int8(calibration_size=100)' (default: {DEFAULT_BENCH_VARIANTS} with --data, "
                        f"{DEFAULT_BENCH_VARIANTS_NO_DATA} without)")
    p.add_argument("--backend", action="append", metavar="LIST",
                   help="comma-separated backends, repeatable; 'all' = every backend available here; a backend "
                        "that cannot run here is skipped with a note (default: tflite)")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="runtime threads (LiteRT num_threads, TensorFlow intra-op) (default: the cores of this "
                        "process)")
    _calibration_size_option(p)
    p.add_argument("--metric", default="top1", choices=("top1", "mae", "rmse"),
                   help="accuracy metric on the test split (default: %(default)s)")
    p.add_argument("--latency-time", type=_positive_float, default=0.5, metavar="SECONDS",
                   help="minimum time spent timing each variant (at least 50 invocations after 10 warm-up "
                        "runs) (default: %(default)s)")
    p.add_argument("--no-latency", action="store_true", help="skip latency measurement (default: off)")
    p.add_argument("--explain", action="store_true",
                   help="also print, per variant, its per-op profile against fp32's, where its bytes go and what "
                        "its peak memory is made of (measured in runs of their own; see docs/profiling.md) "
                        "(default: off)")
    _cache_options(p)
    p.add_argument("--json", metavar="PATH",
                   help="also write the results document (the --tfopt-save-baseline format) here (default: none)")


def _add_compare(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub, common, "compare", cmd_compare,
        summary="compare two results documents; with --budgets, gate HEAD against BASE",
        description="Compare two results documents (from 'tfopt bench --json', pytest "
                    "--tfopt-save-baseline or --tfopt-report x.json) row by row, keyed by (test, variant, "
                    "backend): a table of HEAD values with their change from BASE. Rows only in one file are "
                    "listed as added/removed. With --budgets, the change thresholds of matching entries "
                    f"({', '.join(metrics.NAMES)}) are applied to HEAD vs BASE, and "
                    "the value budgets that the rows alone can answer (max_size_kb, min_compression_ratio, "
                    "max_accuracy_drop, max_latency_ms) to HEAD; others are skipped with a note. Exits 1 "
                    "when any is broken.",
        example="tfopt compare base.json head.json --budgets tfopt-budgets.toml",
    )
    p.add_argument("base", metavar="BASE", help="the reference results document (.json)")
    p.add_argument("head", metavar="HEAD", help="the results document under review (.json)")
    p.add_argument("--budgets", metavar="FILE",
                   help="budgets file: tfopt-budgets.toml ([[budgets]] entries) or a pyproject.toml with "
                        "[[tool.tfopt.budgets]] (default: none: only show the changes)")
    p.add_argument("--ignore-hardware", action="store_true",
                   help="apply latency change thresholds even when BASE and HEAD were measured on different "
                        "hardware (default: off: they are skipped with a note)")


def _add_report(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub, common, "report", cmd_report,
        summary="render a results document as .html, .md, .json or .benchmark.json",
        description="Render a results document as a report; the format follows the extension of each -o: "
                    f"{', '.join(FORMATS)}.",
        example="tfopt report head.json -o report.html -o summary.md --baseline base.json",
    )
    p.add_argument("results", metavar="RESULTS", help="the results document (.json)")
    p.add_argument("-o", "--output", action="append", required=True, metavar="PATH",
                   help=f"report to write, format by extension ({', '.join(FORMATS)}); repeatable (required)")
    p.add_argument("--baseline", metavar="BASE",
                   help="a results document to show changes against (default: none)")


def _add_merge(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub, common, "merge", cmd_merge,
        summary="merge the results documents of sharded runs into one",
        description="Merge the results documents of runs that each measured part of a suite (CI matrix shards, "
                    "pytest-split groups, several machines) into one document that 'tfopt report', 'tfopt "
                    "compare' and --tfopt-baseline read as one run's. Rows are keyed by (test, variant, backend): "
                    "a key in two shards with different rows is an error. Shards measured on different hardware "
                    "keep each row's hardware_id and every hardware block; then latency thresholds are skipped "
                    "against the merged document. Shards from different commits get a note. See docs/sharding.md.",
        example="tfopt merge shard-*.json -o run.json",
    )
    p.add_argument("shards", nargs="+", metavar="SHARD",
                   help="the shards' results documents (.json, from --tfopt-report, --tfopt-save-baseline or "
                        "'tfopt bench --json')")
    p.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="where to write the merged document, never one of the SHARDs (required)")
    p.add_argument("--require-same-commit", action="store_true",
                   help="fail (exit 2) when the shards record different commits (default: off: a note)")


def _add_cache(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub, common, "cache", cmd_cache,
        summary="list, prune or verify an artifact cache (a directory or a remote URL)",
        description="Housekeeping of an artifact cache, local or remote (s3://, gs://, az://, file://; credentials "
                    "come from the environment or config files fsspec and the cloud SDKs read). 'ls' lists entries; "
                    "'prune' removes entries, records, temp files of writers that died and unreferenced payloads "
                    "older than --older-than; 'verify' re-hashes every entry against its recorded sha256 and "
                    "removes damaged ones (exit 1 when there were any). See docs/sharding.md.",
        example="tfopt cache prune --older-than 30d --cache-dir s3://my-bucket/tfopt",
    )
    p.add_argument("action", choices=("ls", "prune", "verify"), help="what to do")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, metavar="DIR_OR_URL",
                   help="the cache: a directory or an fsspec URL (default: %(default)s)")
    p.add_argument("--older-than", default="30d", metavar="AGE",
                   help="prune: the age to remove, a number and a unit s/m/h/d/w (default: %(default)s)")


def _add_history(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub, common, "history", cmd_history,
        summary="each metric over the last commits of a history, steps marked; --fail-on-step gates",
        description="Read a history (pytest --tfopt-history PATH appends every run to it) and print, per test, "
                    "variant, backend and metric, its value at each of the last commits (the median of the runs "
                    "of a commit), with the steps a change-point fit finds (a penalised piecewise-constant fit "
                    "over the series' own noise; changes under 5 % or 0.01 points of a score are not steps). "
                    "Latencies are compared per hardware fingerprint. See docs/history.md.",
        example="tfopt history tfopt-history.sqlite --metric latency_p50 --last 30 --plot history.html --fail-on-step",
    )
    p.add_argument("history", metavar="HISTORY", help="the history file (SQLite, from --tfopt-history)")
    p.add_argument("--test", metavar="GLOB", help="only tests whose id matches this glob, e.g. '*digits*' "
                                                  "(default: every test)")
    p.add_argument("--metric", action="append", metavar="NAME",
                   help=f"a metric ({', '.join(metrics.NAMES)}, accuracy[OUTPUT]) or a row field "
                        "(latency_b1_p99_ms, load_c4_b1_throughput, memory_peak_mb), repeatable; 'all' = every "
                        "metric the rows carry (default: the metrics table's)")
    p.add_argument("--last", type=_positive_int, default=20, metavar="N",
                   help="the newest N commits (default: %(default)s)")
    p.add_argument("--branch", metavar="NAME", help="only runs on this branch (default: every branch)")
    p.add_argument("--plot", metavar="FILE",
                   help="also draw every series to FILE: .html (offline, interactive), .svg or .png; needs "
                        "pytest-tfopt[report] (default: none)")
    p.add_argument("--fail-on-step", action="store_true",
                   help="exit 1 when the newest step of any series is a regression (default: off: exit 0)")


def _model_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="the FP32 source model: .keras, .h5, SavedModel directory or .tflite")


def _calibration_size_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration-size", type=_positive_int, default=DEFAULT_CALIBRATION_SIZE, metavar="N",
                   help="seeded calibration samples taken from the training split (default: %(default)s)")


def _cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, metavar="DIR",
                   help="artifact cache; a rerun with nothing changed converts nothing (default: %(default)s)")
    p.add_argument("--rebuild", action="store_true", help="ignore cached artifacts and build again (default: off)")
