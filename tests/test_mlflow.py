"""--tfopt-mlflow against a real MLflow tracking server (SQLite backend) that these tests start."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from pytest_tfopt.errors import TfoptError  # noqa: E402
from pytest_tfopt.history import mlflow_log  # noqa: E402
from pytest_tfopt.history.vcs import Revision  # noqa: E402

SUITE = """
import pytest

@pytest.mark.max_accuracy_drop(0.05)
def test_it(optimized_model):
    optimized_model.latency()
    assert optimized_model.evaluate() > 0.5
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on a free port with a SQLite backend and its own artifact directory; its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240  # a loaded CI machine takes a minute
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _expected_metrics(row: dict) -> dict[str, float]:
    """Every number a result row holds, as MLflow keys: what the runs must carry (written out independently)."""
    out = {}
    for name, value in row.items():
        key = name.replace("[", "/").replace("]", "")
        if isinstance(value, bool) or name == "calibration_size":
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, list) and name.endswith("_ci_ms"):
            out.update({f"{key}/{end}": float(v) for end, v in zip(("lo", "hi"), value, strict=True) if v is not None})
        elif isinstance(value, dict) and name not in ("versions", "quantization"):
            out.update({f"{key}/{k}": float(v) for k, v in value.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def test_every_result_is_an_mlflow_run_with_every_metric_of_its_row(suite, server, pytester, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("GITHUB_SHA", raising=False)
    result = suite(SUITE, "--tfopt-variants=dynamic,float16", f"--tfopt-mlflow={server}",
                   "--tfopt-mlflow-experiment=budgets", "--tfopt-report=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"mlflow: 2 runs logged to {server} (experiment budgets)"])
    rows = json.loads((pytester.path / "r.json").read_text())["rows"]

    client = MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("budgets")
    runs = {r.data.tags["tfopt.test"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(r["test"] for r in rows)
    for row in rows:
        run = runs[row["test"]]
        expected = _expected_metrics(row)
        assert {"accuracy", "size_bytes", "latency_b1_p50_ms", "latency_b1_p95_ci_ms/hi"} <= set(expected)
        assert set(expected) <= set(run.data.metrics), set(expected) - set(run.data.metrics)
        for key, value in expected.items():
            assert run.data.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        params, tags = run.data.params, run.data.tags
        assert (params["variant"], params["backend"]) == (row["variant"], row["backend"])
        assert params["versions/tensorflow"] == row["versions"]["tensorflow"] and params["hardware/cores"]
        assert tags["tfopt.outcome"] == "passed" and tags["tfopt.verdict.max_accuracy_drop"] == "passed"
        assert run.info.status == "FINISHED" and run.info.run_name == row["test"].rsplit("::", 1)[-1]
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "artifact")]
        assert artifacts == [f"artifact/{Path(row['artifact']).name}"]


def test_an_unreachable_server_is_one_error_line_and_other_outputs_are_written(suite, pytester):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    result = suite(SUITE, "--tfopt-variants=dynamic", f"--tfopt-mlflow={url}", "--tfopt-report=r.json")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines([f"ERROR writing mlflow (MLflow server {url} does not answer (*): start it or fix "
                                 "--tfopt-mlflow)"])
    assert "Traceback" not in result.stdout.str() and (pytester.path / "r.json").is_file()


def test_mlflow_failures_are_one_tfopt_error_line(tmp_path):
    doc = {"rows": [{"test": "t::x", "variant": "int8", "backend": "tflite", "accuracy": 0.9}], "hardware": {}}
    with pytest.raises(TfoptError) as info:
        mlflow_log.log("nosuch://tracking", doc, Revision("c", "b"))
    assert str(info.value).startswith("MLflow nosuch://tracking: ") and "\n" not in str(info.value)


def test_keys_and_test_paths():
    assert mlflow_log.key("accuracy_drop[risk]") == "accuracy_drop/risk"
    assert mlflow_log.key("accuracy[a+b]") == "accuracy/a_b"
    with pytest.raises(Exception, match="took the test path 'tests/test_x.py'"):
        mlflow_log.check("tests/test_x.py")


def test_without_mlflow_the_option_is_a_usage_error_naming_the_extra(pytester):
    pytester.makepyfile("def test_it():\n    pass\n")
    hide = ("import sys; sys.modules['mlflow'] = None; import pytest; "  # as if mlflow were not installed
            "raise SystemExit(pytest.main(['-p', 'no:cacheprovider', '--tfopt-mlflow']))")
    run = subprocess.run([sys.executable, "-c", hide], cwd=pytester.path, capture_output=True, text=True, timeout=300)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--tfopt-mlflow needs MLflow: pip install pytest-tfopt[mlflow]" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_option_alone_logs_to_mlflows_own_default_store(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'default.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # what MLflow itself reads when no URI is given
    doc = {"rows": [{"test": "t.py::test_x[int8-tflite]", "variant": "int8", "backend": "tflite", "accuracy": 0.9,
                     "accuracy[risk]": 0.8, "verdicts": [{"budget": "max_size_kb", "passed": False}]}],
           "hardware": {"cores": 2}}
    assert mlflow_log.log(mlflow_log.DEFAULT_STORE, doc, Revision("abc", "main")) == 1
    (run,) = MlflowClient(tracking_uri=store).search_runs(
        [MlflowClient(tracking_uri=store).get_experiment_by_name("pytest-tfopt").experiment_id])
    assert run.data.metrics == {"accuracy": 0.9, "accuracy/risk": 0.8}
    assert run.data.tags["tfopt.verdict.max_size_kb"] == "failed" and run.data.tags["tfopt.commit"] == "abc"
