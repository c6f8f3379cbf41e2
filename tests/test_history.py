"""The result history: the SQLite store (concurrent writers included), step detection on seeded series,
``tfopt history`` (table, plot, --fail-on-step) and the plugin appending real runs on two git commits."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_tfopt import cli
from pytest_tfopt.errors import TfoptError, UsageError
from pytest_tfopt.history import changepoint, series, store
from pytest_tfopt.history.vcs import Revision

TEST = "test_suite.py::test_it[dynamic-tflite]"
HW = {"cpu": "test cpu", "cores": 2}


def _row(latency: float, size: int = 12_000, accuracy: float = 0.97, test: str = TEST) -> dict:
    return {"test": test, "variant": "dynamic", "backend": "tflite", "outcome": "passed", "size_bytes": size,
            "accuracy": accuracy, "latency_b1_p50_ms": latency, "latency_b1_n": 50, "hardware_id": "hw1",
            "latency_b1_p50_ci_ms": [latency * 0.9, latency * 1.1], "versions": {"tensorflow": "2.21.0"}}


def _commit(i: int) -> str:
    return f"{i:02d}" + "ab" * 19  # 40 hex digits, unique in their first 10


def _history(path: Path, latencies: list[float], **row) -> None:
    for i, latency in enumerate(latencies):
        store.append(str(path), [_row(latency, **row)], Revision(_commit(i), "main"), HW, {"tensorflow": "2.21.0"},
                     "hw1")


def _noisy(n: int, seed: int, cv: float = 0.05, step_at: int | None = None, step: float = 0.2,
           dist: str = "normal") -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n) if dist == "normal" else rng.standard_t(3, n) / np.sqrt(3)
    y = 2.0 * (1 + cv * e)
    if step_at is not None:
        y[step_at:] *= 1 + step
    return y


# --- the store ---------------------------------------------------------------------------------------------

def test_append_and_read_round_trip(tmp_path):
    path = tmp_path / "deep" / "h.sqlite"
    first = store.append(str(path), [_row(1.0), _row(2.0, test="t::b")], Revision("c1", "main", "2026-01-01T00:00:00Z"),
                         HW, {"tensorflow": "2.21.0"}, "hw1")
    second = store.append(str(path), [_row(1.1)], Revision("c2", "feature"), HW, {}, "hw1")
    assert second > first
    runs = store.read(str(path))
    assert [(r.commit, r.branch, len(rows)) for r, rows in runs] == [("c1", "main", 2), ("c2", "feature", 1)]
    assert runs[0][0].hardware == HW and runs[0][0].versions == {"tensorflow": "2.21.0"}
    assert runs[0][0].commit_time == "2026-01-01T00:00:00Z" and runs[0][1][0] == _row(1.0)
    assert [r.commit for r, _ in store.read(str(path), branch="feature")] == ["c2"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("not a database at all, but text " * 100), "is not an SQLite file"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE other (x)").connection.commit(), "of something else"),
    (lambda p: (store.append(str(p), [], Revision("c", "b"), {}, {}),
                sqlite3.connect(p, isolation_level=None).execute(
                    "UPDATE meta SET value = '99' WHERE key = 'schema_version'")), "schema version 99"),
])
def test_foreign_or_newer_files_are_one_line_usage_errors(tmp_path, make, message):
    path = tmp_path / "h.sqlite"
    make(path)
    before = path.read_bytes() if "SQLite file" in message else None
    for call in (lambda: store.check(str(path)), lambda: store.read(str(path)),
                 lambda: store.append(str(path), [_row(1.0)], Revision("c", "b"), {}, {})):
        with pytest.raises(UsageError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    if before is not None:
        assert path.read_bytes() == before
    else:  # nothing appended to a file that is no history this version reads
        with sqlite3.connect(path) as db:
            tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert "runs" not in tables or db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
            assert "runs" in tables or db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_missing_history_and_directory_paths(tmp_path):
    with pytest.raises(UsageError, match="does not exist: append runs to it with (pytest )?--tfopt-history"):
        store.read(str(tmp_path / "nope.sqlite"))
    with pytest.raises(UsageError, match="is a directory"):
        store.check(str(tmp_path))


def test_a_writer_that_cannot_get_the_lock_fails_in_one_line_and_leaves_the_history_whole(tmp_path, monkeypatch):
    path = tmp_path / "h.sqlite"
    _history(path, [1.0])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer in the middle of its run, for longer than we wait
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.05)
    try:
        with pytest.raises(TfoptError, match="database is locked.*retry later"):
            store.append(str(path), [_row(2.0)], Revision("c9", "main"), HW, {})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [len(rows) for _, rows in store.read(str(path))] == [1]


WRITER = """
import os, sys, time
from pytest_tfopt.history import store
from pytest_tfopt.history.vcs import Revision
path, name, runs, rows, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
while not os.path.exists(go):  # both writers start together
    time.sleep(0.001)
for r in range(runs):
    batch = [{"test": f"{name}::t{i}", "variant": "int8", "backend": "tflite", "size_bytes": i} for i in range(rows)]
    store.append(path, batch, Revision(f"{name}-{r}", "main"), {}, {})
"""


def test_two_processes_appending_at_once_lose_no_row(tmp_path):
    path, go = tmp_path / "h.sqlite", tmp_path / "go"
    runs, rows = 40, 25
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(runs), str(rows), str(go)],
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    go.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    history = store.read(str(path))
    assert len(history) == 2 * runs
    assert all(len(batch) == rows for _, batch in history)  # every run whole: one transaction each
    for name in ("a", "b"):  # each writer's runs in its own order
        assert [r.commit for r, _ in history if r.commit.startswith(name)] == [f"{name}-{i}" for i in range(runs)]


# --- step detection ----------------------------------------------------------------------------------------

def test_a_20_percent_latency_step_in_noisy_series_is_found_where_it_happened():
    found = 0
    for seed in range(100):
        y = _noisy(20, seed, cv=0.05, step_at=10)
        steps = changepoint.steps(y)
        found += any(abs(s.index - 10) <= 1 and 0.12 < s.relative < 0.3 for s in steps)
    assert found >= 90  # 97 of these 100 seeds


@pytest.mark.parametrize("dist", ["normal", "t3"])
def test_pure_noise_rarely_has_a_step(dist):
    hits = sum(bool(changepoint.steps(_noisy(20, seed, cv=0.05, dist=dist))) for seed in range(300))
    assert hits <= 6  # at most 2 % false positives (1 of these 300 seeds, either distribution)


def test_one_outlier_is_not_a_step_and_a_bare_threshold_would_say_it_is():
    y = _noisy(16, 3, cv=0.02)
    y[8] *= 1.4  # one noisy run, 40 % off
    assert changepoint.steps(y) == []
    assert abs(y[8] / np.median(y[:8]) - 1) > 0.2  # what a threshold on consecutive values would flag


def test_step_sizes_directions_and_short_series():
    sizes = [1000.0] * 6 + [1100.0] * 3
    (step,) = changepoint.steps(sizes)
    assert (step.index, step.before, step.after) == (6, 1000.0, 1100.0) and step.relative == pytest.approx(0.1)
    assert changepoint.steps([1000.0] * 6 + [1010.0] * 3) == []  # 1 %: under the 5 % a step needs
    assert changepoint.steps([0.90] * 6 + [0.88] * 3, relative_change=False)[0].change == pytest.approx(-0.02)
    assert changepoint.steps([0.90] * 6 + [0.895] * 3, relative_change=False) == []  # half a point
    assert changepoint.steps([1.0, 1.0, 2.0]) == []  # too short to tell a step from noise
    assert changepoint.steps([1.0] * 8 + [1.3])[0].index == 8  # the newest commit alone can be a step


def test_which_row_fields_are_metrics_and_which_way_is_better():
    from pytest_tfopt.history import fields

    assert fields.info("latency_b1_p50_ms").hardware_dependent and not fields.info("size_bytes").higher_is_better
    assert fields.info("accuracy[risk]").higher_is_better and not fields.info("accuracy[risk]").relative_change
    assert fields.info("load_c4_b1_throughput").higher_is_better and not fields.info("memory_peak_mb").higher_is_better
    assert not fields.info("accuracy_drop[risk]").higher_is_better
    for not_metric in ("latency_b1_n", "latency_b1_p95_ci_ms", "load_c4_b1_requests", "calibration_size", "test"):
        assert fields.info(not_metric) is None, not_metric
    assert fields.metric_fields(_row(1.5) | {"memory_peak_mb": float("nan"), "xnnpack_fallback": True}) == {
        "size_bytes": 12_000.0, "accuracy": 0.97, "latency_b1_p50_ms": 1.5}


# --- tfopt history -----------------------------------------------------------------------------------------

def _tfopt(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stepped(tmp_path):
    """12 commits of one test: p50 latency 20 % slower from the 9th commit on; size and accuracy steady."""
    path = tmp_path / "h.sqlite"
    _history(path, list(_noisy(12, 7, cv=0.03, step_at=8)))
    return path


def test_history_marks_the_step_and_fail_on_step_gates_it(stepped, capsys):
    code, out, _ = _tfopt(capsys, "history", str(stepped))
    assert code == 0
    assert out.count(_commit(0)[:10]) == 3  # three series (accuracy, size, p50) show every commit
    assert f"{TEST} [dynamic, tflite] latency_b1_p50_ms (ms, lower is better) on hardware hw1" in out
    (marked,) = [line for line in out.splitlines() if "STEP" in line]
    assert marked.split()[0] == _commit(8)[:10] and "regression" in marked and "+2" in marked
    assert "1 series whose newest step is a regression" in out
    code, out, _ = _tfopt(capsys, "history", str(stepped), "--fail-on-step", "--metric", "latency_p50")
    assert code == 1 and f"REGRESSION {TEST} [dynamic, tflite] latency_b1_p50_ms: +" in out
    code, out, _ = _tfopt(capsys, "history", str(stepped), "--fail-on-step", "--last", "6", "--metric", "size")
    assert code == 0 and "0 steps" in out  # size never stepped


def test_improvements_and_old_recovered_steps_do_not_fail(tmp_path, capsys):
    faster = tmp_path / "faster.sqlite"
    _history(faster, list(_noisy(12, 7, cv=0.03, step_at=6, step=-0.3)))
    code, out, _ = _tfopt(capsys, "history", str(faster), "--fail-on-step")
    assert code == 0 and "improvement" in out
    recovered = tmp_path / "recovered.sqlite"
    y = _noisy(15, 8, cv=0.03)
    y[5:10] *= 1.3
    _history(recovered, list(y))
    code, out, _ = _tfopt(capsys, "history", str(recovered), "--fail-on-step", "--metric", "latency_p50")
    assert code == 0 and out.count("STEP") == 2  # up, then back down: the newest step is an improvement


@pytest.mark.parametrize("suffix", [".html", ".svg", ".png"])
def test_plot_shows_every_commit_and_the_step(stepped, tmp_path, capsys, suffix):
    pytest.importorskip("vl_convert")
    out_file = tmp_path / "plots" / f"history{suffix}"
    code, out, _ = _tfopt(capsys, "history", str(stepped), "--metric", "latency_p50", "--plot", str(out_file))
    assert code == 0 and f"plot: {out_file}" in out
    data = out_file.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG")
    else:
        text = data.decode()
        assert all(_commit(i)[:10] in text for i in range(12)) and "regression" in text


@pytest.mark.parametrize("args, message", [
    (["missing.sqlite"], "history 'missing.sqlite' does not exist"),
    (["{h}", "--metric", "speed"], "--metric 'speed' is no metric"),
    (["{h}", "--plot", "x.pdf"], "--plot 'x.pdf': give a file ending in .html, .svg, .png"),
    (["{h}", "--test", "nothing*"], "has no series for these filters"),
    (["{h}", "--last", "0"], "'0' must be at least 1"),
])
def test_bad_history_arguments_are_one_line_usage_errors(stepped, capsys, args, message):
    code, out, err = _tfopt(capsys, "history", *(a.format(h=stepped) for a in args))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_not_a_history_file_is_one_line_usage_error(tmp_path, capsys):
    bad = tmp_path / "h.json"
    bad.write_text(json.dumps({"rows": []}) * 200)
    code, _, err = _tfopt(capsys, "history", str(bad))
    assert code == 2 and "is not an SQLite file" in err and len(err.strip().splitlines()) == 1


# --- the plugin, on two commits of a git repository --------------------------------------------------------

SUITE = """
def test_it(optimized_model):
    optimized_model.latency()
    assert optimized_model.evaluate() > 0.5
"""


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "HOME": str(cwd), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_two_runs_on_two_commits_make_a_history_and_an_injected_step_is_flagged(pytester, suite, monkeypatch,
                                                                                  capsys):
    for name in ("GITHUB_SHA", "GITHUB_REF_NAME", "GITHUB_HEAD_REF"):
        monkeypatch.delenv(name, raising=False)
    repo = pytester.path
    _git(repo, "init", "-q", "-b", "main")
    commits = []
    for attempt, how in enumerate((["--tfopt-history=hist/h.sqlite"], [])):
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"change {attempt}")
        commits.append(_git(repo, "rev-parse", "HEAD"))
        if not how:  # the second run names the history in the ini file, relative to it
            ini = repo / "tox.ini"  # where the suite fixture wrote its [pytest] section
            ini.write_text(ini.read_text().rstrip() + "\ntfopt_history = hist/h.sqlite\n")
        result = suite(SUITE, "--tfopt-variants=dynamic", *how)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["history: *hist/h.sqlite (1 results appended)"])
    path = repo / "hist" / "h.sqlite"
    runs = store.read(str(path))
    assert [(r.commit, r.branch) for r, _ in runs] == [(c, "main") for c in commits]
    assert all(r.commit_time and r.hardware_id == rows[0]["hardware_id"] and r.versions for r, rows in runs)
    code, out, _ = _tfopt(capsys, "history", str(path), "--metric", "latency_p50")
    assert code == 0 and all(c[:10] in out for c in commits) and "STEP" not in out

    # eight more commits measured like the second, the last four 20 % slower: the step is flagged and gated
    base = runs[1][1][0]
    rng = np.random.default_rng(0)
    for i in range(8):
        row = dict(base, latency_b1_p50_ms=base["latency_b1_p50_ms"] * (1 + 0.03 * rng.standard_normal())
                   * (1.2 if i >= 4 else 1.0))
        store.append(str(path), [row], Revision(_commit(i), "main"), runs[1][0].hardware, runs[1][0].versions,
                     runs[1][0].hardware_id)
    code, out, _ = _tfopt(capsys, "history", str(path), "--metric", "latency_p50", "--fail-on-step")
    assert code == 1
    (marked,) = [line for line in out.splitlines() if "STEP" in line]
    assert marked.split()[0] == _commit(4)[:10] and "regression" in marked
    assert series.build(store.read(str(path)), wanted=["latency_p50"])[0].current_regression.index == 6


def test_history_option_problems_stop_before_the_first_test(suite, pytester):
    (pytester.path / "h.sqlite").write_text("no database " * 100)
    result = suite(SUITE, "--tfopt-variants=dynamic", "--tfopt-history=h.sqlite")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*history*h.sqlite* is not an SQLite file*--tfopt-history*"])
    assert "Traceback" not in result.stderr.str()
