"""The ``tfopt`` command line: optimize, bench, compare and report without pytest.

A thin layer over the core (:class:`~pytest_tfopt.workbench.Workbench`, :mod:`~pytest_tfopt.baseline`,
:mod:`~pytest_tfopt.budgets_file`, :mod:`~pytest_tfopt.report`); it never imports pytest.

Exit codes: 0 success, 1 a failure (a broken threshold, a conversion that failed, a backend
that cannot run here), 2 a usage error (bad option, missing or unreadable input file).
Every error is one line on stderr, ``tfopt: error: <message>``; output files are written
atomically, so a failed run leaves none behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import TfoptError, UsageError

PROG = "tfopt"
BENCH_TEST = "tfopt-bench"
DEFAULT_BENCH_VARIANTS = "fp32,dynamic,float16,int8"
DEFAULT_BENCH_VARIANTS_NO_DATA = "fp32,dynamic,float16"
DEFAULT_CALIBRATION_SIZE = 200  # same as workbench.DEFAULT_CALIBRATION_SIZE (not imported: it would load numpy early)
DEFAULT_CACHE_DIR = os.path.join(tempfile.gettempdir(), "pytest-tfopt-cache")  # the Workbench default
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# ---- parsing ---------------------------------------------------------------------------
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
    common = argparse.ArgumentParser(add_help=False)
    out = common.add_argument_group("output")
    out.add_argument("-q", "--quiet", action="store_true",
                     help="no progress lines on stderr, only results and errors (default: off)")
    out.add_argument("-v", "--verbose", action="store_true",
                     help="also show TensorFlow's and the converter's own log output, Python warnings and the "
                          "traceback of unexpected errors (default: off)")

    parser = _Parser(
        prog=PROG, formatter_class=_Formatter,
        description="Build optimized variants of a TensorFlow/Keras model, measure them, and compare results "
                    "against budgets: pytest-tfopt without pytest.",
        epilog="examples:\n"
               "  tfopt optimize models/digits_cnn.h5 --variant int8 --calibration fixtures/digits.npz -o int8.tflite\n"
               "  tfopt bench models/digits_cnn.h5 --data fixtures/digits.npz --json head.json\n"
               "  tfopt compare base.json head.json --budgets tfopt-budgets.toml\n"
               "  tfopt report head.json -o report.html --baseline base.json\n\n"
               "exit codes: 0 ok, 1 failure (broken threshold, failed conversion, backend unavailable), "
               "2 usage error.\nRun 'tfopt COMMAND --help' for the options of each command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)
    sub.required = True

    # optimize ---------------------------------------------------------------------------
    p = sub.add_parser(
        "optimize", parents=[common], formatter_class=_Formatter,
        help="build one optimized variant of a model and write the artifact",
        description="Build one variant of MODEL (through the artifact cache) and write the artifact to -o "
                    "atomically. Prints the variant, its size and gzip size, and where it was written.",
        epilog="example:\n  tfopt optimize models/digits_cnn.h5 --variant int8 --calibration fixtures/digits.npz "
               "-o digits_int8.tflite",
    )
    p.add_argument("model", metavar="MODEL",
                   help="the FP32 source model: .keras, .h5, SavedModel directory or .tflite")
    p.add_argument("--variant", required=True, metavar="SPEC",
                   help="the variant to build, e.g. int8, float16, dynamic, int8(calibration_size=100), "
                        "pruned(sparsity=0.8)+int8 (required)")
    p.add_argument("--calibration", metavar="NPZ",
                   help="data set (.npz with x_train, y_train, x_test, y_test, or x, y): calibration samples come "
                        "from its training split; needed by calibrated variants (int8, int8_io, int16x8) and by "
                        "transforms that train (pruned, qat, ...) (default: none)")
    p.add_argument("--calibration-size", type=_positive_int, default=DEFAULT_CALIBRATION_SIZE, metavar="N",
                   help="seeded calibration samples taken from the training split (default: %(default)s)")
    p.add_argument("--backend", default="tflite", metavar="NAME",
                   help="backend to build for: tflite or tensorrt (default: %(default)s)")
    _cache_options(p)
    p.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="where to write the artifact, e.g. model.tflite (required)")
    p.set_defaults(func=cmd_optimize)

    # bench ----------------------------------------------------------------------------
    p = sub.add_parser(
        "bench", parents=[common], formatter_class=_Formatter,
        help="build and measure variants; print a table, optionally save a results document",
        description="Build each variant on each backend and measure it: accuracy and drop vs fp32 (with "
                    "labelled --data), size, gzip size, compression ratio, p50/p95 latency of one batch-1 "
                    "invocation, build time. fp32 (the reference) is always measured. --json saves a results "
                    f"document whose rows carry test = {BENCH_TEST!r}, for 'tfopt compare' and 'tfopt report'.",
        epilog="example:\n  tfopt bench models/digits_cnn.h5 --data fixtures/digits.npz --variant fp32,int8 "
               "--json head.json",
    )
    p.add_argument("model", metavar="MODEL",
                   help="the FP32 source model: .keras, .h5, SavedModel directory or .tflite")
    p.add_argument("--data", metavar="NPZ",
                   help="data set (.npz with x_train, y_train, x_test, y_test, or x, y): calibration from the "
                        "training split, accuracy and latency inputs from the test split (default: none: no "
                        "accuracy, random latency inputs, no calibrated variants)")
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
    p.add_argument("--calibration-size", type=_positive_int, default=DEFAULT_CALIBRATION_SIZE, metavar="N",
                   help="seeded calibration samples taken from the training split (default: %(default)s)")
    p.add_argument("--metric", default="top1", choices=("top1", "mae", "rmse"),
                   help="accuracy metric on the test split (default: %(default)s)")
    p.add_argument("--latency-time", type=_positive_float, default=0.5, metavar="SECONDS",
                   help="minimum time spent timing each variant (at least 50 invocations after 10 warm-up "
                        "runs) (default: %(default)s)")
    p.add_argument("--no-latency", action="store_true", help="skip latency measurement (default: off)")
    _cache_options(p)
    p.add_argument("--json", metavar="PATH",
                   help="also write the results document (the --tfopt-save-baseline format) here (default: none)")
    p.set_defaults(func=cmd_bench)

    # compare ----------------------------------------------------------------------------
    p = sub.add_parser(
        "compare", parents=[common], formatter_class=_Formatter,
        help="compare two results documents; with --budgets, gate HEAD against BASE",
        description="Compare two results documents (from 'tfopt bench --json', pytest "
                    "--tfopt-save-baseline or --tfopt-report x.json) row by row, keyed by (test, variant, "
                    "backend): a table of HEAD values with their change from BASE. Rows only in one file are "
                    "listed as added/removed. With --budgets, the change thresholds of matching entries "
                    "(accuracy, size, gzip_size, latency_p50, latency_p95) are applied to HEAD vs BASE, and "
                    "the value budgets that the rows alone can answer (max_size_kb, min_compression_ratio, "
                    "max_accuracy_drop, max_latency_ms) to HEAD; others are skipped with a note. Exits 1 "
                    "when any is broken.",
        epilog="example:\n  tfopt compare base.json head.json --budgets tfopt-budgets.toml",
    )
    p.add_argument("base", metavar="BASE", help="the reference results document (.json)")
    p.add_argument("head", metavar="HEAD", help="the results document under review (.json)")
    p.add_argument("--budgets", metavar="FILE",
                   help="budgets file: tfopt-budgets.toml ([[budgets]] entries) or a pyproject.toml with "
                        "[[tool.tfopt.budgets]] (default: none: only show the changes)")
    p.add_argument("--ignore-hardware", action="store_true",
                   help="apply latency change thresholds even when BASE and HEAD were measured on different "
                        "hardware (default: off: they are skipped with a note)")
    p.set_defaults(func=cmd_compare)

    # report -----------------------------------------------------------------------------
    from .report import FORMATS

    p = sub.add_parser(
        "report", parents=[common], formatter_class=_Formatter,
        help="render a results document as .html, .md, .json or .benchmark.json",
        description="Render a results document as a report; the format follows the extension of each -o: "
                    f"{', '.join(FORMATS)}.",
        epilog="example:\n  tfopt report head.json -o report.html -o summary.md --baseline base.json",
    )
    p.add_argument("results", metavar="RESULTS", help="the results document (.json)")
    p.add_argument("-o", "--output", action="append", required=True, metavar="PATH",
                   help=f"report to write, format by extension ({', '.join(FORMATS)}); repeatable (required)")
    p.add_argument("--baseline", metavar="BASE",
                   help="a results document to show changes against (default: none)")
    p.set_defaults(func=cmd_report)
    return parser


def _cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, metavar="DIR",
                   help="artifact cache; a rerun with nothing changed converts nothing (default: %(default)s)")
    p.add_argument("--rebuild", action="store_true", help="ignore cached artifacts and build again (default: off)")


# ---- console -----------------------------------------------------------------------------
class Console:
    """Where the CLI talks: results to stdout, progress and notes to stderr (progress silenced by --quiet)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.stderr: TextIO | None = None  # set while fd 2 is diverted (see _native_output_hidden)

    @property
    def err(self) -> TextIO:
        return self.stderr or sys.stderr

    def out(self, text: str = "") -> None:
        print(text, file=sys.stdout, flush=True)

    def note(self, text: str) -> None:
        """A remark worth seeing even with --quiet (a skipped backend, a skipped budget)."""
        print(f"{PROG}: note: {text}", file=self.err, flush=True)

    def progress(self, total: int) -> Progress:
        return Progress(total, self.err, self.quiet)


class Progress:
    """Per-step progress on stderr: a bar redrawn in place on a terminal, one line per step otherwise."""

    def __init__(self, total: int, stream: TextIO, quiet: bool) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.quiet = quiet
        self.index = 0
        self.tty = _isatty(stream)
        self._label = ""

    def _bar(self, done: int) -> str:
        width = 20
        filled = round(width * done / self.total)
        return "[" + "#" * filled + "-" * (width - filled) + "]"

    def _emit(self, done: int, text: str, final: bool) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write(f"\r\033[K{self._bar(done)} {self.index}/{self.total} {text}" + ("\n" if final else ""))
        else:
            self.stream.write(f"[{self.index}/{self.total}] {text}\n")
        self.stream.flush()

    def start(self, label: str) -> None:
        self.index += 1
        self._label = label
        self._emit(self.index - 1, f"{label} ...", final=False)

    def update(self, detail: str) -> None:
        """A sub-step of the current step (shown on a terminal only, to keep logs short)."""
        if self.tty:
            self._emit(self.index - 1, f"{self._label}: {detail} ...", final=False)

    def done(self, detail: str) -> None:
        self._emit(self.index, f"{self._label}: {detail}", final=True)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def _native_output_hidden(enabled: bool) -> Iterator[TextIO | None]:
    """Keep TensorFlow's / LiteRT's C++ log lines and Python warnings off the console.

    C++ code writes to file descriptor 2 directly, so fd 2 goes to a scratch file for the
    duration. When ``sys.stderr`` itself is fd 2 (a real console), this yields a stream on a
    duplicate of the original fd 2 for the CLI's own progress lines and notes; otherwise
    (stderr captured elsewhere) it yields ``None`` and ``sys.stderr`` is used as is.
    """
    if not enabled:
        yield None
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sys.stderr.flush()
            stderr_is_fd2 = sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):
            stderr_is_fd2 = False  # e.g. captured in-process: only fd 2 needs silencing
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all (e.g. pythonw): nothing to hide
            yield None
            return
        ours = None
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                if stderr_is_fd2:
                    ours = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace",
                                     encoding=getattr(sys.stderr, "encoding", None) or "utf-8")
                yield ours
            finally:
                if ours is not None:
                    with contextlib.suppress(OSError, ValueError):
                        ours.close()
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)


# ---- shared helpers ------------------------------------------------------------------------
def _split(values: Sequence[str] | None, default: str) -> list[str]:
    from .variants import split_variants

    items = [v for value in (values or [default]) for v in split_variants(value)]
    return list(dict.fromkeys(items))


def _existing(path: str, what: str, option: str) -> str:
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist: check {option}")
    return path


def _configure_tf(threads: int | None) -> None:
    """Apply log level and thread caps before TensorFlow loads (left alone when it already has)."""
    from . import tfenv

    if "tensorflow" not in sys.modules:
        tfenv.configure(tfenv.TfSettings(threads=threads))


def _workbench(args: argparse.Namespace, model: str, data: str | None, threads: int | None,
               log: Callable[[str], None], latency: Any = None, backends: Any = None) -> Any:
    from .workbench import Workbench

    return Workbench(model, data, cache_dir=args.cache_dir, threads=threads, rebuild=args.rebuild,
                     calibration_size=args.calibration_size, latency=latency, log=log, backends=backends)


def _needs_data(plan: Any) -> str | None:
    if plan.needs_calibration:
        return "is calibrated"
    if plan.trains:
        return "trains the model"
    return None


def _kb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def _check_writable(path: str, option: str) -> None:
    """Fail before the long work when ``path`` obviously cannot be written (a directory, a read-only parent)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise UsageError(f"{option} {path!r} is a directory: give a file name")
    parent = os.path.dirname(path)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path!r} cannot be written ({parent!r} is not a writable directory)")


def _write_atomic(path: str, data: bytes, option: str = "-o") -> str:
    """Write ``data`` to ``path`` through a temp file in the same directory and ``os.replace``."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-tfopt-", suffix=os.path.basename(path))
    except OSError as exc:
        raise TfoptError(f"cannot write {path!r} ({exc.strerror or exc}): choose a writable {option} path") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise TfoptError(f"cannot write {path!r} ({exc.strerror or exc}): choose a writable {option} path") from None
        raise
    return path


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    right = right or [False] * len(header)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    return [line(header), *(line(r) for r in rows)]


# ---- optimize ------------------------------------------------------------------------------
def cmd_optimize(args: argparse.Namespace, console: Console) -> int:
    from .variants import default_registry

    plan = default_registry().resolve(args.variant)  # unknown variants fail before anything loads
    _existing(args.model, "model", "MODEL")
    if args.calibration:
        _existing(args.calibration, "calibration data", "--calibration")
    need = _needs_data(plan)
    if need and not args.calibration:
        raise UsageError(f"variant {plan.id!r} {need}: give a data set with --calibration data.npz")
    _check_writable(args.output, "-o")
    _configure_tf(None)
    progress = console.progress(1)
    wb = _workbench(args, args.model, args.calibration, None, log=progress.update)
    backend = wb.backend(args.backend)  # unknown → usage error, unavailable → failure
    progress.start(f"{plan.id} for {backend.name}")
    start = time.perf_counter()
    artifact = wb.build(plan.id, backend.name)
    took = time.perf_counter() - start
    progress.done(f"built in {took:.1f} s" if wb.cache.stats.built else "from the cache")
    written = _write_atomic(args.output, artifact.content)
    suffix = artifact.suffix
    if not written.lower().endswith(suffix):
        console.note(f"{written} holds a {suffix} artifact ({backend.name}); its name does not end in {suffix}")
    size, gz = artifact.size_bytes, artifact.gzip_size_bytes
    console.out(f"variant:  {plan.id}")
    console.out(f"backend:  {backend.name}")
    console.out(f"size:     {size / 1024:.1f} KB ({size} bytes)")
    console.out(f"gzip:     {gz / 1024:.1f} KB ({gz} bytes)")
    console.out(f"written:  {written}")
    return EXIT_OK


# ---- bench ---------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from .backends import default_registry as default_backends
    from .measure import accuracy as acc
    from .measure.latency import LatencySettings
    from .variants import default_registry as default_variants

    variants_reg = default_variants()
    default = DEFAULT_BENCH_VARIANTS if args.data else DEFAULT_BENCH_VARIANTS_NO_DATA
    plans = [variants_reg.resolve(v) for v in _split(args.variant, default)]
    ids = list(dict.fromkeys(["fp32", *(p.id for p in plans)]))  # the reference first, always
    _existing(args.model, "model", "MODEL")
    if args.data:
        _existing(args.data, "data set", "--data")
    else:
        for plan in plans:
            need = _needs_data(plan)
            if need:
                raise UsageError(f"variant {plan.id!r} {need}: give a data set with --data data.npz")
    acc.resolve(args.metric)
    if args.json:
        _check_writable(args.json, "--json")

    registry = default_backends()
    names = _split(args.backend, "tflite")
    if names == ["all"]:
        names = [n for n in registry.names() if not registry.get(n).unavailable_reason()]
    backends = []
    for name in names:
        reason = registry.get(name).unavailable_reason()  # unknown names are usage errors
        if reason:
            console.note(f"skipping backend {name}: {reason}")
        else:
            backends.append(name)
    if not backends:
        raise TfoptError(f"no backend of {', '.join(names)} can run here: see the notes above, or use --backend tflite")

    _configure_tf(args.threads)
    from . import tfenv

    threads = args.threads or tfenv.default_threads()
    settings = LatencySettings(min_time_s=args.latency_time, max_time_s=max(20.0, args.latency_time * 4))
    progress = console.progress(len(ids) * len(backends))
    wb = _workbench(args, args.model, args.data, threads, log=progress.update, latency=settings, backends=registry)
    labelled = bool(args.data) and wb.evaluation.y is not None

    from .results import result_row

    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for backend in backends:
        reference = None
        for vid in ids:
            progress.start(f"{vid} on {backend}")
            try:
                row = _bench_one(wb, vid, backend, reference, labelled, args, progress, console, result_row)
            except UsageError:
                raise
            except TfoptError as exc:
                progress.done("failed")
                if vid == "fp32":
                    raise TfoptError(f"fp32 on {backend}: {exc}") from None
                failures.append(f"{vid} on {backend}: {exc}")
                console.note(f"{vid} on {backend} failed: {exc}")
                continue
            if vid == "fp32":
                reference = wb.runnable("fp32", backend)
            rows.append(row)

    for line in _bench_table(rows, labelled, not args.no_latency):
        console.out(line)
    stats = wb.cache.stats
    console.out(f"artifacts: {stats.built} built ({stats.build_seconds:.1f} s), {stats.reused} reused; "
                f"cache: {wb.cache.root}")
    if args.json:
        from . import baseline

        doc = baseline.document(rows, {"tool": "tfopt bench", "model": os.path.abspath(args.model),
                                       "data": os.path.abspath(args.data) if args.data else None,
                                       "threads": threads})
        text = json.dumps(doc, indent=1, sort_keys=True, default=str)  # what baseline.save writes
        console.out(f"results: {_write_atomic(args.json, text.encode(), '--json')}")
    if failures:
        console.note(f"{len(failures)} of {len(ids) * len(backends)} builds failed (see the notes above)")
        return EXIT_FAILED
    return EXIT_OK


def _bench_one(wb: Any, vid: str, backend: str, reference: Any, labelled: bool, args: argparse.Namespace,
               progress: Progress, console: Console, result_row: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    from .errors import DatasetError

    stats = wb.cache.stats
    built_before, seconds_before = stats.built, stats.build_seconds
    model = wb.runnable(vid, backend)  # build (or reuse) and load
    built = stats.built > built_before
    build_s = stats.build_seconds - seconds_before
    ref = model if reference is None else reference
    if labelled:
        progress.update("evaluating")
        try:
            model.evaluate(metric=args.metric)
        except DatasetError as exc:  # the metric does not fit this model: show the rest without accuracy
            console.note(f"{vid} on {backend}: accuracy not measured: {exc}")
    if not args.no_latency:
        progress.update("timing")
        model.latency(1)
    row = result_row(BENCH_TEST, model, ref, [], "passed")
    row["build_seconds"] = round(build_s, 3) if built else 0.0
    row["built"] = built
    row["threads"] = wb.threads
    if row.get("xnnpack_fallback"):
        progress.update("XNNPACK refused the graph: builtin kernels")
    progress.done(f"built in {build_s:.1f} s" if built else "from the cache")
    return row


def _bench_table(rows: list[dict[str, Any]], labelled: bool, latency: bool) -> list[str]:
    header = ["variant", "backend"]
    if labelled:
        header += ["accuracy", "drop"]
    header += ["size KB", "gzip KB", "ratio"]
    if latency:
        header += ["p50 ms", "p95 ms"]
    header += ["build s"]
    body = []
    for r in rows:
        cells = [r["variant"] + (" *" if r.get("xnnpack_fallback") else ""), r["backend"]]
        if labelled:
            cells += [_fmt(r.get("accuracy"), ".4f"), _fmt(r.get("accuracy_drop"), "+.4f")]
        ratio = r.get("compression_ratio")
        cells += [_kb(r["size_bytes"]), _kb(r["gzip_size_bytes"]), "-" if ratio is None else f"{ratio:.2f}x"]
        if latency:
            cells += [_fmt(r.get("latency_b1_p50_ms"), ".3f"), _fmt(r.get("latency_b1_p95_ms"), ".3f")]
        cells += [f"{r['build_seconds']:.1f}" if r.get("built") else "cached"]
        body.append(cells)
    right = [False, False, *([True] * (len(header) - 2))]
    lines = _table(header, body, right)
    if any(r.get("xnnpack_fallback") for r in rows):
        lines.append("* XNNPACK refused the graph: ran on LiteRT's builtin kernels (expect different latency)")
    return lines


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# ---- compare -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RowHead:
    """What budget messages name: a row's variant and backend."""

    variant: str
    backend: str


#: (column title, metric in baseline.METRICS, format, percent change shown)
COMPARE_COLUMNS = (
    ("accuracy", "accuracy", ".4f", False),
    ("size KB", "size", ".1f", True),
    ("gzip KB", "gzip_size", ".1f", True),
    ("p50 ms", "latency_p50", ".3f", True),
    ("p95 ms", "latency_p95", ".3f", True),
)
_KB_METRICS = ("size", "gzip_size")
_LATENCY_METRICS = ("latency_p50", "latency_p95")


def _shown(metric: str, value: float | None) -> float | None:
    return None if value is None else (value / 1024 if metric in _KB_METRICS else value)


def _compare_cell(metric: str, fmt: str, pct: bool, head: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    from .baseline import metric_value

    new = _shown(metric, metric_value(head, metric)) if head else None
    old = _shown(metric, metric_value(base, metric)) if base else None
    if head is None:
        return "-" if old is None else f"({old:{fmt}})"
    if new is None:
        return "-"
    text = f"{new:{fmt}}"
    if base is None or old is None:
        return text
    change = new - old
    if format(abs(change), fmt) == format(0, fmt):
        return f"{text} (=)"
    rel = f" {change / old:+.1%}" if pct and old else ""
    return f"{text} ({change:+{fmt}}{rel})"


def _short_test(test: str) -> str:
    return test.split("::")[-1]


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from . import baseline

    base_doc = _load_results(args.base, "BASE")
    head_doc = _load_results(args.head, "HEAD")
    budgets = _load_budgets(args.budgets) if args.budgets else None
    base_rows = {baseline.row_key(r): r for r in base_doc["rows"]}
    head_rows = {baseline.row_key(r): r for r in head_doc["rows"]}
    keys = sorted(set(base_rows) | set(head_rows))

    same_hw = base_doc.get("hardware") == head_doc.get("hardware")
    if not same_hw:
        cpu = lambda d: (d.get("hardware") or {}).get("cpu") or "?"  # noqa: E731
        console.note(f"BASE and HEAD were measured on different hardware ({cpu(base_doc)} vs {cpu(head_doc)}): "
                     "latency changes say little")

    header = ["status", "test", "variant", "backend", *(c[0] for c in COMPARE_COLUMNS)]
    body = []
    broken: list[tuple[tuple[str, str, str], str]] = []
    checked = 0
    skipped: dict[str, int] = {}
    for key in keys:
        base, head = base_rows.get(key), head_rows.get(key)
        verdicts: list[Any] = []
        if budgets is not None and head is not None:
            values, changes = budgets.select(*key)
            verdicts += _value_verdicts(head, values, skipped)
            if base is not None:
                verdicts += _change_verdicts(base, head, changes, same_hw or args.ignore_hardware, skipped)
        checked += len(verdicts)
        failed = [v for v in verdicts if not v.passed]
        broken += [(key, v.message) for v in failed]
        status = "removed" if head is None else "added" if base is None else "BROKEN" if failed else "ok"
        body.append([status, _short_test(key[0]), key[1], key[2],
                     *(_compare_cell(m, fmt, pct, head, base) for _, m, fmt, pct in COMPARE_COLUMNS)])
    for line in _table(header, body, [False] * 4 + [True] * len(COMPARE_COLUMNS)):
        console.out(line)

    added = sum(k not in base_rows for k in keys)
    removed = sum(k not in head_rows for k in keys)
    summary = f"{len(keys) - added - removed} compared, {added} added, {removed} removed"
    if budgets is not None:
        summary += f"; {checked} thresholds checked, {len(broken)} broken ({budgets.path})"
    console.out(summary)
    for why, count in skipped.items():
        console.note(f"{why} ({count}x)" if count > 1 else why)
    for (test, variant, backend), message in broken:
        console.out(f"BROKEN {test} [{variant}, {backend}]: {message}")
    return EXIT_FAILED if broken else EXIT_OK


def _load_results(path: str, option: str) -> dict[str, Any]:
    """A results document, checked; every problem is a usage error naming the file and what to do."""
    from . import baseline

    remedy = "write one with 'tfopt bench --json' or pytest --tfopt-save-baseline"
    _existing(path, "results file", option)
    if os.path.isdir(path):
        raise UsageError(f"results file {path!r} is a directory: give a .json results document ({option})")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"results file {path!r} is not valid JSON ({str(exc)[:80]}): {remedy}") from None
    if not isinstance(doc, dict) or doc.get("schema") != baseline.SCHEMA or not isinstance(doc.get("rows"), list):
        raise UsageError(f"results file {path!r} is not a pytest-tfopt results document: {remedy}")
    if doc.get("schema_version") != baseline.SCHEMA_VERSION:
        raise UsageError(f"results file {path!r} has schema version {doc.get('schema_version')!r}, this "
                         f"pytest-tfopt reads {baseline.SCHEMA_VERSION}: {remedy}")
    for index, row in enumerate(doc["rows"], 1):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("test", "variant", "backend")):
            raise UsageError(f"results file {path!r}: row {index} lacks test/variant/backend: {remedy}")
        for key in ("size_bytes", *(field for field, _ in baseline.METRICS.values())):
            value = row.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UsageError(f"results file {path!r}: row {index} has {key} = {value!r}, not a number: {remedy}")
    return baseline.load(path)  # the core's own checks, on a file already known to be good


def _load_budgets(path: str) -> Any:
    from . import budgets_file

    _existing(path, "budgets file", "--budgets")
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


def _change_verdicts(base: dict[str, Any], head: dict[str, Any], changes: dict[str, Any], latency_ok: bool,
                     skipped: dict[str, int]) -> list[Any]:
    from .baseline import metric_value

    out = []
    who = _RowHead(head["variant"], head["backend"])
    for metric, change in changes.items():
        if metric in _LATENCY_METRICS and not latency_ok:
            _skip(skipped, f"{metric} change thresholds skipped: BASE and HEAD ran on different hardware "
                           "(--ignore-hardware applies them)")
            continue
        was, now = metric_value(base, metric), metric_value(head, metric)
        if was is None or now is None:
            side = "BASE" if was is None else "HEAD"
            _skip(skipped, f"{metric} change thresholds skipped where {side} rows have no {metric} value")
            continue
        out.append(change.check(who, was, now))  # type: ignore[arg-type]
    return out


def _skip(skipped: dict[str, int], why: str) -> None:
    skipped[why] = skipped.get(why, 0) + 1


def _value_verdicts(row: dict[str, Any], values: dict[str, Any], skipped: dict[str, int]) -> list[Any]:
    """The value budgets that the row's own numbers answer; others are noted as skipped."""
    from .budgets import AccuracyDrop, MaxLatency, MaxSize, MinCompression, Verdict

    head = f"{row['variant']} on {row['backend']}"
    out = []
    for name, budget in values.items():
        if isinstance(budget, MaxSize):
            if row.get("size_bytes") is None:
                _skip(skipped, f"{name} skipped where rows have no size")
                continue
            value = row["size_bytes"] / 1024
            ref = row.get("reference_size_bytes")
            passed = value <= budget.limit_kb
            fp32 = f" (fp32 {ref / 1024:.1f} KB)" if ref else ""
            out.append(Verdict(budget.marker, passed, value, None if ref is None else ref / 1024, budget.limit_kb,
                               f"max_size_kb({budget.limit_kb:g}) {'holds' if passed else 'broken'}: {head}: "
                               f"{value:.1f} KB{fp32} {'<=' if passed else '>'} budget {budget.limit_kb:g} KB"))
        elif isinstance(budget, MinCompression):
            field, unit = ("gzip_size_bytes", "gzip B") if budget.compressed else ("size_bytes", "B")
            ours, theirs = row.get(field), row.get(f"reference_{field}")
            if not ours or not theirs:
                _skip(skipped, f"{name} skipped where rows have no fp32 reference size")
                continue
            value = theirs / ours
            passed = value >= budget.ratio
            flag = ", compressed=True" if budget.compressed else ""
            out.append(Verdict(budget.marker, passed, value, float(theirs), budget.ratio,
                               f"min_compression_ratio({budget.ratio:g}{flag}) {'holds' if passed else 'broken'}: "
                               f"{head}: ratio {value:.2f}x (fp32 {theirs} {unit} / {row['variant']} {ours} {unit}) "
                               f"{'>=' if passed else '<'} budget {budget.ratio:g}x"))
        elif isinstance(budget, AccuracyDrop) and getattr(budget, "confidence", None) is not None:
            _skip(skipped, f"{name} with confidence skipped: its interval needs paired predictions (run it under pytest)")
        elif isinstance(budget, AccuracyDrop):
            verdict = _accuracy_verdict(row, budget, head)
            if verdict is None:
                _skip(skipped, f"{name} skipped where rows lack accuracy and fp32 reference accuracy in its metric")
                continue
            out.append(verdict)
        elif isinstance(budget, MaxLatency):
            e2e = "_e2e" if getattr(budget, "mode", "invoke") == "end_to_end" else ""
            streams = getattr(budget, "concurrency", 1)
            where = f"load_c{streams}_b{budget.batch_size}" if streams > 1 else f"latency_b{budget.batch_size}"
            value = row.get(f"{where}{e2e}_p{budget.percentile}_ms")
            if value is None:
                _skip(skipped, f"{name} skipped where rows have no batch-{budget.batch_size} "
                               f"p{budget.percentile} latency{' end to end' if e2e else ''}"
                               f"{f' under {streams} streams' if streams > 1 else ''}")
                continue
            passed = value <= budget.limit_ms
            batch = f", batch_size={budget.batch_size}" if budget.batch_size != 1 else ""
            out.append(Verdict(budget.marker, passed, value, None, budget.limit_ms,
                               f"max_latency_ms({budget.limit_ms:g}, percentile={budget.percentile}{batch}) "
                               f"{'holds' if passed else 'broken'}: {head}: p{budget.percentile} {value:.3f} ms "
                               f"{'<=' if passed else '>'} budget {budget.limit_ms:g} ms"))
        else:
            _skip(skipped, f"{name} skipped: results rows do not hold what it measures (run it under pytest)")
    return out


def _accuracy_verdict(row: dict[str, Any], budget: Any, head: str) -> Any:
    from .budgets import Verdict
    from .measure import accuracy as acc

    value, ref, row_metric = row.get("accuracy"), row.get("reference_accuracy"), row.get("metric")
    if value is None or ref is None or row_metric is None:
        return None
    try:
        m = acc.resolve(budget.metric)
        stored = acc.resolve(row_metric)
    except UsageError:
        return None
    if m.fn is not stored.fn or m.higher_is_better != stored.higher_is_better:
        return None
    drop = m.drop(ref, value, budget.relative)
    passed = drop <= budget.limit + 1e-12
    unit = " (relative)" if budget.relative else ""
    return Verdict(budget.marker, passed, value, ref, budget.limit,
                   f"{budget.marker}({budget.limit:g}{', relative=True' if budget.relative else ''}) "
                   f"{'holds' if passed else 'broken'}: {head}: {m.name} {value:.4f} vs fp32 {ref:.4f}, "
                   f"drop {drop:.4f}{unit} {'<=' if passed else '>'} budget {budget.limit:g}")


# ---- report --------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from . import report

    outputs = list(dict.fromkeys(args.output))
    for path in outputs:
        try:
            report.format_of(path)
        except UsageError:
            raise UsageError(f"-o {path}: unknown report format; use one of {', '.join(report.FORMATS)}") from None
    for path in outputs:
        _check_writable(path, "-o")
    doc = _load_results(args.results, "RESULTS")
    base = _load_results(args.baseline, "--baseline") if args.baseline else None
    texts = [(path, report.render(path, doc, base)) for path in outputs]  # render all before writing any
    for path, text in texts:
        _write_atomic(path, text.encode("utf-8"))
        console.out(f"wrote {os.path.abspath(path)} ({report.format_of(path).lstrip('.')}, {len(doc['rows'])} rows)")
    return EXIT_OK


# ---- entry point -----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tfopt`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version, argparse errors (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    console = Console(quiet=args.quiet)
    try:
        with _native_output_hidden(not args.verbose) as stream:
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
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return _fail(f"unexpected {type(exc).__name__}: {first} (rerun with --verbose for the traceback)",
                     EXIT_FAILED)


def _fail(message: Any, code: int) -> int:
    text = " ".join(str(message).split()) or type(message).__name__  # one line, whatever the message held
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
