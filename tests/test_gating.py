"""Gating merges: budgets files, baselines (save, compare, ratchet), reports, JUnit, TensorBoard, xdist."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

TWO_TESTS = """
import pytest

@pytest.mark.tfopt_variants("int8")
def test_a(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
def test_b(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_size_kb(40)
def test_marked(optimized_model):
    pass
"""


def test_budgets_file_entry_fails_the_matching_test_and_markers_override(suite, pytester):
    pytester.makefile(".toml", **{"tfopt-budgets": """
[[budgets]]
test = "*test_a*"
max_size_kb = 5

[[budgets]]
test = "*test_marked*"
variant = "int8"
backend = "tflite"
max_size_kb = 5
"""})
    result = suite(TWO_TESTS)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_a[[]int8-tflite[]]*", "max_size_kb(5) broken: int8 on tflite: 13.* KB*"])
    assert "test_marked[int8-tflite] - " not in result.stdout.str()


def test_budgets_in_pyproject_and_table_values(suite, pytester):
    pytester.makepyprojecttoml("""
[[tool.tfopt.budgets]]
variant = "int8"
max_latency_ms = { limit = 0.00001, percentile = 95 }
""")
    result = suite(TWO_TESTS)
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*max_latency_ms(1e-05, percentile=95) broken: int8 on tflite: p95 * ms*"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[[budgets]]\ntest = "*"\nmax_size = 5\n', "*tfopt-budgets.toml, line 3 (entry 1): unknown key 'max_size': valid keys are test, variant, backend, max_accuracy_drop*"),
        ("[[budgets]]\nmax_size_kb = ]\ntest = \"*\"\n", "*tfopt-budgets.toml: not valid TOML (*line 2*): fix the syntax*"),
        ('[[budgets]]\nlatency_p95 = "-10%"\n', "*line 2 (entry 1): latency_p95 = '-10%': a change threshold says how much worse it may get, and worse is higher for latency_p95: write e.g. latency_p95 = \"+10%\"*"),
        ("[[budgets]]\nmax_size_kb = -3\n", "*line 2 (entry 1): max_size_kb budget must be > 0, got -3*"),
        ("[limits]\nx = 1\n", "*line 1: unknown table/key 'limits': write entries as *"),
    ],
)
def test_malformed_budgets_file_is_a_usage_error_naming_file_line_and_key(suite, pytester, content, message):
    pytester.makefile(".toml", **{"tfopt-budgets": content})
    result = suite(TWO_TESTS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def _doctor(path, **changes):
    doc = json.loads(path.read_text())
    for row in doc["rows"]:
        for key, fn in changes.items():
            row[key] = fn(row[key])
    path.write_text(json.dumps(doc))
    return doc


def test_change_threshold_fails_against_baseline_and_ratchet_tightens(suite, pytester):
    pytester.makefile(".toml", **{"tfopt-budgets": '[[budgets]]\nsize = "+0%"\naccuracy = "-0.001"\n'})
    base = pytester.path / "base.json"
    suite(TWO_TESTS, f"--tfopt-save-baseline={base}").assert_outcomes(passed=3)
    saved = json.loads(base.read_text())
    assert saved["schema"] == "pytest-tfopt/results" and saved["schema_version"] == 1 and len(saved["rows"]) == 3
    actual = saved["rows"][0]["size_bytes"]

    _doctor(base, size_bytes=lambda v: v - 100)  # main was 100 bytes smaller: this change grew the model
    result = suite(TWO_TESTS, f"--tfopt-baseline={base}")
    result.assert_outcomes(failed=3)  # a marker overrides value budgets, not change thresholds
    result.stdout.fnmatch_lines([f"size = '+0%' broken: int8 on tflite: {actual} B vs baseline {actual - 100} B (+0.7%) beyond the allowed change +0%"])
    assert saved["rows"][0]["accuracy"] is not None  # change metrics are measured for the baseline

    _doctor(base, size_bytes=lambda v: v + 200)  # main was bigger: this change improved it
    result = suite(TWO_TESTS, f"--tfopt-baseline={base}", "--tfopt-update-baseline")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["baseline updated: *base.json (* improvements taken over)"])
    assert {r["size_bytes"] for r in json.loads(base.read_text())["rows"]} == {actual}


def test_baseline_from_other_hardware_compares_only_accuracy_and_size(suite, pytester):
    pytester.makefile(".toml", **{"tfopt-budgets": '[[budgets]]\nlatency_p50 = "+0%"\n'})
    base = pytester.path / "base.json"
    suite(TWO_TESTS, f"--tfopt-save-baseline={base}").assert_outcomes(passed=3)
    doc = _doctor(base, latency_b1_p50_ms=lambda v: 1e-9)
    doc["hardware"] = {"cpu": "Some Other CPU", "cores": 64}
    base.write_text(json.dumps(doc))
    result = suite(TWO_TESTS, f"--tfopt-baseline={base}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*measured on other hardware (Some Other CPU): only accuracy and size are compared*"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "*baseline '*bad.json' is not valid JSON*save it again with --tfopt-save-baseline*"),
        ('{"schema": "pytest-tfopt/results", "schema_version": 99, "rows": []}', "*bad.json' has schema version 99, this pytest-tfopt reads 1: save a new baseline*"),
        ('{"rows": 3}', "*bad.json' is not a pytest-tfopt results file*"),
    ],
)
def test_bad_baseline_is_a_usage_error(suite, pytester, content, message):
    (pytester.path / "bad.json").write_text(content)
    result = suite(TWO_TESTS, f"--tfopt-baseline={pytester.path / 'bad.json'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_reports_parse_back(suite, pytester):
    out = pytester.path / "out"
    args = [f"--tfopt-report={out}/r.{ext}" for ext in ("json", "md", "html", "benchmark.json")]
    source = TWO_TESTS.replace("def test_b(optimized_model):\n    pass", "def test_b(optimized_model):\n    optimized_model.latency()")
    result = suite(source, *args, "--junitxml=junit.xml")
    result.assert_outcomes(passed=3)
    doc = json.loads((out / "r.json").read_text())
    assert doc["schema"] == "pytest-tfopt/results" and {"hardware", "versions", "commit", "created"} <= set(doc)
    assert sorted(r["test"].split("::")[-1] for r in doc["rows"]) == ["test_a[int8-tflite]", "test_b[int8-tflite]", "test_marked[int8-tflite]"]
    hw = doc["hardware"]  # the fingerprint every row points at: CPU model and flags, cores, GPUs
    assert {"cpu", "cpu_flags", "cores", "gpus", "id"} <= set(hw) and isinstance(hw["cpu_flags"], list)
    for row in doc["rows"]:
        assert row["hardware_id"] == hw["id"] and row["runtime"].startswith("ai-edge-litert ")
        assert row["versions"]["tensorflow"] and row["versions"]["ai-edge-litert"]
    md = (out / "r.md").read_text().splitlines()
    assert md[0] == "### pytest-tfopt: 3 results: 3 passed"
    assert sum(line.startswith("| ✅ |") for line in md) == 3
    html = (out / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<tr class=") == 3
    assert html.count('class="tfopt-spec"') == 3 and "accuracy vs size" in html
    bench = json.loads((out / "r.benchmark.json").read_text())
    names = [b["name"] for b in bench["benchmarks"]]  # rows of the variant once test_b measured its latency
    assert "test_b[int8-tflite]" in names and "test_a[int8-tflite]" not in names
    assert all(b["stats"]["median"] > 0 and b["params"]["variant"] == "int8" for b in bench["benchmarks"])
    props = {p.get("name") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert {"tfopt_accuracy", "tfopt_size_bytes", "tfopt_compression_ratio", "tfopt_latency_b1_p50_ms"} <= props


def test_unknown_report_format_is_a_usage_error(suite):
    result = suite(TWO_TESTS, "--tfopt-report=out.pdf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tfopt-report out.pdf: unknown format; use one of .benchmark.json, .json, .md, .html*"])


def test_tensorboard_runs_per_variant_and_backend(suite, pytester):
    result = suite(TWO_TESTS, "--tfopt-tensorboard=tb")
    result.assert_outcomes(passed=3)
    runs = sorted(p.name for p in (pytester.path / "tb").iterdir())
    assert runs == ["int8-tflite"]
    assert list((pytester.path / "tb" / "int8-tflite").glob("events.out.tfevents.*"))


def test_xdist_reports_the_same_rows_as_one_process(pytester, tmp_path, model_path, data_path):
    pytester.makeini(f"[pytest]\ntfopt_model = {model_path}\ntfopt_dataset = {data_path}\n")
    pytester.makepyfile(TWO_TESTS)
    cache = tmp_path / "cache"
    stable = ("test", "variant", "backend", "outcome", "size_bytes", "gzip_size_bytes", "accuracy", "verdicts")
    rows = {}
    for workers in ("0", "2"):
        result = pytester.runpytest_subprocess("-n", workers, "-p", "no:cacheprovider", f"--tfopt-cache-dir={cache}",
                                               "--tfopt-threads=1", f"--tfopt-report=r{workers}.json")
        result.assert_outcomes(passed=3)
        doc = json.loads((pytester.path / f"r{workers}.json").read_text())
        rows[workers] = [{k: r.get(k) for k in stable} for r in doc["rows"]]
    assert rows["0"] == rows["2"] and len(rows["0"]) == 3


def test_rows_show_only_what_their_own_test_measured(suite, pytester):
    """Measurements are memoized per variant, but a row lists only what its test measured."""
    out = pytester.path / "rows.json"
    result = suite(
        """
import pytest

@pytest.mark.tfopt_variants("int8")
def test_a_latency(optimized_model):
    optimized_model.latency()

@pytest.mark.tfopt_variants("int8")
def test_b_size_only(optimized_model):
    assert optimized_model.size_bytes > 0

@pytest.mark.tfopt_variants("int8")
def test_c_latency_again(optimized_model):
    optimized_model.latency()
""",
        f"--tfopt-report={out}",
    )
    result.assert_outcomes(passed=3)
    rows = {r["test"].split("::")[-1].split("[")[0]: r for r in json.loads(out.read_text())["rows"]}
    assert "latency_b1_p50_ms" in rows["test_a_latency"]
    assert "latency_b1_p50_ms" not in rows["test_b_size_only"]  # test_a's latency is not test_b's result
    assert rows["test_c_latency_again"]["latency_b1_p50_ms"] == rows["test_a_latency"]["latency_b1_p50_ms"]  # reused
