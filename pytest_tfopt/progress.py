"""Progress of long builds as events: what the core reports and what the front ends draw from it.

The core (:class:`~pytest_tfopt.workbench.Workbench`, the fine-tuning recipes) reports through an
:class:`Emitter` wrapped around the ``log`` it was given:

- a plain ``str -> None`` callable (what ``Workbench(log=...)`` has always taken) receives the lines it always
  received: ``building <variant> for <backend> (<model>)``, ``stage <id>``, ``<stage>: epoch k/N loss=...``,
  the recipes' own messages, and now ``built <variant> for <backend> (<model>) in 12.3 s``;
- a *sink*, any object with an ``event(ev)`` method, receives :class:`Event` s instead: the pytest plugin's
  terminal progress (:mod:`pytest_tfopt.terminal_progress`) and the ``tfopt`` command's console draw a bar with
  an ETA from them on a terminal, and one line per build elsewhere. A sink whose ``live`` attribute is true
  also receives a step per training batch (a smooth bar); the others get one per epoch.

A :class:`Tracker` follows one process's builds (the current build, stage and step; the ETA) and keeps one
:class:`BuildRecord` per finished build. Times come from the events (``Event.at``, seconds of a monotonic
clock), so everything here runs on a fake clock in tests.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

BUILD, STAGE, STEP, BUILT, FAILED, NOTE = "build", "stage", "step", "built", "failed", "note"
#: a recipe's plain epoch line (``pruned: epoch 2/10 loss=0.1``), read back into a step event
_EPOCH_LINE = re.compile(r"^(?P<what>\S.*?): epoch (?P<done>\d+)/(?P<total>\d+)(?: (?P<info>.*))?$")
#: the bar's characters: ASCII, so any terminal encoding shows it
_BAR_CHARS = " #"
_BAR_MIN, _BAR_MAX = 10, 30  # the bar's width, characters


@dataclass(frozen=True)
class Event:
    """One progress event of a build.

    ``kind``: :data:`BUILD` (a build starts; ``what`` = ``<variant> for <backend> (<model>)``), :data:`STAGE` (a
    model-level stage starts; ``what`` = its id), :data:`STEP` (``done`` of ``total`` ``unit`` s of stage ``what``;
    ``unit`` ``"epoch"`` or ``"batch"``, ``info`` e.g. the epoch's metrics), :data:`BUILT` / :data:`FAILED` (the
    build ended after ``seconds``), :data:`NOTE` (a recipe's message). ``at``: the monotonic clock, seconds.
    """

    kind: str
    what: str
    done: int = 0
    total: int = 0
    unit: str = "epoch"
    info: str = ""
    seconds: float = 0.0
    at: float = 0.0

    @property
    def text(self) -> str | None:
        """The line a plain ``log`` callable receives (``None``: nothing, e.g. for a batch step or a failure)."""
        if self.kind == BUILD:
            return f"building {self.what}"
        if self.kind == STAGE:
            return f"stage {self.what}"
        if self.kind == STEP:
            return f"{self.what}: epoch {self.done}/{self.total} {self.info}".rstrip() if self.unit == "epoch" else None
        if self.kind == BUILT:
            return f"built {self.what} in {self.seconds:.1f} s"
        return self.what if self.kind == NOTE else None


def parse(message: str, at: float = 0.0) -> Event:
    """A recipe's plain message as an event: an epoch line (``<stage>: epoch k/N ...``) is a step, others notes."""
    match = _EPOCH_LINE.match(message)
    if match is None:
        return Event(NOTE, message, at=at)
    return Event(STEP, match["what"], int(match["done"]), int(match["total"]), "epoch", match["info"] or "", at=at)


class Emitter:
    """What the core reports progress through; wraps a plain ``log`` callable or a sink (``event(ev)``).

    Callable with a string, like the ``log`` the recipes have always received (an epoch line becomes a step).
    ``clock``: seconds, monotonic (a fake one in tests).
    """

    def __init__(self, log: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock

    @property
    def live(self) -> bool:
        """The sink draws a live bar: it wants a step per training batch, not only per epoch."""
        return bool(getattr(self.log, "live", False))

    def event(self, ev: Event) -> None:
        """Hand ``ev`` to the sink, or its line (:attr:`Event.text`) to a plain callable."""
        sink = getattr(self.log, "event", None)
        if callable(sink):
            sink(ev)
            return
        text = ev.text
        if text is not None and self.log is not None:
            self.log(text)

    def __call__(self, message: str) -> None:
        """A recipe's plain message (:func:`parse`)."""
        self.event(parse(message, self.clock()))

    def build(self, what: str) -> None:
        """A build starts: ``what`` = ``<variant> for <backend> (<model>)``."""
        self.event(Event(BUILD, what, at=self.clock()))

    def stage(self, what: str) -> None:
        """A model-level stage (a fine-tune, a transform) of the build starts."""
        self.event(Event(STAGE, what, at=self.clock()))

    def step(self, what: str, done: int, total: int, unit: str = "epoch", info: str = "") -> None:
        """``done`` of ``total`` epochs (or batches: ``unit="batch"``) of stage ``what`` are done."""
        self.event(Event(STEP, what, done, total, unit, info, at=self.clock()))

    def ended(self, what: str, seconds: float, ok: bool = True) -> None:
        """The build ended after ``seconds``: built, or failed (``ok=False``; its exception tells why)."""
        self.event(Event(BUILT if ok else FAILED, what, seconds=seconds, at=self.clock()))


def emitter(log: Any) -> Emitter:
    """``log`` as an :class:`Emitter` (itself when it is one)."""
    return log if isinstance(log, Emitter) else Emitter(log)


@dataclass
class BuildRecord:
    """A finished build: what, how long (seconds), and each stage's steps and duration."""

    what: str
    seconds: float = 0.0
    ok: bool = True
    stages: list[tuple[str, int, str, float]] = field(default_factory=list)  # (stage, steps, unit, seconds)

    @property
    def text(self) -> str:
        """One line: ``built int8 for tflite (digits) in 3.2 s (pruned(epochs=2): 2 epochs in 2.9 s)``."""
        head = f"{'built' if self.ok else 'failed to build'} {self.what} in {self.seconds:.1f} s"
        parts = [f"{stage}: {steps} {unit}{'s' if steps != 1 else ''} in {s:.1f} s" if steps else f"{stage}: {s:.1f} s"
                 for stage, steps, unit, s in self.stages]
        return f"{head} ({'; '.join(parts)})" if parts else head


class Tracker:
    """Follows the builds of one process from their events: the current build, stage and step; the finished builds."""

    def __init__(self) -> None:
        self.records: list[BuildRecord] = []
        self.current: BuildRecord | None = None
        self.step: Event | None = None
        self._stage: tuple[str, float] | None = None  # (id, started at)
        self._first: Event | None = None  # the first step of the current series

    def update(self, ev: Event) -> None:
        """Take ``ev`` into account (events of one build arrive in order, builds one after the other)."""
        if ev.kind == BUILD:
            self.current, self._stage, self.step = BuildRecord(ev.what), None, None
        elif ev.kind == STAGE:
            self._close_stage(ev.at)
            self._stage, self.step = (ev.what, ev.at), None
        elif ev.kind == STEP:
            step = self.step
            if step is not None and (step.what, step.unit, ev.unit) == (ev.what, "batch", "epoch"):
                return  # the epoch's end, inside a series of its batches: the batches measure the rate
            if step is None or (step.what, step.unit) != (ev.what, ev.unit) or ev.done < step.done:
                self._first = ev  # a new series of steps
            self.step = ev
        elif ev.kind in (BUILT, FAILED) and self.current is not None:
            self._close_stage(ev.at)
            self.current.seconds, self.current.ok = ev.seconds, ev.kind == BUILT
            self.records.append(self.current)
            self.current, self.step = None, None

    def _close_stage(self, at: float) -> None:
        if self._stage is not None and self.current is not None:
            self.current.stages.append((self._stage[0], self._epochs(), "epoch", at - self._stage[1]))
        self._stage = None

    def _epochs(self) -> int:
        """The epochs of the last steps: their total, or N of a batch step's ``epoch k/N`` (0 without steps)."""
        if self.step is None:
            return 0
        if self.step.unit == "epoch":
            return self.step.total
        match = re.search(r"epoch \d+/(\d+)", self.step.info)
        return int(match[1]) if match else 0

    def rate(self) -> float | None:
        """Steps per second of the current series, from its first step on (what came before, a model's compilation
        or the data's first pass, is no guide); ``None`` before its second step."""
        first, step = self._first, self.step
        if first is None or step is None or step.done <= first.done or step.at <= first.at:
            return None
        return (step.done - first.done) / (step.at - first.at)

    def line(self, width: int, prefix: str = "") -> str:
        """The current state in at most ``width`` characters: a bar with the ETA while steps run, else what runs.

        The ETA is the time the remaining steps take at :meth:`rate` (``?`` before the second step). Narrow: the
        build's name goes first, then the prefix.
        """
        build = self.current.what if self.current is not None else ""
        step = self.step
        if step is None or step.total <= 0:
            doing = f"{build}: {self._stage[0]}" if self._stage is not None else f"building {build}"
            return _fit([f"{prefix}{doing} ...", f"{doing} ..."], width)
        label = f"{step.what} {'epoch ' + str(step.done) + '/' + str(step.total) if step.unit == 'epoch' else step.info}"
        tail = _BAR_MIN + len(" || ETA 00:00")
        desc = _fit([f"{prefix}{build}: {label}", f"{prefix}{label}", label], width - tail)
        ncols = min(width, len(desc) + _BAR_MAX + len(" || ETA 00:00"))
        return tqdm.format_meter(step.done, step.total, 0.0, ncols=ncols, prefix=desc, ascii=_BAR_CHARS, rate=self.rate(),
                                 bar_format="{desc} |{bar}| ETA {remaining}")[:width]


def _fit(texts: list[str], width: int) -> str:
    """The first of ``texts`` at most ``width`` characters long, else the last one cut to ``width``."""
    return next((t for t in texts if len(t) <= width), texts[-1][:max(width, 0)])
