"""``tfopt history``: each metric of each test/variant/backend over the last commits of a history, its steps
marked (a change-point fit, :mod:`pytest_tfopt.history.changepoint`), optionally plotted and gated on."""

from __future__ import annotations

import argparse
import importlib.util
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..report.table import table
from .console import EXIT_FAILED, EXIT_OK, Console
from .files import check_writable, existing, write_atomic

if TYPE_CHECKING:  # the history modules load numpy: imported when the command runs, not by 'tfopt --help'
    from ..history.changepoint import Step
    from ..history.series import Series

NO_PLOT_EXTRA = "--plot needs the report extra (Altair, vl-convert): pip install 'pytest-tfopt[report]'"


def cmd_history(args: argparse.Namespace, console: Console) -> int:
    from ..history import fields, plot, series, store

    existing(args.history, "history", "HISTORY (append runs with pytest --tfopt-history PATH)")
    for name in args.metric or []:
        if name != "all" and fields.info(fields.resolve(name)) is None:
            raise UsageError(f"--metric {name!r} is no metric: give a metrics-table name (accuracy, size, gzip_size, "
                             "latency_p50, latency_p95), a row field such as latency_b1_p99_ms, or all")
    if args.plot:
        if not args.plot.endswith(plot.FORMATS):
            raise UsageError(f"--plot {args.plot!r}: give a file ending in {', '.join(plot.FORMATS)}")
        if importlib.util.find_spec("altair") is None or importlib.util.find_spec("vl_convert") is None:
            raise UsageError(NO_PLOT_EXTRA)
        check_writable(args.plot, "--plot")
    runs = store.read(args.history, branch=args.branch)
    found = series.build(runs, last=args.last, tests=args.test, wanted=args.metric)
    if not found:
        raise UsageError(f"history {args.history!r} has no series for these filters ({len(runs)} runs): check "
                         "--test, --metric and --branch")
    for s in found:
        _print_series(console, s)
    steps = sum(len(s.steps) for s in found)
    regressions = [s for s in found if s.current_regression is not None]
    commits = len(series.commit_window((run for run, _ in runs), args.last))
    console.out(f"{len(found)} series over the last {commits} commits; {steps} steps, {len(regressions)} series "
                "whose newest step is a regression")
    for s in regressions:
        step = s.current_regression
        console.out(f"REGRESSION {s.test} [{s.variant}, {s.backend}] {s.field}: {_change(s, step)} at commit "
                    f"{plot.short(s.points[step.index].commit)} ({step.before:.5g} -> {step.after:.5g})")
    if args.plot:
        write_atomic(args.plot, plot.render(found, args.plot), "--plot")
        console.out(f"plot: {args.plot}")
    return EXIT_FAILED if args.fail_on_step and regressions else EXIT_OK


def _change(s: Series, step: Step) -> str:
    """A step's change: ``+20.0%``, or in points for scores (``-0.0300``)."""
    if s.info.relative_change and step.relative is not None:
        return f"{step.relative:+.1%}"
    return f"{step.change:+.4f}"


def _print_series(console: Console, s: Series) -> None:
    """A series' title, then one line per commit (oldest first) with its value and any step there."""
    from ..history.plot import short

    marks = {step.index: step for step in s.steps}
    body = []
    for i, p in enumerate(s.points):
        step = marks.get(i)
        note = f"STEP {_change(s, step)} {s.kind(step)} (from {step.before:.5g})" if step else ""
        body.append([short(p.commit), p.branch, str(p.runs), f"{p.value:.5g}", note])
    console.out(s.title)
    for line in table(["commit", "branch", "runs", "value", "step"], body, [False, False, True, True, False]):
        console.out(f"  {line}")
    console.out()
