"""The history store: one embedded SQLite file that every run appends its result rows to.

Two tables: ``runs`` (one per appended run: commit, branch, time, hardware fingerprint, library versions)
and ``results`` (one per result row: test, variant, backend, outcome and the whole row as JSON, so rows
keep every field later versions add). A ``meta`` table names the schema and its version.

Concurrent writers (pytest-xdist sessions, two CI jobs on one shared file) lose nothing: the file is in
WAL mode, a writer waits up to :data:`BUSY_TIMEOUT_S` for the lock, and a run is appended in one
``BEGIN IMMEDIATE`` transaction, so readers see all of a run's rows or none, and a killed writer leaves
the file as it was. SQLite's locks need a local file system (not NFS).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import TfoptError, UsageError, setting
from ..outputs import check_writable
from .vcs import Revision

SCHEMA = "pytest-tfopt/history"
SCHEMA_VERSION = 1
#: how long a writer waits for another one's transaction, seconds
BUSY_TIMEOUT_S = 60.0
_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, commit_id TEXT NOT NULL, branch TEXT NOT NULL,
                   commit_time TEXT, created TEXT NOT NULL, hardware_id TEXT, hardware TEXT, versions TEXT);
CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL REFERENCES runs(id),
                      test TEXT NOT NULL, variant TEXT NOT NULL, backend TEXT NOT NULL, outcome TEXT,
                      row TEXT NOT NULL);
CREATE INDEX results_run ON results(run_id);
"""
def _remedy() -> str:
    return f"give {setting('history')} a new file name or a pytest-tfopt history file"


@dataclass(frozen=True)
class Run:
    """One appended run: where and when it measured. ``id`` grows with every append (the runs' order)."""

    id: int
    commit: str
    branch: str
    commit_time: str | None
    created: str
    hardware_id: str | None
    hardware: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    versions: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@contextlib.contextmanager
def _connect(path: str, create: bool) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode (transactions are explicit), WAL, with the busy timeout."""
    if not create and not os.path.isfile(path):
        raise UsageError(f"history {path!r} does not exist: append runs to it with {setting('history')} {path}")
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise UsageError(f"history {path!r} cannot be opened ({exc}): {_remedy()}") from None
    try:
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        yield db
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise UsageError(f"history {path!r} is not an SQLite file ({exc}): {_remedy()}") from None
        raise TfoptError(f"history {path!r}: SQLite failed ({exc}); if another run holds it, retry later") from None
    finally:
        db.close()


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} - {"sqlite_sequence"}


def _check_schema(db: sqlite3.Connection, path: str, create: bool) -> None:
    """Create the tables in an empty file; a one-line usage error for a foreign or newer file."""
    tables = _tables(db)
    if not tables and create:
        for statement in filter(str.strip, _TABLES.split(";")):  # not executescript: it would commit first
            db.execute(statement)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", SCHEMA), ("schema_version", str(SCHEMA_VERSION))])
        return
    meta = dict(db.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
    if meta.get("schema") != SCHEMA:
        raise UsageError(f"history {path!r} is an SQLite file of something else, not a pytest-tfopt history: {_remedy()}")
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise UsageError(f"history {path!r} has schema version {meta.get('schema_version')}, this pytest-tfopt "
                         f"reads {SCHEMA_VERSION}: upgrade pytest-tfopt, or start a new history file")


def check(path: str, option: str | None = None) -> None:
    """Before the first test: ``path`` can be written, and an existing file is a history this version reads."""
    check_writable(path, option or setting("history"))
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        with _connect(path, create=False) as db:
            _check_schema(db, path, create=False)


def append(path: str, rows: list[dict[str, Any]], revision: Revision, hardware: dict[str, Any],
           versions: dict[str, Any], hardware_id: str | None = None) -> int:
    """Append one run with its ``rows`` (result rows) to the history at ``path`` (made if missing).

    One transaction: concurrent writers wait for each other (up to :data:`BUSY_TIMEOUT_S`), none loses a
    row. Returns the run's id.
    """
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _connect(path, create=True) as db:
        if _tables(db):  # a foreign file is refused before anything in it changes
            _check_schema(db, path, create=False)
        db.execute("PRAGMA journal_mode = WAL")  # persistent: concurrent readers never block the writer
        db.execute("BEGIN IMMEDIATE")  # take the write lock now: the schema check and the rows are one unit
        try:
            _check_schema(db, path, create=True)
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            cur = db.execute(
                "INSERT INTO runs (commit_id, branch, commit_time, created, hardware_id, hardware, versions) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (revision.commit, revision.branch, revision.commit_time, created, hardware_id,
                 json.dumps(hardware, sort_keys=True, default=str), json.dumps(versions, sort_keys=True, default=str)))
            run_id = int(cur.lastrowid)
            db.executemany(
                "INSERT INTO results (run_id, test, variant, backend, outcome, row) VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, r["test"], r["variant"], r["backend"], r.get("outcome"),
                  json.dumps(r, sort_keys=True, default=str)) for r in rows])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return run_id


def read(path: str, branch: str | None = None) -> list[tuple[Run, list[dict[str, Any]]]]:
    """Every run of the history at ``path`` (only ``branch``'s when given), oldest first, with its rows."""
    with _connect(path, create=False) as db:
        _check_schema(db, path, create=False)
        where, args = ("WHERE branch = ?", (branch,)) if branch else ("", ())
        runs = {row[0]: Run(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6] or "{}"),
                            json.loads(row[7] or "{}"))
                for row in db.execute("SELECT id, commit_id, branch, commit_time, created, hardware_id, hardware, "
                                      f"versions FROM runs {where} ORDER BY id", args)}
        rows: dict[int, list[dict[str, Any]]] = {i: [] for i in runs}
        for run_id, text in db.execute("SELECT run_id, row FROM results ORDER BY id"):
            if run_id in rows:
                rows[run_id].append(json.loads(text))
    return [(run, rows[run.id]) for run in runs.values()]
