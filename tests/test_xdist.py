"""Under pytest -n 2 both workers share one cache: each artifact is built once, then reused."""

from __future__ import annotations

import json


def test_two_workers_reuse_one_cached_artifact(pytester, tmp_path, model_path, data_path):
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(
        """
import json, os
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.parametrize("n", range(4))
@pytest.mark.max_size_kb(40)
def test_uses_int8(optimized_model, n):
    record = {"worker": os.environ.get("PYTEST_XDIST_WORKER"), "path": optimized_model.path}
    with open(f"seen-{n}.json", "w") as fh:
        json.dump(record, fh)
"""
    )
    cache = tmp_path / "cache"
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", f"--tfopt-cache-dir={cache}",
                                           "--tfopt-threads=1")
    result.assert_outcomes(passed=4)
    seen = [json.loads((pytester.path / f"seen-{n}.json").read_text()) for n in range(4)]
    assert {s["worker"] for s in seen} == {"gw0", "gw1"}
    assert len({s["path"] for s in seen}) == 1  # one artifact file, used by both workers
    builds = (cache / "builds.log").read_text().splitlines()
    variants = sorted(line.split("variant=")[1] for line in builds)
    assert variants == ["fp32", "int8"], builds  # int8 and its fp32 reference, each built once
    # the controller merges the workers' rows and cache counts into one summary
    result.stdout.fnmatch_lines(["*tfopt summary*"])
    assert sum("int8     tflite" in line for line in result.stdout.lines) == 4
    result.stdout.fnmatch_lines(["artifacts: 2 built (*s), 2 reused; cache: *"])


def test_pin_cores_gives_each_worker_its_own_cores(pytester, tmp_path, model_path, data_path):
    import os

    if len(os.sched_getaffinity(0)) < 2:
        import pytest

        pytest.skip("needs at least 2 cores to pin 2 workers apart")
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(
        """
import json, os
import pytest

@pytest.mark.parametrize("n", range(4))
def test_affinity(n):
    with open(f"aff-{n}.json", "w") as fh:
        json.dump({"worker": os.environ["PYTEST_XDIST_WORKER"], "cores": sorted(os.sched_getaffinity(0))}, fh)
"""
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--tfopt-pin-cores")
    result.assert_outcomes(passed=4)
    seen = {}
    for n in range(4):
        record = json.loads((pytester.path / f"aff-{n}.json").read_text())
        seen[record["worker"]] = tuple(record["cores"])
    assert set(seen) == {"gw0", "gw1"}
    assert not set(seen["gw0"]) & set(seen["gw1"])  # disjoint core sets


def test_variant_group_is_read_from_the_node_id():
    from pytest_tfopt.xdist_groups import variant_group

    backends = ["tflite", "onnxruntime"]
    assert variant_group("t.py::test_a[int8-tflite]", backends) == "int8-tflite"
    assert variant_group("t.py::test_a[pruned(sparsity=0.5)+int8-onnxruntime-3]", backends) == \
        "pruned(sparsity=0.5)+int8-onnxruntime"
    assert variant_group("t.py::test_a[3]", backends) is None and variant_group("t.py::test_a", backends) is None
    assert variant_group("t.py::test_a[tflite]", backends) is None  # a backend alone names no variant


def test_loadgroup_sends_each_variant_to_one_worker(pytester, tmp_path, model_path, data_path):
    """``--dist loadgroup``: the tests of one (variant, backend) run on one worker, which alone builds/loads it."""
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(
        """
import json, os
import pytest

@pytest.mark.tfopt_variants("int8", "float16")
@pytest.mark.parametrize("n", range(3))
def test_variant(optimized_model, n):
    with open(f"seen-{optimized_model.variant}-{n}.json", "w") as fh:
        json.dump(os.environ.get("PYTEST_XDIST_WORKER"), fh)

@pytest.mark.parametrize("n", range(4))
def test_plain(n):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                                           f"--tfopt-cache-dir={tmp_path / 'cache'}", "--tfopt-threads=1")
    result.assert_outcomes(passed=10)
    for variant in ("int8", "float16"):
        workers = {json.loads((pytester.path / f"seen-{variant}-{n}.json").read_text()) for n in range(3)}
        assert len(workers) == 1, (variant, workers)  # all three tests of the variant on one worker
