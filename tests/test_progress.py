"""Build progress: events and their ETA on a fake clock, plain ``log`` callables, pytest's progress line kept
intact (no TTY, ``-q``, ``-v``, and a real pseudo-terminal showing the bar)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from pytest_tfopt import progress
from pytest_tfopt.progress import BUILD, BUILT, FAILED, NOTE, STAGE, STEP, Emitter, Event, Tracker

PRUNED = "pruned(sparsity=0.5,epochs=2)"
PRUNED_ID = "pruned(epochs=2,sparsity=0.5)"


def _suite(sparsity: float, variant: str = "pruned(sparsity={},epochs=2)") -> str:
    """Two tests, one building a pruned variant fine-tuned for 2 epochs (each run its own ``sparsity``: a build
    of its own, while fp32 comes from the shared cache)."""
    return f"""
import pytest

@pytest.mark.tfopt_variants("{variant.format(sparsity)}")
def test_pruned(optimized_model):
    pass

def test_plain():
    pass
"""


def _built(sparsity: float) -> str:
    return f"built pruned(epochs=2,sparsity={sparsity})+fp32 for tflite (digits_cnn.h5) in "


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---- events, plain callables, the tracker (fake clock) -------------------------------------------------


def test_a_plain_log_callable_gets_the_lines_it_always_got():
    lines: list[str] = []
    clock = FakeClock()
    emit = Emitter(lines.append, clock)
    emit.build("int8 for tflite (m)")
    emit.stage(PRUNED_ID)
    emit.step("pruned", 1, 2, info="loss=0.5000")
    emit.step("pruned", 7, 80, unit="batch", info="epoch 1/2")  # batches are for bars: no line
    emit("pruned: sparsity 0.5 on dense")  # a recipe's own message, as before
    emit.ended("int8 for tflite (m)", 12.34)
    emit.ended("int8 for tflite (m)", 1.0, ok=False)  # a failure is the exception's to tell
    assert lines == ["building int8 for tflite (m)", f"stage {PRUNED_ID}", "pruned: epoch 1/2 loss=0.5000",
                     "pruned: sparsity 0.5 on dense", "built int8 for tflite (m) in 12.3 s"]
    assert progress.emitter(emit) is emit and not emit.live


def test_a_sink_gets_events_and_plain_epoch_lines_become_steps():
    seen: list[Event] = []

    class Sink:
        live = True

        def event(self, ev: Event) -> None:
            seen.append(ev)

    clock = FakeClock()
    emit = Emitter(Sink(), clock)
    assert emit.live
    emit("pqat/pruned: epoch 2/3 loss=0.1")  # what a recipe wrapping log in a lambda still sends
    emit("graphopt: 10 -> 8 ops")
    emit("cqat: epoch 1/2")
    assert [(e.kind, e.what, e.done, e.total, e.info) for e in seen] == [
        (STEP, "pqat/pruned", 2, 3, "loss=0.1"), (NOTE, "graphopt: 10 -> 8 ops", 0, 0, ""), (STEP, "cqat", 1, 2, "")]
    assert all(e.at == 100.0 for e in seen)


def _feed(tracker: Tracker, *events: Event) -> None:
    for ev in events:
        tracker.update(ev)


def test_eta_is_the_remaining_steps_at_the_rate_since_the_first_step():
    t = Tracker()
    _feed(t, Event(BUILD, "int8 for tflite (m)", at=0.0), Event(STAGE, "pruned(epochs=10)", at=1.0))
    assert t.line(80, "[tfopt] ") == "[tfopt] int8 for tflite (m): pruned(epochs=10) ..."
    _feed(t, Event(STEP, "pruned", 1, 10, at=31.0))  # the first epoch also compiled the model: no guide
    assert t.line(80).endswith("| ETA ?")
    _feed(t, Event(STEP, "pruned", 2, 10, at=33.0))
    assert t.rate() == 0.5
    assert re.fullmatch(r"int8 for tflite \(m\): pruned epoch 2/10 \|#{5,6} {23,25}\| ETA 00:16", t.line(80)), t.line(80)
    _feed(t, Event(STEP, "pruned", 4, 10, at=37.0))  # 3 epochs in 6 s: 6 more in 12 s
    assert t.line(80).endswith("| ETA 00:12")
    # a new series (QAT after pruning, in one stage) starts its own rate
    _feed(t, Event(STEP, "pqat", 1, 100, "batch", "epoch 1/4", at=40.0), Event(STEP, "pqat", 50, 100, "batch",
                                                                                "epoch 2/4", at=138.0))
    assert t.line(80).startswith("int8 for tflite (m): pqat epoch 2/4 |") and t.line(80).endswith("| ETA 01:40")
    _feed(t, Event(STEP, "pqat", 1, 4, "epoch", at=139.0))  # an epoch's end amid its batches changes nothing
    assert t.line(80).endswith("| ETA 01:40")
    # narrow: the build's name goes, then the prefix; never wider than asked
    assert t.line(48, "[tfopt] ").startswith("[tfopt] pqat epoch 2/4 |")
    for width in (48, 30, 12, 0):
        assert len(t.line(width, "[tfopt] ")) <= width
    _feed(t, Event(BUILT, "int8 for tflite (m)", seconds=150.5, at=150.5))
    assert t.current is None and t.step is None
    assert [r.text for r in t.records] == [
        "built int8 for tflite (m) in 150.5 s (pruned(epochs=10): 4 epochs in 149.5 s)"]


def test_build_records_name_each_stage_and_failures():
    t = Tracker()
    _feed(t, Event(BUILD, "a for tf (m)", at=0.0), Event(STAGE, "lowrank", at=0.0), Event(STAGE, "qat", at=2.0),
          Event(STEP, "qat", 1, 1, at=3.0), Event(FAILED, "a for tf (m)", seconds=4.0, at=4.0),
          Event(BUILD, "fp32 for tflite (m)", at=5.0), Event(BUILT, "fp32 for tflite (m)", seconds=0.25, at=5.25))
    assert [r.text for r in t.records] == [
        "failed to build a for tf (m) in 4.0 s (lowrank: 2.0 s; qat: 1 epoch in 2.0 s)",
        "built fp32 for tflite (m) in 0.2 s"]


def test_workbench_takes_a_plain_log_callable_with_its_epoch_lines(model_path, data_path, tmp_path):
    from pytest_tfopt import Workbench

    lines: list[str] = []
    wb = Workbench(model_path, data_path, cache_dir=tmp_path, threads=1, log=lines.append)
    wb.build(PRUNED)
    assert lines[:2] == [f"building {PRUNED_ID}+fp32 for tflite (digits_cnn.h5)", f"stage {PRUNED_ID}"]
    epochs = [ln for ln in lines if ": epoch " in ln]
    assert [ln.split(" loss=")[0] for ln in epochs] == ["pruned: epoch 1/2", "pruned: epoch 2/2"], lines
    assert re.fullmatch(rf"built {re.escape(PRUNED_ID)}\+fp32 for tflite \(digits_cnn.h5\) in \d+\.\d s", lines[-1])


# ---- pytest's progress line (pytester, no TTY) ----------------------------------------------------------


def _file_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("test_suite.py")]


def test_without_a_tty_the_line_stays_intact_and_builds_are_listed_at_the_end(suite):
    result = suite(_suite(0.5))
    result.assert_outcomes(passed=2)
    assert [re.sub(r"\s+", " ", ln) for ln in _file_lines(result.outlines)] == ["test_suite.py .. [100%]"]
    assert not [ln for ln in result.outlines if "[tfopt]" in ln or ": epoch " in ln]
    result.stdout.fnmatch_lines([
        "*= tfopt builds =*",
        f"{_built(0.5)}* s ({PRUNED_ID}: 2 epochs in * s)",
        "*= tfopt summary =*",
    ])


def test_quiet_shows_no_build_progress(suite):
    result = suite(_suite(0.4), "-q")
    result.assert_outcomes(passed=2)
    assert result.outlines[0].startswith("..")
    text = result.stdout.str()
    assert "[tfopt]" not in text and "tfopt builds" not in text and ": epoch" not in text


def test_verbose_shows_every_epoch(suite):
    result = suite(_suite(0.3), "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "[[]tfopt[]] building pruned(epochs=2,sparsity=0.3)+fp32 for tflite (digits_cnn.h5)",
        "[[]tfopt[]] stage pruned(epochs=2,sparsity=0.3)",
        "[[]tfopt[]] pruned: epoch 1/2 loss=*",
        "[[]tfopt[]] pruned: epoch 2/2 loss=*",
        f"[[]tfopt[]] {_built(0.3)}* s",
        "*test_pruned*PASSED*",
        "*test_plain PASSED*",
        "*= tfopt builds =*",
    ])


# ---- a real terminal ------------------------------------------------------------------------------------


def _run_in_a_terminal(args: list[str], cwd: Path, columns: int = 120) -> str:
    """What ``args`` writes to a pseudo-terminal ``columns`` wide (raw: with its control characters)."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.Popen(args, cwd=cwd, stdin=secondary, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the other end closed (Linux: EIO)
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.wait(timeout=600) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows after ``raw``: characters overwrite, ``\\b`` and ``\\r`` move, colours drop."""
    lines: list[list[str]] = [[]]
    col = 0
    for token in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|.|\n", re.sub(r"\x1b\[[0-9;]*m", "", raw), re.S):
        line = lines[-1]
        if token == "\n":
            lines.append([])
            col = 0
        elif token == "\r":
            col = 0
        elif token == "\b":
            col = max(col - 1, 0)
        elif token == "\x1b[K":
            del line[col:]
        elif not token.startswith("\x1b"):
            line.extend(" " * (col + 1 - len(line)))
            line[col] = token
            col += 1
    return ["".join(line).rstrip() for line in lines]


def test_on_a_terminal_a_bar_with_the_eta_runs_beside_the_intact_progress_line(pytester, shared_cache, model_path,
                                                                               data_path):
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(test_suite=_suite(0.6))
    raw = _run_in_a_terminal([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                              f"--tfopt-cache-dir={shared_cache}", "--tfopt-threads=1"], pytester.path)
    bars = re.findall(r"\[tfopt\] [^\b]*?pruned epoch [12]/2 \|[# ]+\| ETA (?:\?|\d\d:\d\d)", raw)
    assert bars, raw[-3000:]
    assert re.search(r"ETA \d\d:\d\d", " ".join(bars)), bars  # the rate known after a few batches
    assert re.search(r"test_suite\.py  ?\[tfopt\] building", raw)  # drawn beside the file name, on its line
    screen = _screen(raw)
    assert [re.sub(r"\s+", " ", ln) for ln in _file_lines(screen)] == ["test_suite.py .. [100%]"], screen
    assert not [ln for ln in screen if "[tfopt]" in ln], screen  # every bar was taken back
    assert any(ln.startswith(_built(0.6)) for ln in screen), screen


def test_xdist_workers_stay_silent_and_their_builds_reach_the_controller(suite, tmp_path):
    """Workers have no terminal: their builds come back in ``workeroutput``, listed with the worker's id."""
    result = suite(_suite(0, "fp32"), "-n", "1", f"--tfopt-cache-dir={tmp_path}", subprocess=True)  # fp32 builds
    result.assert_outcomes(passed=2)
    assert not [ln for ln in result.outlines if "[tfopt]" in ln]
    result.stdout.fnmatch_lines(["*= tfopt builds =*", "gw0: built fp32 for tflite (digits_cnn.h5) in * s"])
