"""The artifact cache trusts only what this user wrote: private directories, no links, signed shared entries."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import warnings

import pytest

from pytest_tfopt import security
from pytest_tfopt.artifact import Artifact
from pytest_tfopt.cache import ArtifactCache
from pytest_tfopt.errors import CacheError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX owners and modes")


def _artifact(content: bytes = b"GOOD", suffix: str = ".tflite") -> Artifact:
    return Artifact(content, {"variant": "int8"}, suffix)


def _plant(cache: ArtifactCache, key: str, content: bytes) -> None:
    """What an attacker who can write the directory does: new bytes, and the digest fixed up to match."""
    meta_path = os.path.join(cache.root, key + ".json")
    entry = json.loads(open(meta_path).read())
    with open(os.path.join(cache.root, key + entry["suffix"]), "wb") as fh:
        fh.write(content)
    entry["sha256"] = hashlib.sha256(content).hexdigest()
    with open(meta_path, "w") as fh:
        json.dump(entry, fh)


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_directory_others_can_write_is_refused(tmp_path, mode):
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(mode)
    with pytest.raises(CacheError) as excinfo:
        ArtifactCache(root).check()
    text = str(excinfo.value)
    assert "\n" not in text and f"refusing the artifact cache {str(root)!r}" in text
    assert f"mode {mode:04o}" in text and f"chmod 700 {root}" in text and "--tfopt-cache-trust-shared" in text
    ArtifactCache(root, trust_shared=True).check()  # a deliberately shared team directory is accepted


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_directory_owned_by_someone_else_is_refused(tmp_path):
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    os.chown(root, 12345, 12345)
    with pytest.raises(CacheError) as excinfo:
        ArtifactCache(root).check()
    assert "owned by uid 12345, not by you (uid 0)" in str(excinfo.value)


def test_a_link_as_the_cache_directory_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(CacheError) as excinfo:
        ArtifactCache(link).check()
    assert "is a symbolic link" in str(excinfo.value)


def test_a_planted_entry_is_not_served_from_a_refused_directory(tmp_path):
    root = tmp_path / "cache"
    cache = ArtifactCache(root)
    cache.get_or_build("k1", _artifact)
    root.chmod(0o777)  # someone opened it up, and planted
    _plant(cache, "k1", b"PLANTED")
    with pytest.raises(CacheError):
        ArtifactCache(root).get_or_build("k1", _artifact)


def test_an_entry_file_of_another_user_is_rebuilt(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    cache.get_or_build("k1", _artifact)
    _plant(cache, "k1", b"PLANTED")
    data = tmp_path / "cache" / "k1.tflite"
    data.chmod(0o666)  # writable by others: not trusted
    with pytest.warns(UserWarning, match="not trusted"):
        again = ArtifactCache(tmp_path / "cache").get_or_build("k1", _artifact)
    assert again.content == b"GOOD"


def test_a_planted_link_is_not_followed(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "cache").mkdir(mode=0o700)
    for name in ("k2.lock", "builds.log"):
        os.symlink(victim, tmp_path / "cache" / name)
    os.symlink(victim, tmp_path / "cache" / "k2.json")  # an entry that is a link: never read
    with pytest.warns(UserWarning, match="symbolic link"):
        built = cache.get_or_build("k2", _artifact)
    assert built.content == b"GOOD" and victim.read_bytes() == b"precious"
    assert not os.path.islink(tmp_path / "cache" / "k2.json")


def test_shared_cache_entries_are_signed_and_tampering_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(security.SECRET_ENV, "s3cret")
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    cache = ArtifactCache(root, trust_shared=True)
    cache.get_or_build("k3", _artifact)
    entry = json.loads((root / "k3.json").read_text())
    assert len(entry["hmac"]) == 64 and "s3cret" not in (root / "k3.json").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ArtifactCache(root, trust_shared=True).get_or_build("k3", _artifact).content == b"GOOD"
    _plant(cache, "k3", b"PLANTED")  # the digest is fixed up, the signature cannot be
    with pytest.warns(UserWarning, match="unsigned or its signature does not match"):
        assert ArtifactCache(root, trust_shared=True).get_or_build("k3", _artifact).content == b"GOOD"
    monkeypatch.setenv(security.SECRET_ENV, "another")
    with pytest.warns(UserWarning, match="signature does not match"):
        ArtifactCache(root, trust_shared=True).get_or_build("k3", _artifact)


def test_code_running_artifacts_need_a_secret_in_a_shared_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(security.SECRET_ENV, raising=False)
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    cache = ArtifactCache(root, trust_shared=True)
    cache.get_or_build("k4", lambda: _artifact(b"SM", ".savedmodel.zip"))
    cache.get_or_build("k5", _artifact)
    _plant(cache, "k4", b"PLANTED SAVEDMODEL")
    again = ArtifactCache(root, trust_shared=True)
    with pytest.warns(UserWarning, match="runs code on load"):
        rebuilt = again.get_or_build("k4", lambda: _artifact(b"SM", ".savedmodel.zip"))
    assert rebuilt.content == b"SM" and again.stats.built == 1  # never the planted bytes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a .tflite from a trusted shared cache is served
        served = ArtifactCache(root, trust_shared=True)
        assert served.get_or_build("k5", _artifact).content == b"GOOD" and served.stats.reused == 1


def test_the_private_default_is_created_0700(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = security.private_dir(security.user_cache_dir("trt-engines"))
    assert path == str(tmp_path / "xdg" / "pytest-tfopt" / "trt-engines")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    cache = ArtifactCache(security.user_cache_dir("artifacts"))
    cache.check()
    assert stat.S_IMODE(os.stat(cache.root).st_mode) == 0o700
    from pytest_tfopt import Workbench

    assert Workbench(None).cache.root == str(tmp_path / "xdg" / "pytest-tfopt" / "artifacts")
    from pytest_tfopt.cli.parser import build_parser

    assert "pytest-tfopt" in build_parser().parse_args(["bench", "m.h5"]).cache_dir


def test_the_plugin_refuses_a_shared_cache_directory_in_one_line(suite, tmp_path):
    shared = tmp_path / "opened"
    shared.mkdir()
    shared.chmod(0o777)
    result = suite("def test_x():\n    pass\n", f"--tfopt-cache-dir={shared}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*refusing the artifact cache '{shared}': it is writable by group and others "
                                 "(mode 0777)*--tfopt-cache-trust-shared*"])
    ok = suite("def test_x():\n    pass\n", f"--tfopt-cache-dir={shared}", "--tfopt-cache-trust-shared")
    ok.assert_outcomes(passed=1)
