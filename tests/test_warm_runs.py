"""Warm runs: with every artifact cached, the source model is not loaded and TensorFlow is never imported."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from pytest_tfopt import Workbench
from pytest_tfopt.models import identity

SUITE = """
import pytest

@pytest.mark.tfopt_variants("int8", "float16")
@pytest.mark.max_accuracy_drop(0.02)
@pytest.mark.max_size_kb(40)
def test_variants(optimized_model):
    pass
"""

PROBE = """
import json, sys

def pytest_sessionfinish(session):
    with open("probe.json", "w") as fh:
        json.dump({"tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}, fh)
"""


def test_a_warm_run_imports_no_tensorflow(pytester, model_path, data_path, tmp_path):
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makeconftest(PROBE)
    pytester.makepyfile(test_suite=SUITE)
    args = ["-p", "no:cacheprovider", f"--tfopt-cache-dir={tmp_path / 'cache'}", "--tfopt-threads=1"]
    cold = pytester.runpytest_subprocess(*args)
    cold.assert_outcomes(passed=2)
    assert json.loads((pytester.path / "probe.json").read_text())["tensorflow"] is True  # it built
    warm = pytester.runpytest_subprocess(*args)
    warm.assert_outcomes(passed=2)
    warm.stdout.fnmatch_lines(["artifacts: 0 built*, 3 reused*"])  # int8, float16 and their fp32 reference
    assert json.loads((pytester.path / "probe.json").read_text()) == {"tensorflow": False, "keras": False}
    # the warm run's verdicts and rows are the cold run's
    assert [ln for ln in warm.stdout.lines if "PASS" in ln] == [ln for ln in cold.stdout.lines if "PASS" in ln]


def test_the_identity_record_is_read_back_and_follows_the_file_bytes(model_path, data_path, tmp_path):
    model = tmp_path / "digits.h5"
    shutil.copy(model_path, model)
    cache = tmp_path / "cache"
    first = Workbench(model, data_path, cache_dir=cache, threads=1)
    first.build("fp32")  # loads the model and, once built, records the file's identity
    loaded = first.source
    again = Workbench(model, data_path, cache_dir=cache, threads=1)
    known = again.identity
    assert known.model is None and again._source is None  # from the record: nothing loaded
    assert (known.hash, known.name, known.signature, known.kind) == (loaded.hash, loaded.name, loaded.signature,
                                                                    loaded.kind)
    with open(model, "ab") as fh:  # one more byte: another file, so the record no longer applies
        fh.write(b"\0")
    changed = Workbench(model, data_path, cache_dir=cache, threads=1)
    assert changed._record_name() != again._record_name()
    assert changed.identity.model is not None  # loaded again (h5 ignores trailing bytes: same model)


def test_a_damaged_identity_record_is_ignored_with_a_warning(model_path, data_path, tmp_path):
    cache = tmp_path / "cache"
    Workbench(model_path, data_path, cache_dir=cache, threads=1).build("fp32")  # records the identity
    bench = Workbench(model_path, data_path, cache_dir=cache, threads=1)
    record = cache / "records" / f"{bench._record_name()}.json"
    entry = json.loads(record.read_text())
    entry["doc"]["signature"] = {"inputs": "garbage"}
    record.write_text(json.dumps(entry))
    with pytest.warns(UserWarning, match="is damaged; loading the model"):
        assert bench.identity.model is not None
    record.write_text("{not json")
    fresh = Workbench(model_path, data_path, cache_dir=cache, threads=1)
    with pytest.warns(UserWarning, match="record .* is damaged"):
        assert fresh.identity.model is not None


def test_records_round_trip_the_signature_and_refuse_other_documents(bench):
    doc = identity.to_record(bench.source)
    again = identity.from_record(json.loads(json.dumps(doc)), "x.h5")
    assert again.signature == bench.source.signature and again.hash == bench.source.hash
    for broken in ({}, {**doc, "kind": "pickle"}, {**doc, "signature": {"inputs": [["x", [-1], "float32"]],
                                                                        "outputs": [["y", [1], "float32"]]}}):
        with pytest.raises(ValueError), warnings.catch_warnings():
            identity.from_record(broken, "x.h5")
