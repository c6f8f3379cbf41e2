"""Reliability, measured: faults, unusable cache directories, concurrency and untrusted models.

Everything here is real: TensorFlow conversions, LiteRT, child processes killed with SIGKILL,
file-size limits enforced by the kernel, read-only mounts, pytest-xdist workers. Nothing under
test is mocked; the only injected thing is a *pause* (a sleep at a chosen point) so a kill lands
deterministically. docs/reliability.md lists every case with what the user sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock, Timeout

from pytest_tfopt import CacheError, Workbench
from pytest_tfopt.artifact import Artifact
from pytest_tfopt.cache import BUILD_LOG, RECORDS, ArtifactCache

ALLOWED_SUFFIXES = (".tflite", ".json", ".lock")
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals and resource limits")
CLI = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--tfopt-threads=1")  # hypothesis costs ~2 s a process
KEY = "0123456789abcdef" * 2
REPO = Path(__file__).resolve().parent.parent
DATA_NPZ = REPO / "fixtures" / "digits.npz"
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
       "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "300"}


# ---- helpers ----------------------------------------------------------------------------------------------------
def assert_clean(cache: Path) -> list[str]:
    """The cache holds only complete entries: no temp files, every JSON beside bytes of its hash, no pickles;
    its records (a model file's identity) are complete JSON records."""
    names = sorted(n for n in os.listdir(cache) if n != RECORDS)
    for name in os.listdir(cache / RECORDS) if (cache / RECORDS).is_dir() else []:
        assert name.endswith(".json") and "record" in json.loads((cache / RECORDS / name).read_text()), name
    for name in names:
        assert name == BUILD_LOG or name.endswith(ALLOWED_SUFFIXES), f"unexpected file in the cache: {name}"
        content = (cache / name).read_bytes()
        assert not content.startswith(b"\x80"), f"{name} looks like a pickle"
    for name in names:
        if name.endswith(".json"):
            entry = json.loads((cache / name).read_text())
            data = (cache / (entry["key"] + entry["suffix"])).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
    stems = {n.rsplit(".", 1)[0] for n in names if n.endswith(".json")}
    orphans = [n for n in names if n.endswith(".tflite") and n.rsplit(".", 1)[0] not in stems]
    assert not orphans, f"artifacts without their JSON: {orphans}"
    return names


def entries(cache: Path) -> list[str]:
    """The artifact entries and temp files (locks and the model identity records aside)."""
    return sorted(n for n in os.listdir(cache) if not n.endswith(".lock") and n != RECORDS)


def one_line(text: str) -> None:
    assert "Traceback" not in text and "OSError" not in text and 'File "' not in text, text


def spawn(code: str, *args: object, log: Path) -> subprocess.Popen:
    """``python -c code args...`` with its output in ``log`` (a pipe nobody reads could block it)."""
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=fh, stderr=subprocess.STDOUT,
                                env=ENV)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"child exited with {proc.returncode} before it was ready:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("child never got ready")
        time.sleep(0.05)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def lock_is_free(path: Path) -> bool:
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    lock.release()
    return True


def artifact(content: bytes, variant: str) -> Artifact:
    return Artifact(content, {"variant": variant})


# ---- 1. SIGKILL in the middle of a conversion and in the middle of a write ---------------------------------------
KILLED_CONVERSION = textwrap.dedent(
    """
    import dataclasses, sys, time
    from pytest_tfopt import Workbench
    from pytest_tfopt.variants import default_registry

    model, data, cache, ready = sys.argv[1:5]

    class PausedCalibration:
        # The real calibration set; its 10th sample pauses the converter's calibration loop.
        def __init__(self, data):
            self._data = data
        def __getattr__(self, name):
            return getattr(self._data, name)
        def __len__(self):
            return len(self._data)
        def representative_dataset(self, *args, **kwargs):
            samples = self._data.representative_dataset(*args, **kwargs)
            def generate():
                for i, sample in enumerate(samples()):
                    if i == 10:  # inside TFLiteConverter.convert(), holding the cache lock
                        open(ready, "w").close()
                        time.sleep(600)
                    yield sample
            return generate

    registry = default_registry()
    _, real = registry.stage("int8")
    def build(source, calibration, params):
        return real.build(source, PausedCalibration(calibration), params)
    registry.register(dataclasses.replace(real, build=build))
    Workbench(model, data, cache_dir=cache, threads=1, variants=registry).build("int8")
    """
)


@posix_only
def test_sigkill_mid_conversion_leaves_no_entry_and_no_stale_lock(bench, tmp_path, model_path, data_path):
    cache, ready = tmp_path / "cache", tmp_path / "ready"
    log = tmp_path / "child.log"
    proc = spawn(KILLED_CONVERSION, model_path, data_path, cache, ready, log=log)
    try:
        assert bench.source.kind == "tf_keras" and len(bench.dataset) > 0  # load ours while the child starts
        wait_for(ready, proc, log)
        (lock_path,) = cache.glob("*.lock")
        assert not lock_is_free(lock_path)  # the child is mid-conversion and holds the key's lock
    finally:
        kill9(proc)
    assert entries(cache) == []  # nothing stored, nothing half-written
    assert lock_is_free(lock_path)  # the kernel dropped the flock with the process; the file is harmless

    wb = Workbench(bench.source, bench.dataset, cache_dir=cache, threads=1)  # same model file, same data
    wb.cache = ArtifactCache(cache, lock_timeout_s=1.0)  # a stale lock would make this a CacheError after 1 s
    rebuilt = wb.build("int8")
    assert wb.cache.stats.built == 1 and wb.cache.stats.reused == 0
    key = rebuilt.metadata["cache_key"]
    assert lock_path.name == f"{key}.lock"  # the very key the killed process held
    assert assert_clean(cache) == sorted([BUILD_LOG, f"{key}.lock", f"{key}.json", f"{key}.tflite"])
    again = Workbench(bench.source, bench.dataset, cache_dir=cache, threads=1)
    model = again.runnable("int8")
    assert again.cache.stats.reused == 1 and model.artifact.content == rebuilt.content
    assert model.evaluate() >= 0.95  # a whole, working int8 model


KILLED_WRITE = textwrap.dedent(
    """
    import os, sys, time
    import pytest_tfopt.cache as cache_mod
    from pytest_tfopt.artifact import Artifact

    root, ready, point, key = sys.argv[1:5]

    def pause():
        open(ready, "w").close()
        time.sleep(600)

    if point == "temp-file-written":  # the new bytes are in .tmp-*, not yet renamed over KEY.tflite
        os.fsync = lambda fd: pause()
    else:  # "artifact-renamed": the new KEY.tflite is in place, its KEY.json not yet written
        real = cache_mod._atomic_write
        def atomic(path, data):
            real(path, data)
            if path.endswith(".tflite"):
                pause()
        cache_mod._atomic_write = atomic
    content = bytes(range(256)) * 4096  # 1 MiB, unlike the 'v1' entry already cached
    cache_mod.ArtifactCache(root, rebuild=True).get_or_build(key, lambda: Artifact(content, {"variant": "v2"}))
    """
)


@posix_only
@pytest.mark.parametrize("point", ["temp-file-written", "artifact-renamed"])
def test_sigkill_mid_write_never_serves_a_mixed_entry(tmp_path, point):
    cache, ready = tmp_path / "cache", tmp_path / "ready"
    ArtifactCache(cache).get_or_build(KEY, lambda: artifact(b"v1" * 1000, "v1"))
    log = tmp_path / "child.log"
    proc = spawn(KILLED_WRITE, cache, ready, point, KEY, log=log)
    try:
        wait_for(ready, proc, log, timeout=60)
    finally:
        kill9(proc)
    left = entries(cache)
    fresh = ArtifactCache(cache, lock_timeout_s=1.0)
    if point == "temp-file-written":
        assert [n for n in left if n.startswith(".tmp-")], left  # what a killed writer leaves behind
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            served = fresh.get_or_build(KEY, lambda: pytest.fail("the intact v1 entry must be reused"))
        assert served.content == b"v1" * 1000  # the earlier entry survived the killed rebuild
    else:
        assert (cache / f"{KEY}.tflite").read_bytes() == bytes(range(256)) * 4096  # new bytes, old JSON
        with pytest.warns(UserWarning, match="does not match its recorded hash; rebuilding it"):
            served = fresh.get_or_build(KEY, lambda: artifact(b"v3", "v3"))
        assert served.content == b"v3" and fresh.stats.built == 1
    assert assert_clean(cache) == [f"{KEY}.json", f"{KEY}.lock", f"{KEY}.tflite", BUILD_LOG]  # temp file swept


# ---- 2. a cached entry damaged on disk ---------------------------------------------------------------------------
def _truncate_half(data: Path, meta: Path, other: tuple[Path, Path]) -> None:
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _truncate_empty(data, meta, other):
    data.write_bytes(b"")


def _delete_artifact(data, meta, other):
    data.unlink()


def _json_garbage(data, meta, other):
    meta.write_bytes(b"\x00\xff garbage \x89PNG")


def _json_truncated(data, meta, other):
    meta.write_text(meta.read_text()[:40])


def _json_not_an_object(data, meta, other):
    meta.write_text("[1, 2, 3]")


def _json_wrong_fields(data, meta, other):
    entry = json.loads(meta.read_text())
    del entry["metadata"]
    entry["sha256"] = 42
    meta.write_text(json.dumps(entry))


def _json_suffix_escapes(data, meta, other):
    entry = json.loads(meta.read_text())
    entry["suffix"] = "/../../../../etc/hostname"
    meta.write_text(json.dumps(entry))


def _entry_of_another_key(data, meta, other):
    shutil.copyfile(other[0], data)  # a consistent pair (bytes + their hash) of a different variant
    shutil.copyfile(other[1], meta)


# Through a Workbench (real conversions rebuild the entry): the cases the issue names, and a swapped entry.
DAMAGE = [
    ("artifact-truncated-half", _truncate_half, "does not match its recorded hash"),
    ("artifact-deleted-json-kept", _delete_artifact, "is incomplete or damaged"),
    ("json-garbage-bytes", _json_garbage, "is incomplete or damaged"),
    ("entry-of-another-key", _entry_of_another_key, "is incomplete or damaged"),
]
# The same detection, on the cache alone (no conversion, so these cost nothing).
DAMAGE_CACHE_ONLY = [
    ("artifact-truncated-empty", _truncate_empty, "does not match its recorded hash"),
    ("json-truncated", _json_truncated, "is incomplete or damaged"),
    ("json-not-an-object", _json_not_an_object, "is incomplete or damaged"),
    ("json-wrong-fields", _json_wrong_fields, "is incomplete or damaged"),
    ("json-suffix-escapes-cache", _json_suffix_escapes, "is incomplete or damaged"),
    ("entry-of-another-key", _entry_of_another_key, "is incomplete or damaged"),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, model_path, data_path):
    """A cache with fp32 and float16 entries, built once; each damage case damages a copy."""
    root = tmp_path_factory.mktemp("pristine")
    wb = Workbench(model_path, data_path, cache_dir=root, threads=1)
    return root, wb.build("fp32"), wb.build("float16")


@pytest.mark.parametrize(("damage", "message"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_entry_is_rebuilt_with_a_warning_never_served(pristine, tmp_path, model_path, data_path, damage, message):
    root, fp32, float16 = pristine
    cache = tmp_path / "cache"
    shutil.copytree(root, cache)
    key, other = fp32.metadata["cache_key"], float16.metadata["cache_key"]
    damage(cache / f"{key}.tflite", cache / f"{key}.json", (cache / f"{other}.tflite", cache / f"{other}.json"))
    wb = Workbench(model_path, data_path, cache_dir=cache, threads=1)
    with pytest.warns(UserWarning, match=message) as record:
        served = wb.build("fp32")
    assert any(key in str(w.message) for w in record)
    assert wb.cache.stats.built == 1 and wb.cache.stats.reused == 0
    assert served.content == fp32.content and served.metadata["variant"] == "fp32"
    assert (cache / f"{key}.tflite").read_bytes() == fp32.content
    assert_clean(cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Workbench(model_path, data_path, cache_dir=cache, threads=1).build("float16").content == float16.content


@pytest.mark.parametrize(("damage", "message"), [d[1:] for d in DAMAGE_CACHE_ONLY], ids=[d[0] for d in DAMAGE_CACHE_ONLY])
def test_damaged_entry_is_detected_by_the_cache(tmp_path, damage, message):
    cache, other = tmp_path / "cache", "f" * 32
    good, theirs = bytes(range(256)) * 64, b"another variant"
    ArtifactCache(cache).get_or_build(KEY, lambda: artifact(good, "mine"))
    ArtifactCache(cache).get_or_build(other, lambda: artifact(theirs, "theirs"))
    damage(cache / f"{KEY}.tflite", cache / f"{KEY}.json", (cache / f"{other}.tflite", cache / f"{other}.json"))
    fresh = ArtifactCache(cache, lock_timeout_s=1.0)
    with pytest.warns(UserWarning, match=message):
        served = fresh.get_or_build(KEY, lambda: artifact(good, "mine"))
    assert served.content == good and served.metadata == {"variant": "mine"} and fresh.stats.built == 1
    assert fresh.get_or_build(other, lambda: pytest.fail("must be reused")).content == theirs
    assert_clean(cache)


# ---- 3. a conversion that raises ---------------------------------------------------------------------------------
FAILING_RECIPES = """
from pytest_tfopt.artifact import Artifact
from pytest_tfopt.errors import ConversionError
from pytest_tfopt.variants import Recipe


def _refuses(source, calibration, params):
    raise ConversionError(f"TFLiteConverter could not build refuses for {source.name}: op FANCY is not a builtin "
                          "(try another variant, or check the model's ops are TFLite builtins)")


def _tf_refuses(source, calibration, params):
    import tensorflow as tf

    converter = source.converter()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # and no representative data
    return Artifact(converter.convert(), {"variant": "tf_refuses"})


def tfopt_register_variants(registry):
    registry.register(Recipe("refuses", _refuses, "a recipe whose converter refuses"))
    registry.register(Recipe("tf_refuses", _tf_refuses, "TFLiteConverter raising from a third-party recipe"))
"""

FAILING_SUITE = """
import pytest

@pytest.mark.tfopt_variants("int8", "refuses", "tf_refuses")
@pytest.mark.max_accuracy_drop(0.02)
def test_variants(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_size_kb(40)
def test_int8_only(optimized_model):
    pass

def test_unrelated():
    pass
"""


def test_failing_conversion_fails_only_the_tests_that_need_it(suite, pytester, shared_cache):
    pytester.makeconftest(FAILING_RECIPES)
    result = suite(FAILING_SUITE, "-v")
    result.assert_outcomes(passed=3, errors=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*test_variants[[]int8-tflite[]] PASSED*",
        "*test_variants[[]refuses-tflite[]] ERROR*",
        "*test_variants[[]tf_refuses-tflite[]] ERROR*",
        "*test_int8_only[[]int8-tflite[]] PASSED*",
        "*test_unrelated PASSED*",
        "*ERROR at setup of test_variants[[]refuses-tflite[]]*",
        "TFLiteConverter could not build refuses for digits_cnn.h5: op FANCY is not a builtin (try another variant*",
        "*ERROR at setup of test_variants[[]tf_refuses-tflite[]]*",
        "E*ValueError: For full integer quantization, a `representative_dataset` must be specified.",
    ])
    refused = out.split("ERROR at setup of test_variants[refuses-tflite]")[1].split("ERROR at setup")[0]
    assert "Traceback" not in refused and "pytest_tfopt/" not in refused  # a TfoptError is one line
    variants = {json.loads(p.read_text())["metadata"]["variant"] for p in shared_cache.glob("*.json")}
    assert {"int8", "fp32"} <= variants and not variants & {"refuses", "tf_refuses"}


# ---- 4. disk full ------------------------------------------------------------------------------------------------
def _file_size_limit(limit: int):
    def preexec() -> None:  # runs in the child before exec: a write past `limit` bytes fails with EFBIG
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return preexec


@pytest.fixture(scope="module")
def digits_tflite(bench, tmp_path_factory) -> Path:
    """The digits model converted to .tflite: a source a pytest process can use without importing TensorFlow."""
    path = tmp_path_factory.mktemp("tflite") / "digits_fp32.tflite"
    path.write_bytes(bench.build("fp32").content)
    return path


@posix_only
def test_disk_full_through_the_plugin_is_one_line_and_leaves_nothing(pytester, tmp_path, digits_tflite, data_path):
    pytester.makeini(f"[pytest]\ntfopt_model = {digits_tflite}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(test_full="""
import pytest

@pytest.mark.tfopt_variants("fp32")
def test_fp32(optimized_model):
    pass

def test_unrelated():
    pass
""")
    cache = tmp_path / "cache"
    run = subprocess.run([sys.executable, "-m", "pytest", *CLI, f"--tfopt-cache-dir={cache}", "-q", "-rA"],
                         cwd=pytester.path, env=ENV, capture_output=True, text=True, timeout=300,
                         preexec_fn=_file_size_limit(8192))  # the fp32 artifact is ~32 KB
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    message = (f"cannot write the artifact cache '{cache}' (File too large): free disk space or choose another "
               "--tfopt-cache-dir")
    assert message in out.splitlines(), out  # the whole report of the error, on one line
    assert f"ERROR test_full.py::test_fp32[fp32-tflite] - Failed: {message}" in out, out
    assert "PASSED test_full.py::test_unrelated" in out and re.search(r"1 passed.* 1 error", out), out
    one_line(out)
    assert entries(cache) == []  # no temp file, no artifact, no JSON: only the lock file


FULL_WRITE = textwrap.dedent(
    """
    import resource, signal, sys
    from pytest_tfopt.artifact import Artifact
    from pytest_tfopt.cache import ArtifactCache
    from pytest_tfopt.errors import CacheError

    root, key, size, meta_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        ArtifactCache(root).get_or_build(key, lambda: Artifact(b"x" * size, {"variant": "big", "note": "n" * meta_size}))
    except CacheError as exc:
        print(f"CacheError: {exc}")
    """
)


@posix_only
@pytest.mark.parametrize(("size", "meta_size"), [(65536, 0), (100, 65536)], ids=["artifact-too-big", "json-too-big"])
def test_file_size_limit_is_a_cache_error_and_keeps_other_entries(tmp_path, size, meta_size):
    cache = tmp_path / "cache"
    ArtifactCache(cache).get_or_build("a" * 32, lambda: artifact(b"small", "a"))
    run = subprocess.run([sys.executable, "-c", FULL_WRITE, str(cache), KEY, str(size), str(meta_size)],
                         env=ENV, capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == (f"CacheError: cannot write the artifact cache '{cache}' (File too large): "
                                  "free disk space or choose another cache_dir"), run.stdout + run.stderr  # no front end: the keyword
    assert assert_clean(cache) == sorted(["a" * 32 + ".json", "a" * 32 + ".lock", "a" * 32 + ".tflite",
                                          KEY + ".lock", BUILD_LOG])
    fresh = ArtifactCache(cache, lock_timeout_s=1.0)  # space is back: the same key builds, the other entry is intact
    assert fresh.get_or_build(KEY, lambda: artifact(b"x" * size, "big")).content == b"x" * size
    assert fresh.get_or_build("a" * 32, lambda: pytest.fail("must be reused")).content == b"small"
    assert_clean(cache)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 256 KiB file system (root with mount rights only; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_no_space_left_on_a_real_file_system(tiny_tmpfs):
    cache = tiny_tmpfs / "cache"
    ArtifactCache(cache).get_or_build("a" * 32, lambda: artifact(b"small", "a"))
    filler = tiny_tmpfs / "other-data"
    filler.write_bytes(b"\0" * (160 * 1024))
    big = bytes(range(256)) * 512  # 128 KiB: does not fit next to the filler
    with pytest.raises(CacheError) as excinfo:
        ArtifactCache(cache).get_or_build(KEY, lambda: artifact(big, "big"))
    assert str(excinfo.value) == (f"cannot write the artifact cache '{cache}' (No space left on device): "
                                  "free disk space or choose another --tfopt-cache-dir")
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    assert_clean(cache)
    assert not (cache / f"{KEY}.tflite").exists()
    filler.unlink()  # the user frees space
    assert ArtifactCache(cache).get_or_build(KEY, lambda: artifact(big, "big")).content == big
    assert ArtifactCache(cache).get_or_build("a" * 32, lambda: pytest.fail("must be reused")).content == b"small"
    assert_clean(cache)


# ---- 5. a cache directory that cannot be used --------------------------------------------------------------------
@pytest.fixture
def read_only_dir(tmp_path):
    """An existing directory nobody may create files in: a read-only bind mount as root, chmod 555 otherwise."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.name != "posix":
        pytest.skip("needs POSIX permissions")
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path, "Permission denied"
        path.chmod(0o755)
        return
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"root ignores permission bits and a read-only bind mount is not allowed here: {done.stderr!r}")
    try:
        yield path, "Read-only file system"
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _under_a_file(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    return tmp_path / "a-file" / "cache", "create", "Not a directory"


def _is_a_file(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    return tmp_path / "a-file", "create", "File exists"


def _under_proc(tmp_path):
    return Path("/proc/tfopt-cache"), "create", "No such file or directory"


def _proc_dir(tmp_path):  # exists, yet refuses new files: the lock used to wait its whole timeout here
    return Path("/proc/self"), "write", "No such file or directory"


UNUSABLE = [("under-a-file", _under_a_file), ("is-a-file", _is_a_file), ("under-proc", _under_proc),
            ("existing-dir-refusing-files", _proc_dir)]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
@pytest.mark.parametrize("make", [u[1] for u in UNUSABLE], ids=[u[0] for u in UNUSABLE])
def test_unusable_cache_dir_is_a_one_line_cache_error(tmp_path, make):
    root, verb, reason = make(tmp_path)
    cache = ArtifactCache(root, lock_timeout_s=30)
    start = time.perf_counter()
    with pytest.raises(CacheError) as excinfo:
        cache.get_or_build(KEY, lambda: pytest.fail("nothing may be built into an unusable cache"))
    assert time.perf_counter() - start < 5  # no waiting on a lock that can never be created
    assert str(excinfo.value) == f"cannot {verb} the artifact cache '{root}' ({reason}): choose a writable --tfopt-cache-dir"


def test_read_only_cache_dir_is_a_one_line_cache_error(read_only_dir):
    root, reason = read_only_dir
    with pytest.raises(CacheError) as excinfo:
        ArtifactCache(root, lock_timeout_s=30).get_or_build(KEY, lambda: pytest.fail("must not build"))
    assert str(excinfo.value) == f"cannot write the artifact cache '{root}' ({reason}): choose a writable --tfopt-cache-dir"
    assert os.listdir(root) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_unusable_cache_dir_through_the_plugin(pytester, tmp_path, preloaded_runtimes, model_path, data_path):
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile("""
import pytest

@pytest.mark.tfopt_variants("dynamic")
def test_it(optimized_model):
    pass

def test_unrelated():
    pass
""")
    (tmp_path / "a-file").write_text("x")
    for root, message in [
        (tmp_path / "a-file" / "cache", "cannot create the artifact cache '*a-file/cache' (Not a directory): "
                                        "choose a writable --tfopt-cache-dir"),
        ("/proc/self", "cannot write the artifact cache '/proc/self' (No such file or directory): "
                       "choose a writable --tfopt-cache-dir"),
    ]:
        result = pytester.runpytest(*CLI, f"--tfopt-cache-dir={root}", "-rA")
        assert result.ret == pytest.ExitCode.USAGE_ERROR  # an explicit cache dir is checked once, before collection
        result.stderr.fnmatch_lines([f"ERROR: {message}"])
        assert "Traceback" not in result.stdout.str() + result.stderr.str()


# ---- 6. concurrency: every xdist worker wants the same artifacts -------------------------------------------------
# The source is the digits model as a .tflite file and the variant a conftest recipe that takes 1.5 s to "build"
# (a copy after a sleep): workers need no TensorFlow import (fast), and all of them are still starting up or
# waiting on the lock while the first build runs. Real LiteRT measures accuracy. Real TFLiteConverter builds under
# -n 2 are covered by tests/test_xdist.py and tests/test_gating.py::test_xdist_reports_the_same_rows_as_one_process.
SLOW_RECIPE = """
import time
from pytest_tfopt.artifact import Artifact
from pytest_tfopt.variants import Recipe


def _slow_copy(source, calibration, params):
    time.sleep(1.5)
    return Artifact(source.content, {"variant": "slow_copy"})


def tfopt_register_variants(registry):
    registry.register(Recipe("slow_copy", _slow_copy, "the .tflite source as is, after 1.5 s"))
"""
SAME_ARTIFACTS = """
import json, os
import pytest

@pytest.mark.tfopt_variants("slow_copy")
@pytest.mark.max_accuracy_drop(0.0)
@pytest.mark.parametrize("n", range(8))
def test_same_artifacts(optimized_model, n):
    seen = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "path": optimized_model.path}
    with open(f"seen-{n}.json", "w") as fh:
        json.dump(seen, fh)
"""
ROW_FIELDS = ("test", "variant", "backend", "size_bytes", "accuracy", "outcome")


def _rows(path: Path) -> list[dict]:
    return [{k: row.get(k) for k in ROW_FIELDS} for row in json.loads(path.read_text())["rows"]]


def test_xdist_builds_each_artifact_once_and_matches_one_process(pytester, tmp_path, preloaded_runtimes, digits_tflite,
                                                                  data_path):
    pytester.makeini(f"[pytest]\ntfopt_model = {digits_tflite}\ntfopt_dataset = {data_path}\n")
    pytester.makeconftest(SLOW_RECIPE)
    pytester.makepyfile(test_same=SAME_ARTIFACTS)
    rows = {}
    for workers in (0, 2, 4):
        cache = tmp_path / f"cache-n{workers}"
        args = [*CLI, f"--tfopt-cache-dir={cache}", f"--tfopt-report=r{workers}.json"]
        if workers:
            result = pytester.runpytest_subprocess("-n", str(workers), *args, timeout=300)
        else:
            result = pytester.runpytest(*args)
        result.assert_outcomes(passed=8)
        builds = (cache / BUILD_LOG).read_text().splitlines()
        assert sorted(line.split("variant=")[1] for line in builds) == ["fp32", "slow_copy"], builds  # once each
        seen = [json.loads((pytester.path / f"seen-{n}.json").read_text()) for n in range(8)]
        assert {s["worker"] for s in seen} == ({f"gw{i}" for i in range(workers)} if workers else {"main"})
        assert len({s["path"] for s in seen}) == 1
        result.stdout.fnmatch_lines([f"artifacts: 2 built (*s), {2 * max(workers, 1) - 2} reused; cache: *"])
        names = assert_clean(cache)
        assert len([n for n in names if n.endswith(".tflite")]) == 2
        rows[workers] = _rows(pytester.path / f"r{workers}.json")
    assert len(rows[0]) == 8 and all(r["accuracy"] is not None and r["outcome"] == "passed" for r in rows[0])
    assert rows[2] == rows[0] and rows[4] == rows[0]


# ---- untrusted models --------------------------------------------------------------------------------------------
def _evil_lambda(marker: Path):
    # Creates `marker` whenever Keras executes it. eval() keeps the path a constant in the marshalled bytecode.
    return eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307 - the point of the test


@pytest.fixture(scope="module")
def evil_models(tmp_path_factory, preloaded_runtimes):
    """Model files whose Lambda layer creates a marker file when run, in each format and Keras."""
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("evil")
    marker = root / "PWNED"
    files = {}
    for flavour, k in (("keras3", keras), ("tf_keras", tf_keras)):
        inp = k.Input((8, 8, 1))
        flat = k.layers.Flatten()(k.layers.Lambda(_evil_lambda(marker))(inp))
        model = k.Model(inp, k.layers.Dense(10, activation="softmax")(flat))
        for suffix in (".keras", ".h5"):
            path = root / f"{flavour}{suffix}"
            model.save(path)
            files[path.name] = (path, k)
    marker.unlink(missing_ok=True)  # building the models ran the lambda
    return files, marker


@pytest.mark.parametrize("name", ["keras3.keras", "keras3.h5", "tf_keras.keras", "tf_keras.h5"])
def test_untrusted_lambda_model_never_runs(pytester, tmp_path, evil_models, data_path, name):
    files, marker = evil_models
    path, k = files[name]
    pytester.makeini(f"[pytest]\ntfopt_model = {path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(test_evil="""
import pytest

@pytest.mark.tfopt_variants("int8")
def test_it(optimized_model):
    pass
""")
    cache = tmp_path / "cache"
    collected = pytester.runpytest(*CLI, f"--tfopt-cache-dir={cache}", "--collect-only", "-q")
    assert collected.ret == 0 and not marker.exists()  # collecting never loads the model
    collected.stdout.fnmatch_lines(["*1 test collected*"])
    result = pytester.runpytest(*CLI, f"--tfopt-cache-dir={cache}", "-rA")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_it[[]int8-tflite[]]*",
                                 f"model '{path}' contains Python code (a Lambda layer) that safe mode refuses to run: "
                                 "load it yourself with safe_mode=False if you trust it and return the model from the "
                                 "tfopt_model fixture"])
    one_line(result.stdout.str())
    assert not marker.exists()
    assert not cache.exists() or entries(cache) == []
    # positive control: the payload is real, loading the file unsafely does run it
    k.models.load_model(path, compile=False, safe_mode=False)
    assert marker.exists()
    marker.unlink()


# ---- bad data through the plugin -------------------------------------------------------------
def _digits(**changes):
    with np.load(DATA_NPZ) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    return arrays


BAD_DATA = {
    "labels-out-of-range": (lambda a: {"y_test": np.where(a["y_test"] == 3, 12, a["y_test"])},
                            "*labels range over [[]0, 12[]] but the model has 10 classes*"),
    "wrong-dtype": (lambda a: {"x_test": a["x_test"].astype(str)}, "*inputs have dtype <U*, not numeric: convert them to float32 (or int) arrays*"),
    "wrong-rank": (lambda a: {"x_test": a["x_test"][..., 0]}, "*train inputs have shape (8, 8, 1) but test inputs (8, 8): both splits need the same per-sample shape*"),
    "empty-test-split": (lambda a: {"x_test": a["x_test"][:0], "y_test": a["y_test"][:0]}, "*empty (0 samples)*"),
    "nan-in-test-data": (lambda a: {"x_test": np.where(np.arange(a["x_test"].size).reshape(a["x_test"].shape) == 5,
                                                       np.nan, a["x_test"]).astype(np.float32)}, "*NaN/Inf*"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_through_the_plugin_is_one_line(suite, pytester, tmp_path, case):
    change, message = BAD_DATA[case]
    arrays = _digits()
    arrays.update(change(arrays))
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    pytester.makeconftest(f"""
import pytest

@pytest.fixture
def tfopt_dataset():
    return {str(path)!r}
""")
    cache = tmp_path / "cache"
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.05)
def test_it(optimized_model):
    pass
""",
        f"--tfopt-cache-dir={cache}",
    )
    assert result.ret in (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.USAGE_ERROR), result.stdout.str()
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str()
    if cache.exists():
        assert_clean(cache)


def test_one_sample_data_set_gives_an_inconclusive_verdict_not_a_pass(suite, pytester, tmp_path):
    arrays = _digits()
    path = tmp_path / "one.npz"
    np.savez(path, x_train=arrays["x_train"][:1], y_train=arrays["y_train"][:1],
             x_test=arrays["x_test"][:1], y_test=arrays["y_test"][:1])
    pytester.makeconftest(f"""
import pytest

@pytest.fixture
def tfopt_dataset():
    return {str(path)!r}
""")
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.01, confidence=0.95)
def test_it(optimized_model):
    pass
""",
        f"--tfopt-cache-dir={tmp_path / 'cache'}", "-rA",
    )
    assert "Traceback" not in result.stdout.str()
    # one sample decides nothing: Tango's interval spans almost [-0.8, 0.8], so no PASS
    result.stdout.fnmatch_lines([
        "INCONCLUSIVE *test_it*: max_accuracy_drop(0.01, confidence=0.95) inconclusive: *"
        "~ budget 0.01; needs about * evaluation samples at this discordance to decide",
        "*1 inconclusive*",
    ])
