"""No silent passes: every budget a test states is applied to the model(s) it uses, or refused out loud."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_tfopt.budgets import parse_marker
from pytest_tfopt.errors import UsageError
from pytest_tfopt.measure import accuracy as acc
from pytest_tfopt.measure.stats import paired_bootstrap


def test_budgets_apply_to_models_built_in_the_body_and_to_reference_model(suite):
    result = suite(
        """
        import pytest

        @pytest.mark.max_size_kb(1)
        def test_factory_only(tfopt_variant):
            tfopt_variant("int8")

        @pytest.mark.max_size_kb(1)
        def test_reference_only(reference_model):
            pass

        @pytest.mark.max_size_kb(1000)
        def test_factory_holds(tfopt_variant):
            tfopt_variant("int8")

        @pytest.mark.max_size_kb(1)
        def test_factory_never_called(tfopt_variant):
            pass
        """
    )
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines([
        "*test_factory_only*", "*max_size_kb(1) broken: int8 on tflite*",
    ])
    result.stdout.fnmatch_lines(["*max_size_kb(1) broken: fp32 on tflite*"])
    result.stdout.fnmatch_lines(["*budget markers were not checked: it built no model*"])
    result.stdout.fnmatch_lines(["*test_factory_holds[[]tflite[]]*int8*max_size_kb PASS*"])


@pytest.mark.parametrize("marks", ['@pytest.mark.tfopt_variants("int8")\n@pytest.mark.max_size_kb(1)',
                                   "@pytest.mark.max_size_kb(1)", '@pytest.mark.tfopt_variants("int8")'])
def test_a_budget_on_a_test_without_a_model_is_a_usage_error(suite, marks):
    result = suite(f"import pytest\n\n{marks}\ndef test_x():\n    pass\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_suite.py::test_x: * on a test that uses no model would never be checked: "
                                 "request the optimized_model fixture*"])


def test_an_alias_marker_overrides_the_budgets_file(suite, pytester):
    pytester.makefile(".toml", **{"tfopt-budgets": '[[budgets]]\ntest = "*"\nmax_accuracy_drop = 0.0001\n'})
    result = suite(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8")
        @pytest.mark.min_accuracy_drop(0.5)
        def test_alias(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8")
        def test_file_budget(optimized_model):
            pass
        """
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_file_budget*", "*max_accuracy_drop(0.0001) broken*"])


def test_binary_logits_threshold_at_zero():
    logits = np.array([[-2.0], [3.0], [-0.5], [0.7], [1.5]])
    labels = np.array([0, 1, 0, 1, 1])
    assert acc.top1(labels, logits) == 1.0  # a 0.5 threshold would call 0.7 class 1 but get 0.49 wrong too
    assert acc.top1(labels, logits * 0 + np.array([[0.2], [0.9], [0.4], [0.6], [0.3]])) == 0.8  # probabilities: 0.5


@pytest.mark.parametrize("metric", ["top1", "top2"])
def test_regression_targets_with_a_classification_metric_are_a_usage_error(metric):
    y = np.array([1.2585, 0.4, 2.5, 3.1])
    pred = np.array([[1.1, 0.1], [0.5, 0.2], [2.4, 0.1], [3.0, 0.3]])
    with pytest.raises(UsageError) as excinfo:
        acc.resolve(metric)(y, pred if metric == "top2" else pred[:, :1])
    assert "fractional floats (a regression target" in str(excinfo.value) and 'metric="mae"' in str(excinfo.value)


def test_relative_drop_on_too_few_samples_is_inconclusive():
    budget = parse_marker("max_accuracy_drop", (0.01,), {"confidence": 0.95, "relative": True})
    verdict = budget.judge("int8 on tflite", acc.resolve("top1"), 1.0, 1.0, (0.0, 0.0, ""), samples=1, discordant=0)
    assert verdict.passed is None and "only 0 of 1 samples are scored differently" in verdict.message
    assert "evaluate on more data" in verdict.message
    bootstrap = parse_marker("max_accuracy_drop", (0.01,), {"confidence": 0.95, "method": "bootstrap"})
    assert bootstrap.judge("x", acc.resolve("top1"), 1.0, 1.0, (0.0, 0.0, ""), samples=1, discordant=0).passed is None
    enough = budget.judge("x", acc.resolve("top1"), 0.9, 0.9, (0.0, 0.0, ""), samples=1000, discordant=40)
    assert enough.passed is True


def test_accuracy_interval_is_three_way_with_the_deciding_sample_size():
    from pytest_tfopt.measure.stats import tango_interval

    budget = parse_marker("max_accuracy_drop", (0.01,), {"confidence": 0.95})
    assert budget.method_for(acc.resolve("top1")) == "mcnemar" and budget.method_for(acc.resolve("mae")) == "bootstrap"
    lost = tango_interval(30, 2, 450)  # 28 more lost than gained: the whole interval is beyond 0.01
    broken = budget.judge("x", acc.resolve("top1"), 0.9, 0.962, (*lost, ""), samples=450, discordant=32)
    assert lost[0] > 0.01 and broken.passed is False and f"[{lost[0]:.4f}, {lost[1]:.4f}]" in broken.message
    assert "(two-sided 95% interval, upper end a one-sided 97.5% bound) > budget 0.01" in broken.message
    same = tango_interval(3, 3, 450)  # unchanged model, 300 samples are not enough for a 0.01 budget
    undecided = budget.judge("x", acc.resolve("top1"), 0.9, 0.9, (*same, ""), samples=450, discordant=6)
    assert undecided.passed is None and "needs about" in undecided.message and "at this discordance" in undecided.message
    needed = int(undecided.message.split("needs about ")[1].split()[0].replace(",", ""))
    assert tango_interval(int(3 * needed / 450), int(3 * needed / 450), needed)[1] <= 0.0105  # the advice decides
    holds = budget.judge("x", acc.resolve("top1"), 0.9, 0.9, (*tango_interval(3, 3, 5000), ""), samples=5000,
                         discordant=6)
    assert holds.passed is True


def test_bootstrap_leaves_out_resamples_where_the_statistic_is_undefined():
    y = np.array([0] * 9 + [1])

    def stat(index):
        sample = y[index]
        return float("nan") if sample.min() == sample.max() else float(sample.mean())

    lo, hi = paired_bootstrap(len(y), stat)
    assert 0 < lo <= hi < 1


def test_budgets_file_entries_match_literally_and_by_canonical_variant(suite, pytester):
    pytester.makefile(".toml", **{"tfopt-budgets": """
[[budgets]]
test = "test_suite.py::test_exact[float16-tflite]"
max_size_kb = 1

[[budgets]]
variant = "int8(calibration_size=50,per_channel=True)"
max_size_kb = 2

[[budgets]]
test = "*test_nothing_is_called_this*"
max_size_kb = 3
"""})
    result = suite(
        """
        import pytest

        @pytest.mark.tfopt_variants("float16")
        def test_exact(optimized_model):
            pass

        @pytest.mark.tfopt_variants("int8(per_channel=True,calibration_size=50)")
        def test_canonical(optimized_model):
            pass
        """
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*max_size_kb(1) broken: float16 on tflite*"])
    result.stdout.fnmatch_lines(["*max_size_kb(2) broken: int8(calibration_size=50,per_channel=True) on tflite*"])
    result.stdout.fnmatch_lines(["WARNING budgets file *tfopt-budgets.toml: entry 3 (test = "
                                 "'*test_nothing_is_called_this*') matched no result*"])


def test_unmatched_entry_fails_the_run_under_strict(suite, pytester):
    pytester.makefile(".toml", **{"tfopt-budgets": '[[budgets]]\ntest = "*nope*"\nmax_size_kb = 3\n'})
    source = 'import pytest\n\n@pytest.mark.tfopt_variants("float16")\ndef test_x(optimized_model):\n    pass\n'
    assert suite(source).ret == 0
    strict = suite(source, "--tfopt-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["*entry 1 (test = '*nope*') matched no result*",
                                 "*ERROR: budgets-file entries matched no result (--tfopt-strict)*"])


def test_a_missing_baseline_row_or_metric_is_reported_not_skipped(suite, pytester, tmp_path):
    import json

    pytester.makefile(".toml", **{"tfopt-budgets": '[[budgets]]\nsize = "+0%"\n'})
    base = tmp_path / "base.json"
    source = """
        import pytest

        @pytest.mark.tfopt_variants("float16")
        def test_saved(optimized_model):
            pass
        """
    assert suite(source, f"--tfopt-save-baseline={base}").ret == 0
    doc = json.loads(base.read_text())
    doc["rows"][0]["test"] = "test_suite.py::test_renamed[float16-tflite]"
    base.write_text(json.dumps(doc))
    result = suite(source, f"--tfopt-baseline={base}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["INCONCLUSIVE *test_saved*: size = '+0%' not checked: float16 on tflite: the baseline "
                                 "has no row for this test, variant and backend*save the baseline again"])
    doc["rows"][0]["test"] = "test_suite.py::test_saved[float16-tflite]"
    del doc["rows"][0]["size_bytes"]
    base.write_text(json.dumps(doc))
    result = suite(source, f"--tfopt-baseline={base}")
    result.stdout.fnmatch_lines(["INCONCLUSIVE *test_saved*: size = '+0%' not checked: *the baseline row has no value "
                                 "for it*"])


def test_reports_count_outcomes_as_pytest_does(suite, tmp_path):
    import json

    md, js = tmp_path / "r.md", tmp_path / "r.json"
    result = suite(
        """
        import pytest

        @pytest.mark.tfopt_variants("float16")
        def test_passes(optimized_model):
            pass

        @pytest.mark.tfopt_variants("float16")
        def test_skips_in_body(optimized_model):
            pytest.skip("not today")

        @pytest.mark.tfopt_variants("float16")
        @pytest.mark.xfail(reason="known")
        def test_xfails(optimized_model):
            assert False

        @pytest.mark.tfopt_variants("float16")
        @pytest.mark.max_accuracy_drop(0.01, output="nope")
        def test_check_raises(optimized_model):
            pass

        @pytest.mark.tfopt_variants("float16")
        def test_passes_too(optimized_model):
            pass
        """,
        f"--tfopt-report={md}", f"--tfopt-report={js}",
    )
    result.assert_outcomes(passed=2, failed=1, skipped=1, xfailed=1)
    rows = json.loads(js.read_text())["rows"]
    outcomes = sorted(r["outcome"] for r in rows)
    assert outcomes == ["failed", "passed", "passed", "skipped", "xfailed"]
    raised = next(r for r in rows if "check_raises" in r["test"])
    assert "output='nope' is not an output of the model" in raised["error"]
    head = md.read_text().splitlines()[0]
    assert head == "### pytest-tfopt: 5 results: 2 passed, 1 failed, 1 skipped, 1 xfailed"


def test_a_test_that_errors_before_its_body_is_a_row(suite, pytester, tmp_path):
    import json

    pytester.makeconftest(
        """
        import numpy as np
        import pytest

        @pytest.fixture(scope="session")
        def tfopt_dataset():
            return (np.zeros((20, 5), np.float32), np.zeros(20, np.int64))  # the model takes (8, 8, 1)
        """
    )
    js = tmp_path / "r.json"
    result = suite(
        """
        import pytest

        @pytest.mark.tfopt_variants("float16")
        def test_wrong_data(optimized_model):
            pass
        """,
        f"--tfopt-report={js}",
    )
    result.assert_outcomes(errors=1)
    rows = json.loads(js.read_text())["rows"]
    assert [(r["outcome"], r["variant"]) for r in rows] == [("error", "float16")], rows
    assert "samples have shape (5,) but digits_cnn.h5 expects (8, 8, 1)" in rows[0]["error"]


def test_a_baseline_row_without_keys_is_one_usage_error(suite, tmp_path):
    import json

    base = tmp_path / "base.json"
    base.write_text(json.dumps({"schema": "pytest-tfopt-results", "schema_version": 1, "rows": [{"test": "x"}]}))
    from pytest_tfopt import baseline

    doc = json.loads(base.read_text())
    doc["schema"], doc["schema_version"] = baseline.SCHEMA, baseline.SCHEMA_VERSION
    base.write_text(json.dumps(doc))
    result = suite("def test_x():\n    pass\n", f"--tfopt-baseline={base}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline '*base.json': row 1 lacks test/variant/backend: save it again with "
                                 "--tfopt-save-baseline*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(("option", "words"), [
    ("--tfopt-report={dir}", "--tfopt-report '*' is a directory: give a file name"),
    ("--tfopt-save-baseline={dir}", "--tfopt-save-baseline '*' is a directory: give a file name"),
    ("--tfopt-tensorboard={file}", "--tfopt-tensorboard '*' is a file: give a directory for the runs"),
])
def test_output_paths_are_checked_before_the_first_test(suite, tmp_path, option, words):
    folder, file = tmp_path / "out.json", tmp_path / "afile"  # a directory with a report name
    folder.mkdir()
    file.write_text("x")
    result = suite("def test_x():\n    pass\n", option.format(dir=folder, file=file))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{words}*"])
    assert "test_x" not in result.stdout.str()


def test_free_sequence_axis_with_integer_ids(tmp_path, preloaded_runtimes):
    """Input((None,), int32) -> Embedding: dynamic and int8 build and run at the data's lengths, ids as ints."""
    import keras

    from pytest_tfopt import Dataset, Workbench

    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(ids))
    model = keras.Model(ids, keras.layers.Dense(2, activation="softmax", name="label")(h))
    rng = np.random.default_rng(0)
    data = Dataset.from_arrays(rng.integers(0, 50, (60, 12)).astype(np.int32), rng.integers(0, 2, 60),
                               x_test=rng.integers(0, 50, (20, 20)).astype(np.int32), y_test=rng.integers(0, 2, 20))
    wb = Workbench(model, data, cache_dir=tmp_path, threads=1)
    expected = np.asarray(model(wb.eval_dataset.x))
    for variant, tol in (("dynamic", 0.05), ("int8", 0.1)):
        runnable = wb.runnable(variant)
        out = runnable.predict(wb.eval_dataset.x)
        assert out.shape == (20, 2) and np.max(np.abs(out - expected)) < tol, variant
        assert runnable.info["input_shapes"] == {"tokens": [20]}


@pytest.mark.parametrize(("source", "args", "words"), [
    ('import pytest\n\n@pytest.mark.tfopt_variants()\ndef test_x(optimized_model):\n    pass\n', (),
     "@tfopt_variants() names no variant"),
    ("def test_x(optimized_model):\n    pass\n", ("--tfopt-variants=,",), "--tfopt-variants=',' names no variant"),
])
def test_empty_variant_lists_are_usage_errors(suite, source, args, words):
    result = suite(source, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{words}*"])


def test_duplicate_variants_run_once_with_a_warning(suite):
    result = suite(
        "def test_x(optimized_model):\n    pass\n",
        "--tfopt-variants=float16,float16,int8(per_channel=True,calibration_size=20),"
        "int8(calibration_size=20,per_channel=True)",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*variant 'float16' is listed twice (as 'float16'): it runs once*",
                                 "*variant 'int8(calibration_size=20,per_channel=True)' is listed twice*"])


def test_too_many_threads_warn(suite):
    result = suite("import pytest\n\n@pytest.mark.tfopt_variants('float16')\ndef test_x(optimized_model):\n    pass\n",
                   "--tfopt-threads=1000")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["WARNING --tfopt-threads=1000 is more than the * cores here*"])


def test_rows_use_the_messages_sign_and_the_effective_calibration_size(suite, tmp_path):
    import json

    js = tmp_path / "r.json"
    result = suite(
        """
        import pytest

        @pytest.mark.tfopt_variants("int8(calibration_size=100000)")
        @pytest.mark.max_accuracy_drop(0.5, metric="rmse")
        def test_x(optimized_model):
            optimized_model.evaluate(metric="rmse")
        """,
        f"--tfopt-report={js}",
    )
    result.assert_outcomes(passed=1)
    row = json.loads(js.read_text())["rows"][0]
    assert row["calibration_size"] == 1347  # every training sample: fewer than asked for
    if row.get("metric") == "rmse":
        assert row["accuracy_drop"] == pytest.approx(row["accuracy"] - row["reference_accuracy"])


def test_optimize_refuses_a_foreign_model_suffix(tmp_path, shared_cache, preloaded_runtimes, capsys):
    from pytest_tfopt.cli import main

    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    out = tmp_path / "model.h5"
    code = main(["optimize", str(root / "models" / "digits_cnn.h5"), "--variant", "float16", "-o", str(out),
                 "--cache-dir", str(shared_cache)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "writes a .tflite artifact, not a .h5 file: name it" in err and str(tmp_path / "model.tflite") in err


def test_a_path_option_with_a_space_outside_the_project_stops_in_one_line(pytester, tmp_path):
    """pytest takes the value for a test path while looking for its ini file: the rootdir moves."""
    pytester.makeini("[pytest]\ntfopt_variants = float16\n")
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tfopt-cache-dir", str(elsewhere))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--tfopt-cache-dir {elsewhere}: pytest took * for a test path while looking for "
                                 f"its ini file*write --tfopt-cache-dir={elsewhere} (with '=')*"])
    ok = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--tfopt-cache-dir={elsewhere}")
    ok.assert_outcomes(passed=1)
