"""The ``tfopt`` command line: optimize, bench, compare, report, help and one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_tfopt.cli import BENCH_TEST, build_parser, main

ROOT = Path(__file__).resolve().parent.parent
MODEL = str(ROOT / "models" / "digits_cnn.h5")
DATA = str(ROOT / "fixtures" / "digits.npz")


def run(*argv: str) -> tuple[int, str, str]:
    """``tfopt argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tfopt: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path, preloaded_runtimes: None):
    """One ``tfopt bench`` of fp32 and int8 with a results document, shared by the tests below."""
    path = tmp_path_factory.mktemp("bench") / "head.json"
    code, out, err = run("bench", MODEL, "--data", DATA, "--variant", "int8", "--threads", "1",
                         "--latency-time", "0.05", "--cache-dir", shared_cache, "--json", path, "-q")
    return code, out, err, path


def doctored(doc: dict, path: Path, **changes: float) -> Path:
    """``doc`` with the int8 row's fields changed, written to ``path``."""
    doc = json.loads(json.dumps(doc))
    for row in doc["rows"]:
        if row["variant"] == "int8":
            row.update(changes)
    path.write_text(json.dumps(doc))
    return path


# ---- optimize ---------------------------------------------------------------------------
def test_optimize_writes_a_loadable_tflite(tmp_path, shared_cache, preloaded_runtimes, capsys):
    from ai_edge_litert.interpreter import Interpreter

    target = tmp_path / "out" / "digits_int8.tflite"
    code = main(["optimize", MODEL, "--variant", "int8", "--calibration", DATA, "--cache-dir", str(shared_cache),
                 "-o", str(target)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "variant:  int8" in out and "gzip:" in out and f"written:  {target}" in out
    assert "[1/1] int8 for tflite" in err  # progress on stderr
    interp = Interpreter(model_path=str(target))
    interp.allocate_tensors()
    assert tuple(interp.get_input_details()[0]["shape"][1:]) == (8, 8, 1)
    assert sorted(p.name for p in target.parent.iterdir()) == ["digits_int8.tflite"]  # no temp files left


@pytest.mark.parametrize("argv, expected", [
    (["optimize", "missing.h5", "--variant", "int8", "--calibration", DATA], "model 'missing.h5' does not exist"),
    (["optimize", MODEL, "--variant", "int9"], "unknown variant 'int9'"),
    (["optimize", MODEL, "--variant", "int8"], "variant 'int8' is calibrated: give a data set with --calibration"),
    (["optimize", MODEL, "--variant", "fp32", "--backend", "nope"], "unknown backend 'nope'"),
    (["optimize", MODEL, "--variant", "fp32", "--calibration-size", "0"], "--calibration-size: '0' must be at least 1"),
    (["bench", MODEL, "--variant", "int8"], "variant 'int8' is calibrated: give a data set with --data"),
])
def test_usage_errors_are_one_line_exit_2_and_write_nothing(tmp_path, argv, expected):
    target = tmp_path / "model.tflite"
    code, out, err = run(*argv, *(["-o", target] if argv[0] == "optimize" else ["--json", tmp_path / "r.json"]))
    assert code == 2
    assert expected in one_line_error(err)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_fails_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run("optimize", MODEL, "--variant", "fp32", "-q", "-o", blocker / "m.tflite")
    assert code == 2
    assert "cannot be written" in one_line_error(err)
    code, _, err = run("bench", MODEL, "--variant", "fp32", "--json", tmp_path)
    assert code == 2
    assert "is a directory" in one_line_error(err)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    from pytest_tfopt import cli

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.os, "replace", refuse)
    with pytest.raises(cli.TfoptError, match="cannot write .*Permission denied"):
        cli._write_atomic(str(tmp_path / "m.tflite"), b"bytes")
    assert list(tmp_path.iterdir()) == []


def test_module_entry_point_runs_in_a_subprocess(tmp_path):
    target = tmp_path / "m.tflite"
    out = subprocess.run([sys.executable, "-m", "pytest_tfopt", "optimize", str(tmp_path / "nope.keras"),
                          "--variant", "int8", "-o", str(target)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert one_line_error(out.stderr) == (f"tfopt: error: model {str(tmp_path / 'nope.keras')!r} does not exist: "
                                          "check MODEL")
    assert not target.exists()
    helped = subprocess.run([sys.executable, "-m", "pytest_tfopt", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert helped.returncode == 0
    assert all(cmd in helped.stdout for cmd in ("optimize", "bench", "compare", "report"))


# ---- bench --------------------------------------------------------------------------------
def test_bench_prints_a_table_and_writes_a_results_document(bench_run):
    from pytest_tfopt import baseline

    code, out, err, path = bench_run
    assert code == 0, err
    assert err == ""  # --quiet: no progress
    lines = out.splitlines()
    assert lines[0].split() == ["variant", "backend", "accuracy", "drop", "size", "KB", "gzip", "KB", "ratio",
                                "p50", "ms", "p95", "ms", "build", "s"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"fp32", "int8"}
    assert rows["fp32"][6] == "1.00x" and rows["int8"][1] == "tflite"
    assert f"results: {path}" in out
    built, reused = (int(w) for w in re.match(r"artifacts: (\d+) built .*, (\d+) reused", lines[3]).groups())
    assert built + reused == 2
    doc = baseline.load(path)
    by_variant = {r["variant"]: r for r in doc["rows"]}
    assert set(by_variant) == {"fp32", "int8"}
    int8 = by_variant["int8"]
    assert int8["test"] == BENCH_TEST and int8["backend"] == "tflite"
    assert int8["compression_ratio"] > 2 and int8["reference_size_bytes"] == by_variant["fp32"]["size_bytes"]
    assert 0.9 < int8["accuracy"] <= 1 and int8["reference_accuracy"] == by_variant["fp32"]["accuracy"]
    assert int8["latency_b1_p95_ms"] >= int8["latency_b1_p50_ms"] > 0


class _Backends:
    """A backend registry whose backends are unavailable for the given reasons (None: available)."""

    def __init__(self, **reasons: str | None) -> None:
        self.reasons = reasons

    def names(self) -> list[str]:
        return list(self.reasons)

    def get(self, name: str) -> object:
        return type("Backend", (), {"unavailable_reason": lambda _: self.reasons[name]})()


def test_bench_skips_backends_that_cannot_run_here(capsys):
    from pytest_tfopt.cli import Console, TfoptError
    from pytest_tfopt.cli.bench import _runnable_backends

    registry = _Backends(tflite=None, gpu="no GPU here")
    assert _runnable_backends(registry, ["tflite", "gpu"], Console()) == ["tflite"]
    assert capsys.readouterr().err == "tfopt: note: skipping backend gpu: no GPU here\n"
    assert _runnable_backends(registry, ["all"], Console()) == ["tflite"]  # 'all': the available ones, quietly
    assert capsys.readouterr().err == ""
    with pytest.raises(TfoptError, match="no backend of gpu can run here: see the notes above, or use --backend"):
        _runnable_backends(registry, ["gpu"], Console())


# ---- compare --------------------------------------------------------------------------------
def test_compare_a_document_with_itself_passes(bench_run, tmp_path):
    path = bench_run[3]
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budgets]]\nsize = "+0%"\naccuracy = "-0.0"\nmax_size_kb = 100\n')
    code, out, err = run("compare", path, path, "--budgets", budgets)
    assert code == 0, out + err
    assert "2 compared, 0 added, 0 removed; 6 thresholds checked, 0 broken" in out
    assert "BROKEN" not in out


def test_compare_flags_a_grown_artifact_against_a_change_budget(bench_run, tmp_path):
    base_path = bench_run[3]
    doc = json.loads(base_path.read_text())
    int8 = next(r for r in doc["rows"] if r["variant"] == "int8")
    head = doctored(doc, tmp_path / "head.json", size_bytes=int8["size_bytes"] + 1024)
    budgets = tmp_path / "tfopt-budgets.toml"
    budgets.write_text('[[budgets]]\ntest = "tfopt-bench"\nsize = "+0%"\n')
    code, out, err = run("compare", base_path, head, "--budgets", budgets)
    assert code == 1, out + err
    broken = [line for line in out.splitlines() if line.startswith("BROKEN tfopt-bench")]
    assert len(broken) == 1
    assert broken[0].startswith("BROKEN tfopt-bench [int8, tflite]: size = '+0%' broken: int8 on tflite:")
    assert any(line.split()[:3] == ["BROKEN", "tfopt-bench", "int8"] for line in out.splitlines())  # table status
    assert "+1.0" in out  # the size delta in KB


def test_compare_value_budgets_from_rows_and_skipped_ones(bench_run, tmp_path):
    base_path = bench_run[3]
    doc = json.loads(base_path.read_text())
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budgets]]\nvariant = "int8"\nmax_size_kb = 1\nmax_accuracy_drop = 0.5\n'
                       'max_latency_ms = { limit = 1000.0, percentile = 95 }\nmin_compression_ratio = 100.0\n'
                       'min_sparsity = 0.5\n')
    code, out, err = run("compare", base_path, base_path, "--budgets", budgets)
    assert code == 1
    assert "BROKEN tfopt-bench [int8, tflite]: max_size_kb(1) broken: int8 on tflite:" in out
    assert "BROKEN tfopt-bench [int8, tflite]: min_compression_ratio(100) broken:" in out
    assert "max_accuracy_drop(0.5) broken" not in out and "max_latency_ms(1000" not in out
    assert "4 thresholds checked, 2 broken" in out
    assert "tfopt: note: min_sparsity skipped" in err
    # rows only on one side are listed, not compared
    only_fp32 = dict(doc, rows=[r for r in doc["rows"] if r["variant"] == "fp32"])
    (tmp_path / "base.json").write_text(json.dumps(only_fp32))
    code, out, _ = run("compare", tmp_path / "base.json", base_path)
    assert code == 0
    assert "1 compared, 1 added, 0 removed" in out
    code, out, _ = run("compare", base_path, tmp_path / "base.json")
    assert "1 compared, 0 added, 1 removed" in out


@pytest.mark.parametrize("content, expected", [
    ('{"schema": "pytest-tfopt/res', "is not valid JSON"),
    ("[1, 2]", "is not a pytest-tfopt results document"),
    ('{"schema": "pytest-tfopt/results", "schema_version": 1, "rows": [{"variant": "int8"}]}',
     "row 1 lacks test/variant/backend"),
])
def test_compare_corrupt_file_is_a_one_line_usage_error(bench_run, tmp_path, content, expected):
    bad = tmp_path / "corrupt.json"
    bad.write_text(content)
    code, out, err = run("compare", bench_run[3], bad)
    assert code == 2
    line = one_line_error(err)
    assert f"results file {str(bad)!r}" in line and expected in line
    assert out == ""


def test_compare_bad_budgets_file_is_a_usage_error(bench_run, tmp_path):
    bad = tmp_path / "budgets.toml"
    bad.write_text('[[budgets]]\nsize = "-3%"\n')
    code, _, err = run("compare", bench_run[3], bench_run[3], "--budgets", bad)
    assert code == 2
    assert "size = '-3%'" in one_line_error(err)


# ---- report ---------------------------------------------------------------------------------
def test_report_writes_html_and_markdown(bench_run, tmp_path):
    html, md = tmp_path / "r" / "report.html", tmp_path / "r" / "summary.md"
    code, out, err = run("report", bench_run[3], "-o", html, "-o", md, "--baseline", bench_run[3])
    assert code == 0, err
    page = html.read_text()  # with the report extra: accuracy vs size and vs latency, latency percentiles
    plotted = importlib.util.find_spec("altair") and importlib.util.find_spec("vl_convert")
    assert page.count('class="tfopt-spec"') == 3 if plotted else "pytest-tfopt[report]" in page
    text = md.read_text()
    assert "| variant |" in text and "tfopt-bench" in text and "int8" in text
    assert f"wrote {html} (html, 2 rows)" in out


def test_report_unknown_format_writes_nothing(bench_run, tmp_path):
    code, _, err = run("report", bench_run[3], "-o", tmp_path / "ok.md", "-o", tmp_path / "report.txt")
    assert code == 2
    assert "-o" in one_line_error(err) and "unknown report format" in err
    assert list(tmp_path.iterdir()) == []


# ---- help -------------------------------------------------------------------------------------
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["optimize", "bench", "compare", "report"])
def test_help_lists_every_option_with_help_and_default(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for action in _subparsers()[command]._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for flag in action.option_strings:
            assert flag in out, flag
        assert action.help, action.dest
        if action.option_strings and action.dest != "help":
            assert "default" in action.help or "required" in action.help, action.dest


def test_top_level_help_and_argument_errors(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("optimize", "bench", "compare", "report", "exit codes"))
    assert main(["compare", "only-one.json"]) == 2
    assert one_line_error(capsys.readouterr().err).startswith("tfopt: error: tfopt compare: the following arguments")
