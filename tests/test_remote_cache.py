"""The shared remote artifact cache (``--tfopt-cache-dir=s3://...``) against a real S3-compatible server.

moto's server runs as a subprocess started here (as s3fs's own tests do), so a test can kill it to play a dead
remote. Credentials are fake and come from the environment, as a CI runner's would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_tfopt import remote_cache
from pytest_tfopt.artifact import Artifact
from pytest_tfopt.cache import ArtifactCache
from pytest_tfopt.cli import main as tfopt_main
from pytest_tfopt.cli.cache import old, parse_age
from pytest_tfopt.errors import CacheError, UsageError
from pytest_tfopt.remote_cache import RemoteArtifactCache, RemoteStore, open_cache, payload_name, redact

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "tfopt-test"
KEY = "0123456789abcdef0123456789abcdef"
FAKE_ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
            "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto's server did not start")


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(10)


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server with one bucket; fake credentials and the endpoint in the environment."""
    port = _free_port()
    proc = _start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**FAKE_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(name, value)
        mp.delenv("TFOPT_CACHE_SECRET", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir(BUCKET)
        yield endpoint
    _stop(proc)
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch):
    monkeypatch.delenv("TFOPT_CACHE_SECRET", raising=False)
    for state in (remote_cache._UNREACHABLE, remote_cache._NO_UPLOADS, remote_cache._WARNED):
        state.clear()
    yield
    for state in (remote_cache._UNREACHABLE, remote_cache._NO_UPLOADS, remote_cache._WARNED):
        state.clear()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def url(s3_endpoint, request) -> str:
    """A prefix of the bucket no other test uses."""
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').replace(']', '')}"


def _cache(url: str, tmp_path: Path, name: str, **kw) -> RemoteArtifactCache:
    notes: list[str] = []
    cache = RemoteArtifactCache(url, local_dir=str(tmp_path / name), warn=notes.append, **kw)
    cache.notes = notes  # type: ignore[attr-defined]
    return cache


def _artifact(content: bytes, suffix: str = ".tflite") -> Callable:
    return lambda: Artifact(content, {"variant": "int8"}, suffix)


# ---- the hit path ----------------------------------------------------------------------------------------------
def test_a_fresh_local_cache_builds_nothing_and_gets_identical_bytes(url, tmp_path):
    first = _cache(url, tmp_path, "one")
    built = [first.get_or_build(f"{i:032x}", _artifact(os.urandom(2000))) for i in range(3)]
    assert (first.stats.built, first.stats.reused, first.uploaded) == (3, 0, 3)
    second = _cache(url, tmp_path, "two")
    got = [second.get_or_build(f"{i:032x}", _artifact(b"must not be built")) for i in range(3)]
    assert (second.stats.built, second.stats.reused, second.fetched) == (0, 3, 3)
    assert [a.content for a in got] == [a.content for a in built]
    assert all(Path(a.path).parent == tmp_path / "two" for a in got)  # served from the private local copy
    again = second.get_or_build("0" * 32, _artifact(b"x"))  # now a local hit: the remote is not asked
    assert again.content == built[0].content and second.fetched == 3
    assert first.notes == second.notes == []


def test_the_remote_layout_publishes_the_key_last(url, tmp_path):
    cache = _cache(url, tmp_path, "w")
    art = cache.get_or_build(KEY, _artifact(b"payload"))
    names = sorted(o["name"] for o in RemoteStore(url).listing())
    assert names == [".tfopt-remote-cache.json", f"{KEY}-{art.sha256[:16]}.tflite", f"{KEY}.json"]  # no temp left
    assert json.loads(RemoteStore(url).get(f"{KEY}.json"))["sha256"] == art.sha256


def test_a_file_url_goes_through_temp_names_and_a_move(tmp_path):
    url = f"file://{tmp_path}/shared"
    first = _cache(url, tmp_path, "one")
    art = first.get_or_build(KEY, _artifact(b"over a file url"))
    (tmp_path / "shared" / f".tmp-dead-{KEY}.json").write_bytes(b'{"half')  # a writer that died mid-write
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == [
        ".tfopt-remote-cache.json", f".tmp-dead-{KEY}.json", f"{KEY}-{art.sha256[:16]}.tflite", f"{KEY}.json"]
    second = _cache(url, tmp_path, "two")
    assert second.get_or_build(KEY, _artifact(b"no")).content == b"over a file url"
    assert (second.stats.built, second.fetched, first.notes, second.notes) == (0, 1, [], [])
    assert tfopt_main(["cache", "prune", "--older-than", "0s", "--cache-dir", url]) == 0
    assert not (tmp_path / "shared" / f".tmp-dead-{KEY}.json").exists()


def test_a_remote_that_refuses_uploads_is_still_read(tmp_path, monkeypatch):
    monkeypatch.setenv("TFOPT_CACHE_SECRET", "team-secret")
    url = f"file://{tmp_path}/shared"
    _cache(url, tmp_path, "writer").get_or_build(KEY, _artifact(b"shared bytes"))
    (tmp_path / "shared" / "records").write_bytes(b"")  # a file where a directory must be: writes fail, even for root
    cache = _cache(url, tmp_path, "reader")
    cache.write_record("source-" + "e" * 32, {"hash": "x"})
    assert cache.notes == [f"WARNING remote cache {url} refused an upload (" + cache.notes[0].split(" (", 1)[1]]
    assert cache.notes[0].endswith("): reading it, not writing it")
    assert cache.get_or_build(KEY, _artifact(b"no")).content == b"shared bytes"  # reads go on
    assert (cache.fetched, cache.uploaded, len(cache.notes)) == (1, 0, 1)


def test_a_local_path_is_the_plain_local_cache(tmp_path):
    cache = open_cache(tmp_path / "plain")
    assert type(cache) is ArtifactCache
    assert isinstance(open_cache("file:///nowhere/x"), RemoteArtifactCache)


# ---- damaged, partial and racing writes ---------------------------------------------------------------------------
def test_a_tampered_remote_payload_is_rebuilt(url, tmp_path):
    art = _cache(url, tmp_path, "w").get_or_build(KEY, _artifact(b"the real bytes"))
    store = RemoteStore(url)
    store.fs.pipe_file(store.path(payload_name(KEY, {"sha256": art.sha256, "suffix": ".tflite"})), b"planted!")
    reader = _cache(url, tmp_path, "r")
    with pytest.warns(UserWarning, match="does not match its recorded hash; rebuilding it"):
        got = reader.get_or_build(KEY, _artifact(b"rebuilt"))
    assert (got.content, reader.stats.built, reader.fetched) == (b"rebuilt", 1, 0)
    # the rebuild was published again: the next fresh reader takes it
    assert _cache(url, tmp_path, "r2").get_or_build(KEY, _artifact(b"no")).content == b"rebuilt"


def test_a_payload_without_its_json_is_never_taken(url, tmp_path):
    store = RemoteStore(url)
    store.put(payload_name(KEY, {"sha256": "ab" * 32, "suffix": ".tflite"}), b"orphan")  # a writer that died here
    reader = _cache(url, tmp_path, "r")
    assert reader.get_or_build(KEY, _artifact(b"built")).content == b"built"
    assert (reader.stats.built, reader.fetched) == (1, 0)


def test_a_json_naming_a_missing_payload_is_rebuilt(url, tmp_path):
    _cache(url, tmp_path, "w").get_or_build(KEY, _artifact(b"bytes"))
    store = RemoteStore(url)
    for obj in store.listing():
        if obj["name"].endswith(".tflite"):
            store.remove(obj["name"])
    with pytest.warns(UserWarning, match="is incomplete or damaged"):
        assert _cache(url, tmp_path, "r").get_or_build(KEY, _artifact(b"new")).content == b"new"


WRITER = """
import os, signal, sys
from pytest_tfopt.remote_cache import RemoteArtifactCache, RemoteStore, payload_name
from pytest_tfopt.artifact import Artifact
url, key, mode, local = sys.argv[1:5]
if mode == "race":  # many fresh writers of one key, each with different bytes (a non-deterministic build)
    for i in range(int(sys.argv[5])):
        cache = RemoteArtifactCache(url, rebuild=True, local_dir=f"{local}/{i}")
        cache.get_or_build(key, lambda: Artifact(f"{os.getpid()}-{i}".encode() * 500, {"variant": "int8"}))
        assert cache.uploaded == 1, "upload failed"
elif mode == "kill-before-json":  # the payload is uploaded, the process dies before publishing the key
    content = b"half-published" * 100
    import hashlib
    RemoteStore(url).put(payload_name(key, {"sha256": hashlib.sha256(content).hexdigest(), "suffix": ".tflite"}),
                         content)
    os.kill(os.getpid(), signal.SIGKILL)
else:  # "slow": a large upload the test kills midway
    print("uploading", flush=True)
    RemoteArtifactCache(url, local_dir=local).get_or_build(key, lambda: Artifact(os.urandom(40 << 20), {}))
    print("done", flush=True)
"""


def _writer(tmp_path: Path, *args: str, **kw) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen([sys.executable, str(script), *args], **kw)


def test_two_processes_racing_on_one_key_publish_an_entry_that_verifies(url, tmp_path):
    writers = [_writer(tmp_path, url, KEY, "race", str(tmp_path / f"w{n}"), "6") for n in range(2)]
    seen: set[bytes] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reader meeting a mismatched pair would warn: that is the failure
        while any(w.poll() is None for w in writers):
            reader = _cache(url, tmp_path, f"r{len(seen)}-{time.monotonic_ns()}")
            art = reader.get_or_build(KEY, _artifact(b"reader-built"))
            seen.add(art.content[:20])
    assert [w.wait(120) for w in writers] == [0, 0]
    final = _cache(url, tmp_path, "final")
    art = final.get_or_build(KEY, _artifact(b"must not build"))
    assert (final.stats.built, final.fetched) == (0, 1)
    unit = art.content[:len(art.content) // 500]
    assert unit * 500 == art.content and int(unit.split(b"-")[0]) in {w.pid for w in writers}
    assert RemoteStore(url).get(f"{KEY}.json") is not None


def test_a_writer_killed_before_publishing_leaves_no_key(url, tmp_path):
    proc = _writer(tmp_path, url, KEY, "kill-before-json", str(tmp_path / "w"))
    assert proc.wait(60) == -signal.SIGKILL
    assert any(o["name"].endswith(".tflite") for o in RemoteStore(url).listing())  # its payload did arrive
    reader = _cache(url, tmp_path, "r")
    assert reader.get_or_build(KEY, _artifact(b"built")).content == b"built"
    assert (reader.stats.built, reader.fetched) == (1, 0)


def test_a_writer_killed_mid_upload_leaves_no_key_a_reader_accepts(url, tmp_path):
    proc = _writer(tmp_path, url, KEY, "slow", str(tmp_path / "w"), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "uploading"
    time.sleep(1.5)  # the 40 MB build and upload take longer than this; where exactly it dies does not matter
    proc.kill()
    proc.wait(30)
    reader = _cache(url, tmp_path, "r")
    art = reader.get_or_build(KEY, _artifact(b"built"))
    if reader.fetched:  # it finished before the kill after all: then what was published verifies
        assert len(art.content) == 40 << 20
    else:
        assert art.content == b"built" and reader.stats.built == 1


# ---- an unreachable remote ------------------------------------------------------------------------------------------
def test_a_server_that_dies_costs_one_warning_and_builds_locally(tmp_path, monkeypatch, s3_endpoint):
    port = _free_port()
    proc = _start_moto(port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("doomed")
    cache = _cache("s3://doomed/c", tmp_path, "l")
    cache.check()  # reachable now

    def build_then_the_server_dies() -> Artifact:
        _stop(proc)
        return Artifact(b"built while the server died", {})

    art = cache.get_or_build(KEY, build_then_the_server_dies)
    assert art.content == b"built while the server died" and cache.stats.built == 1
    assert len(cache.notes) == 1 and cache.notes[0].startswith("WARNING remote cache s3://doomed/c refused an upload")
    assert cache.get_or_build(KEY, _artifact(b"no")).content == art.content  # the local copy still serves
    cache.get_or_build("f" * 32, _artifact(b"more"))
    assert len(cache.notes) == 1  # one line for the whole session


@pytest.mark.parametrize("where", ["dead endpoint", "missing bucket"])
def test_an_unreachable_remote_is_one_warning_and_a_local_build(where, tmp_path, monkeypatch, s3_endpoint):
    target = "s3://no-such-bucket/c" if where == "missing bucket" else f"s3://{BUCKET}/c"
    if where == "dead endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    cache = _cache(target, tmp_path, "l")
    assert cache.get_or_build(KEY, _artifact(b"local")).content == b"local"
    assert cache.stats.built == 1 and not cache.online
    assert len(cache.notes) == 1
    assert cache.notes[0].startswith(f"WARNING remote cache {target} unreachable (")
    assert cache.notes[0].endswith("): using the local cache only")
    with pytest.raises(CacheError, match=r"unreachable .*run without --tfopt-strict"):
        _cache(target, tmp_path, "strict", strict=True).check()


def test_credentials_in_a_url_are_refused_and_never_shown(s3_endpoint, tmp_path):
    url = f"s3://AKIAEXAMPLE:{FAKE_ENV['AWS_SECRET_ACCESS_KEY']}@{BUCKET}/c"
    with pytest.raises(UsageError) as info:
        RemoteArtifactCache(url, local_dir=str(tmp_path)).check()
    assert "AKIAEXAMPLE" not in str(info.value) and "testing-secret-value" not in str(info.value)
    assert f"s3://{BUCKET}/c carries credentials" in str(info.value)
    assert redact(f"see {url} and gs://u@b/x") == f"see s3://{BUCKET}/c and gs://b/x"


# ---- shared-cache trust ---------------------------------------------------------------------------------------------
def test_code_running_artifacts_need_a_valid_signature(url, tmp_path, monkeypatch):
    _cache(url, tmp_path, "unsigned").get_or_build(KEY, _artifact(b"savedmodel", ".savedmodel.zip"))
    reader = _cache(url, tmp_path, "r1")
    with pytest.warns(UserWarning, match="runs code on load"):
        assert reader.get_or_build(KEY, _artifact(b"own", ".savedmodel.zip")).content == b"own"
    monkeypatch.setenv("TFOPT_CACHE_SECRET", "team-secret")
    signed_key = "1" * 32
    _cache(url, tmp_path, "signed").get_or_build(signed_key, _artifact(b"signed sm", ".savedmodel.zip"))
    ok = _cache(url, tmp_path, "r2")
    assert ok.get_or_build(signed_key, _artifact(b"no", ".savedmodel.zip")).content == b"signed sm"
    monkeypatch.setenv("TFOPT_CACHE_SECRET", "another-secret")
    bad = _cache(url, tmp_path, "r3")
    with pytest.warns(UserWarning, match="signature does not match"):
        assert bad.get_or_build(signed_key, _artifact(b"rebuilt", ".savedmodel.zip")).content == b"rebuilt"


def test_records_are_shared_only_when_signed(url, tmp_path, monkeypatch):
    name = "source-" + "a" * 32
    _cache(url, tmp_path, "w1").write_record(name, {"hash": "unsigned"})
    assert _cache(url, tmp_path, "r1").read_record(name) is None  # nothing uploaded, nothing trusted
    monkeypatch.setenv("TFOPT_CACHE_SECRET", "team-secret")
    _cache(url, tmp_path, "w2").write_record(name, {"hash": "signed"})
    assert _cache(url, tmp_path, "r2").read_record(name) == {"hash": "signed"}
    monkeypatch.setenv("TFOPT_CACHE_SECRET", "another-secret")
    assert _cache(url, tmp_path, "r3").read_record(name) is None


# ---- tfopt cache ls / prune / verify --------------------------------------------------------------------------------
@pytest.mark.parametrize("remote", [True, False], ids=["s3", "local"])
def test_cache_ls_verify_prune(remote, url, tmp_path, capsys):
    writer = _cache(url, tmp_path, "w")
    for i in range(3):
        writer.get_or_build(f"{i:032x}", _artifact(b"bytes %d" % i))
    target = url if remote else str(tmp_path / "w")
    assert tfopt_main(["cache", "ls", "--cache-dir", target]) == 0
    out = capsys.readouterr().out
    assert "3 entries" in out and f"{1:032x}" in out and "int8" in out
    assert tfopt_main(["cache", "verify", "--cache-dir", target]) == 0
    assert "verified 3 entries, 0 damaged" in capsys.readouterr().out
    damaged = f"{2:032x}"  # break one: verify must fail and remove it
    if remote:
        store = RemoteStore(url)
        store.fs.pipe_file(store.path(next(o["name"] for o in store.listing() if o["name"].startswith(damaged + "-"))),
                           b"rot")
    else:
        (tmp_path / "w" / f"{damaged}.tflite").write_bytes(b"rot")
    assert tfopt_main(["cache", "verify", "--cache-dir", target]) == 1
    out = capsys.readouterr().out
    assert f"damaged {damaged}: its artifact does not match the recorded sha256" in out and "1 damaged" in out
    assert tfopt_main(["cache", "prune", "--older-than", "30d", "--cache-dir", target]) == 0
    assert "pruned 0 entries" in capsys.readouterr().out
    assert tfopt_main(["cache", "prune", "--older-than", "0s", "--cache-dir", target]) == 0
    assert "pruned 2 entries" in capsys.readouterr().out
    assert tfopt_main(["cache", "ls", "--cache-dir", target]) == 0
    assert "0 entries" in capsys.readouterr().out


def test_cache_cli_errors_are_one_line(s3_endpoint, tmp_path, capsys):
    assert tfopt_main(["cache", "prune", "--older-than", "3x", "--cache-dir", str(tmp_path)]) == 2
    assert tfopt_main(["cache", "ls", "--cache-dir", "s3://no-such-bucket/x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("tfopt: error: --older-than='3x'")
    assert err[1].startswith("tfopt: error: remote cache s3://no-such-bucket/x unreachable (")


def test_prune_selects_by_age_on_a_fixed_clock():
    now = 1_000_000.0
    objects = [{"name": "a", "mtime": now - 31 * 86400}, {"name": "b", "mtime": now - 29 * 86400},
               {"name": "c", "mtime": None}]
    assert [o["name"] for o in old(objects, parse_age("30d"), now)] == ["a", "c"]
    assert [parse_age(t) for t in ("45s", "90m", "12h", "2w", "1.5d")] == [45, 5400, 43200, 1209600, 129600]


# ---- through the plugin ---------------------------------------------------------------------------------------------
SUITE = """
import pytest

@pytest.mark.tfopt_variants("int8", "float16")
@pytest.mark.max_accuracy_drop(0.02)
def test_variants(optimized_model):
    pass
"""


def test_two_fresh_checkouts_on_one_bucket_the_second_builds_nothing(pytester, model_path, data_path, url,
                                                                    tmp_path, monkeypatch):
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n"
                     f"tfopt_cache_dir = {url}\n")
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("TFOPT_CACHE_SECRET", "team-secret")  # signed records: the second run never loads TF
    runs = []
    for checkout in ("one", "two"):  # each its own private local copy, as on two CI runners
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / checkout))
        runs.append(pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tfopt-threads=1"))
        runs[-1].assert_outcomes(passed=2)
    runs[0].stdout.fnmatch_lines([f"artifacts: 3 built*, 0 reused (0 fetched from the remote, 3 uploaded); cache: {url}"])
    runs[1].stdout.fnmatch_lines([f"artifacts: 0 built*, 3 reused (3 fetched from the remote, 0 uploaded); cache: {url}"])
    verdicts = [[ln for ln in r.stdout.lines if "PASS" in ln or "FAIL" in ln] for r in runs]
    assert verdicts[0] == verdicts[1] and verdicts[0]


def test_the_plugin_warns_once_and_fails_under_strict(pytester, s3_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    target = f"--tfopt-cache-dir=s3://{BUCKET}/down"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", target)
    result.assert_outcomes(passed=1)
    lines = [ln for ln in result.outlines if "remote cache" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"WARNING remote cache s3://{BUCKET}/down unreachable (")
    strict = pytester.runpytest_subprocess("-p", "no:cacheprovider", target, "--tfopt-strict")
    assert strict.ret == pytest.ExitCode.USAGE_ERROR
    strict.stderr.fnmatch_lines([f"ERROR: remote cache s3://{BUCKET}/down unreachable (*--tfopt-strict*"])
    secret = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--tfopt-cache-dir=s3://id:pw-123@{BUCKET}/x")
    assert secret.ret == pytest.ExitCode.USAGE_ERROR
    assert "pw-123" not in "\n".join(secret.outlines + secret.errlines)
