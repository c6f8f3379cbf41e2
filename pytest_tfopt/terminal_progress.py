"""Build progress on pytest's terminal, without breaking pytest's own progress line.

:class:`TerminalProgress` is the progress sink the plugin gives every workbench (``Workbench(log=...)``) and a
plugin of its own. What it shows depends on where pytest reports:

- ``-q`` (or no terminal reporter): nothing on the terminal (the lines go to the ``pytest_tfopt`` logger);
- a terminal (a TTY) at the default verbosity: a live bar with the epoch/batch and an ETA, drawn *beside*
  pytest's progress line (``test_x.py ..[tfopt] int8 for tflite (m): pruned epoch 3/10 |###  | ETA 00:09``) and
  erased when the build ends, so the next result character lands where pytest left off: the file name is never
  printed again. The bar is written raw (``write_raw``: pytest does not count it in the line's width, so its
  ``[ 50%]`` column stays right) and taken back with backspaces, which every terminal understands;
- no TTY (CI logs) at the default verbosity: nothing while tests run (a line would break pytest's line and a
  CI log cannot redraw one), then one line per build, with its stages, in a ``tfopt builds`` section at the
  end, like ``--durations``;
- ``-v``: the line per build, stage and epoch as it happens (pytest rewrites the test's prefix after it, as
  it does after its own live log lines), and the section at the end;
- an xdist worker: nothing (workers have no terminal); its builds travel to the controller's section in
  ``workeroutput``, each line prefixed by the worker's id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import pytest

from .progress import BUILT, FAILED, STEP, Event, Tracker, parse

#: seconds between two redraws of the bar by steps (batch steps can come thousands of times a second)
REDRAW_S = 0.1
#: columns kept free right of the bar: pytest's ``[100%]`` and a margin
_MARGIN = 9
#: the narrowest room a bar is drawn in
_MIN_ROOM = 24
_WORKER_KEY = "tfopt_builds"
_logger = logging.getLogger("pytest_tfopt")


class TerminalProgress:
    """The plugin's progress sink (``event(ev)``, or a plain message by calling it) and a pytest plugin."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.tracker = Tracker()
        self.clock = time.monotonic
        self.remote: list[str] = []  # the workers' build lines (xdist controller)
        self._mode: str | None = None
        self._drawn = 0  # characters of the bar on the screen
        self._drawn_at = float("-inf")

    @property
    def mode(self) -> str:
        """``quiet``, ``worker``, ``lines`` (-v), ``bar`` (a TTY) or ``summary`` (the section only)."""
        if self._mode is None:
            reporter = self._reporter()
            if hasattr(self.config, "workerinput"):
                self._mode = "worker"
            elif reporter is None or self.config.get_verbosity() < 0:
                self._mode = "quiet"
            elif self.config.get_verbosity() > 0:
                self._mode = "lines"
            else:
                isatty = reporter.isatty  # a method in pytest 9, a plain bool in older releases
                tty = (isatty() if callable(isatty) else bool(isatty)) and os.environ.get("TERM") != "dumb"
                self._mode = "bar" if tty else "summary"
        return self._mode

    @property
    def live(self) -> bool:
        """A bar is drawn: the fine-tuning recipes report each batch, not only each epoch."""
        return self.mode == "bar"

    def _reporter(self) -> Any:
        return self.config.pluginmanager.get_plugin("terminalreporter")

    def __call__(self, message: str) -> None:
        """A plain message (``log(line)``), read as an event (an epoch line is a step)."""
        self.event(parse(message, self.clock()))

    def event(self, ev: Event) -> None:
        """A workbench's progress event: drawn, written or kept for the section, as :attr:`mode` says."""
        self.tracker.update(ev)
        mode = self.mode
        if mode == "bar":
            self._draw(ev)
        elif mode == "lines" and ev.text is not None:
            with self._uncaptured():
                self._reporter().write_line(f"[tfopt] {ev.text}")
        elif mode == "quiet" and ev.text is not None:
            _logger.info(ev.text)

    # ---- the bar ---------------------------------------------------------------------------
    def _draw(self, ev: Event) -> None:
        if ev.kind in (BUILT, FAILED):
            self.clear()
            return
        if ev.kind == STEP and ev.at - self._drawn_at < REDRAW_S and ev.done < ev.total:
            return
        tw = self.config.get_terminal_writer()
        room = tw.fullwidth - tw.width_of_current_line - _MARGIN
        if room < _MIN_ROOM:
            return
        text = " " + self.tracker.line(room - 1, "[tfopt] ").encode("ascii", "replace").decode()
        self._drawn_at = ev.at
        self._replace(text)

    def clear(self) -> None:
        """Take the bar off the screen (the cursor goes back to where pytest left it)."""
        if self._drawn:
            self._replace("")

    def _replace(self, text: str) -> None:
        """Back over the bar drawn, ``text`` over it, blanks over what is left of the old one, back over those."""
        old, extra = self._drawn, max(self._drawn - len(text), 0)
        with self._uncaptured():
            self.config.get_terminal_writer().write_raw("\b" * old + text + " " * extra + "\b" * extra, flush=True)
        self._drawn = len(text)

    @contextlib.contextmanager
    def _uncaptured(self) -> Any:
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            yield

    # ---- hooks -----------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Before pytest writes a result: no bar left (a build that neither ended nor failed, e.g. interrupted)."""
        self.clear()

    def lines(self) -> list[str]:
        """One line per build of this session: this process's, then the workers'."""
        return [r.text for r in self.tracker.records] + self.remote

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            worker = getattr(session.config, "workerinput", {}).get("workerid", "worker")
            workeroutput[_WORKER_KEY] = [f"{worker}: {line}" for line in self.lines()]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.remote.extend(getattr(node, "workeroutput", {}).get(_WORKER_KEY, []))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = self.lines()
        if not lines or self.mode in ("quiet", "worker"):
            return
        terminalreporter.write_sep("=", "tfopt builds")
        for line in lines:
            terminalreporter.write_line(line)
