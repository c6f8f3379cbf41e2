"""The one atomic writer: reports and baselines get the mode open() would give, cache entries stay private,
and a failed write leaves neither a temp file nor a half-written target behind."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from pytest_tfopt import baseline, cache, files, report

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@posix_only
def test_umask_is_read_without_changing_it():
    old = os.umask(0o027)
    try:
        assert files.umask() == 0o027
        assert files.umask() == 0o027
    finally:
        os.umask(old)


@posix_only
def test_public_files_honour_the_umask_private_ones_stay_0600(tmp_path, umask_022):
    assert files.write_atomic(tmp_path / "r.md", b"report") == str(tmp_path / "r.md")
    assert mode(tmp_path / "r.md") == 0o644
    files.write_atomic(tmp_path / "e.tflite", b"entry", mode=files.PRIVATE)
    assert mode(tmp_path / "e.tflite") == 0o600
    files.write_atomic(tmp_path / "g.txt", b"group", mode=0o660)
    assert mode(tmp_path / "g.txt") == 0o640
    assert (tmp_path / "r.md").read_bytes() == b"report"


@posix_only
def test_reports_baselines_and_cache_entries_get_their_modes(tmp_path, umask_022):
    doc = {"schema": baseline.SCHEMA, "schema_version": baseline.SCHEMA_VERSION, "rows": []}
    report.write(str(tmp_path / "out" / "r.json"), doc)
    baseline.save(tmp_path / "base" / "b.json", doc)
    assert mode(tmp_path / "out" / "r.json") == mode(tmp_path / "base" / "b.json") == 0o644
    cache._atomic_write(str(tmp_path / "k.tflite"), b"bytes")
    assert mode(tmp_path / "k.tflite") == 0o600


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_leaves_no_temp_and_keeps_the_old_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "b.json"
    target.write_bytes(b"old")

    def refuse(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, refuse)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(target, b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]
    assert target.read_bytes() == b"old"


def test_interrupted_write_leaves_no_temp(tmp_path, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(tmp_path / "r.html", b"<html>")
    assert list(tmp_path.iterdir()) == []


def test_cache_temp_files_keep_the_prefix_it_sweeps(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(os.path.basename(src)), real(src, dst)))
    cache._atomic_write(str(tmp_path / "KEY.tflite"), b"x")
    files.write_atomic(tmp_path / "r.md", b"y")
    assert seen[0].startswith(cache.TMP_PREFIX) and seen[0].endswith("KEY.tflite")
    assert seen[1].startswith(files.TMP_PREFIX)
