"""How the CLI talks: results on stdout, progress and notes on stderr, and the exit codes it returns.

Also keeps TensorFlow's and LiteRT's own C++ log lines off the console (:func:`native_output_hidden`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from .. import progress

PROG = "tfopt"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_REDRAW_S = 0.1  # seconds between two redraws of a bar by training steps


class Console:
    """Where the CLI talks: results to stdout, progress and notes to stderr (progress silenced by --quiet)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.stderr: TextIO | None = None  # set while fd 2 is diverted (see native_output_hidden)

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
        self._tracker = progress.Tracker()
        self._drawn_at = float("-inf")

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

    @property
    def live(self) -> bool:
        """A bar is drawn: the workbench reports training batches too (:mod:`pytest_tfopt.progress`)."""
        return self.tty and not self.quiet

    def event(self, ev: progress.Event) -> None:
        """A build's progress (the workbench's ``log``): on a terminal, the build's stage or its bar with the ETA."""
        self._tracker.update(ev)
        if not self.live or ev.kind in (progress.BUILT, progress.FAILED):
            return  # the step's own line (done) says how it ended
        if ev.kind == progress.STEP and ev.at - self._drawn_at < _REDRAW_S and ev.done < ev.total:
            return
        self._drawn_at = ev.at
        width = shutil.get_terminal_size().columns - len(f"{self._bar(0)} {self.index}/{self.total} ") - 1
        self._emit(self.index - 1, self._tracker.line(width), final=False)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def native_output_hidden(enabled: bool) -> Iterator[TextIO | None]:
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

