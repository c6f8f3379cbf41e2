"""Backend ``serving`` (TensorFlow Serving over REST): layout, routes, failures, and the REST protocol.

The real ``tensorflow_model_server`` is not installed here (no pip package ships it), so the REST
protocol is exercised against :class:`StandIn`, a protocol stand-in written for these tests: a
stdlib HTTP server that implements TF Serving's REST status (``GET /v1/models/NAME``) and predict
(``POST /v1/models/NAME:predict``, row format) endpoints by running the real exported SavedModel
in TensorFlow. The same stand-in, wrapped in a script named ``tensorflow_model_server`` with the
real binary's flags, exercises the spawn / poll / stop path.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_tfopt import BackendUnavailable, UsageError, Workbench
from pytest_tfopt.backends import default_registry as default_backends
from pytest_tfopt.backends._archive import unpack
from pytest_tfopt.backends.serving import UNAVAILABLE, URL_ENV, ServingBackend, ServingError, free_port, served_name

SIMPLE = """
def test_it(optimized_model):
    assert optimized_model.size_bytes > 0
"""
NAME = "digits_cnn"  # the served name of the shipped model's fp32 variant


# ---- the protocol stand-in ----------------------------------------------------------------------
class StandIn:
    """Protocol stand-in for TensorFlow Serving's REST API (the real binary is absent on this machine).

    Serves the SavedModel under ``base/<highest version>/`` as ``name``: status, and predict in the row
    format, computed by TensorFlow on the real exported model. ``predict_delay`` (s) makes predict hang.
    """

    def __init__(self, base: str, name: str, port: int = 0, predict_delay: float = 0.0) -> None:
        self.base, self.name, self.predict_delay = base, name, predict_delay
        self.version: str | None = None
        self.signature: Any = None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def load(self) -> StandIn:
        import tensorflow as tf

        version = max((d for d in os.listdir(self.base) if d.isdigit()), key=int)
        self.loaded = tf.saved_model.load(os.path.join(self.base, version))
        self.signature, self.version = self.loaded.signatures["serving_default"], version
        return self

    def predict(self, request: dict[str, Any]) -> list[Any]:
        import tensorflow as tf

        sig = self.loaded.signatures[request.get("signature_name", "serving_default")]
        key, spec = next(iter(sig.structured_input_signature[1].items()))
        out = sig(**{key: tf.constant(np.asarray(request["instances"]), dtype=spec.dtype)})
        return out[sorted(out)[0]].numpy().tolist()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as TF Serving

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"/v1/models/{stand_in.name}":
                    name = self.path.rsplit("/", 1)[-1]
                    return self._send(404, {"error": f"Could not find any versions of model {name}"})
                state = "AVAILABLE" if stand_in.version else "LOADING"
                return self._send(200, {"model_version_status": [
                    {"version": stand_in.version or "1", "state": state, "status": {"error_code": "OK", "error_message": ""}}
                ]})

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != f"/v1/models/{stand_in.name}:predict" or not stand_in.version:
                    return self._send(404, {"error": f"Servable not found for request: Latest({stand_in.name})"})
                time.sleep(stand_in.predict_delay)
                return self._send(200, {"predictions": stand_in.predict(request)})

        return Handler

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def fake_model_server_main(argv: list[str]) -> None:
    """``tensorflow_model_server`` stand-in: the real binary's flags, the REST API of :class:`StandIn`."""
    parser = argparse.ArgumentParser()
    for flag in ("--port", "--rest_api_port"):
        parser.add_argument(flag, type=int, required=True)
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--model_base_path", required=True)
    args, _ = parser.parse_known_args(argv)  # threads, timeouts, poll interval: accepted, not needed
    print(f"stand-in ModelServer: REST on {args.rest_api_port}, model {args.model_name}", file=sys.stderr, flush=True)
    server = StandIn(args.model_base_path, args.model_name, port=args.rest_api_port).__enter__()
    server.load()
    print("model AVAILABLE", file=sys.stderr, flush=True)
    server.thread.join()


@contextlib.contextmanager
def silent_server():
    """A URL whose server accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    held, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(sock.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in [*held, sock]:
            conn.close()


@contextlib.contextmanager
def fixed_server(status: int, body: bytes):
    """A URL whose server answers every request with ``status`` and ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _one_line(message: str, url: str) -> None:
    assert "\n" not in message and url in message, message


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wb(shared_cache, model_path, data_path) -> Workbench:
    registry = default_backends()  # a URL makes the backend available; the artifact does not depend on it
    registry.register("serving", lambda: ServingBackend(url="http://127.0.0.1:9"))
    return Workbench(model_path, data_path, cache_dir=shared_cache, threads=1, backends=registry)


@pytest.fixture(scope="module")
def artifact(wb):
    return wb.build("fp32", "serving")


@pytest.fixture(scope="module")
def model_base(artifact, tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("serving-models")
    unpack(artifact.content, base)
    return str(base / NAME)


@pytest.fixture(scope="module")
def x_eval(wb) -> np.ndarray:
    return wb.eval_dataset.x[:50]


@pytest.fixture(scope="module")
def tf_fp32(wb, x_eval) -> np.ndarray:
    return wb.runnable("fp32", "tf").predict(x_eval)


@pytest.fixture
def no_serving(monkeypatch, tmp_path):
    """Neither a URL nor tensorflow_model_server on PATH."""
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))


# ---- artifact and availability ------------------------------------------------------------------
def test_artifact_is_the_versioned_layout_and_loads(artifact, model_base):
    import tensorflow as tf

    with zipfile.ZipFile(io.BytesIO(artifact.content)) as zf:
        names = zf.namelist()
    assert names == sorted(names) and all(n.startswith(f"{NAME}/1/") for n in names)
    assert f"{NAME}/1/saved_model.pb" in names
    assert artifact.suffix == ".serving.zip" and artifact.metadata["settings"]["layout"] == f"{NAME}/1/"
    loaded = tf.saved_model.load(os.path.join(model_base, "1"))
    assert "serving_default" in loaded.signatures


def test_served_names_and_unsupported_variants():
    assert served_name("digits_cnn.h5", "fp32") == "digits_cnn"
    assert served_name("digits_cnn.h5", "bf16") == "digits_cnn-bf16"
    assert served_name("digits_cnn.h5", "fp32", "mnist") == "mnist"
    assert served_name("digits_cnn.h5:pruned(0.5)+fp32", "fp32") == "digits_cnn-pruned_0.5_fp32"
    backend = ServingBackend(url="http://localhost:8501")
    assert backend.unsupported_reason("fp32") is None and backend.unsupported_reason("bf16") is None
    assert "use tflite or onnxruntime for int8" in backend.unsupported_reason("int8")
    with pytest.raises(UsageError, match="not an http"):
        ServingBackend(url="localhost:8501")
    with pytest.raises(UsageError, match="positive number of seconds"):
        ServingBackend(url="http://localhost:8501", timeout_s=0)


def test_neither_url_nor_binary_is_unavailable_with_the_reason(no_serving, monkeypatch):
    assert ServingBackend().unavailable_reason() == UNAVAILABLE
    assert "--tfopt-serving-url=http://HOST:8501" in UNAVAILABLE and "tensorflow_model_server" in UNAVAILABLE
    monkeypatch.setenv(URL_ENV, "http://serving.example:8501/")
    backend = ServingBackend()
    assert backend.url == "http://serving.example:8501" and backend.unavailable_reason() is None


def test_plugin_skips_with_the_reason(suite, no_serving):
    result = suite(SIMPLE, "--tfopt-backend=serving", "--tfopt-variants=fp32", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*backend 'serving' needs a TensorFlow Serving server: pass "
                                 "--tfopt-serving-url=http://HOST:8501 or put tensorflow_model_server on PATH*"])


# ---- failures are one line naming the URL and the remedy ----------------------------------------
def test_server_that_never_answers_times_out(artifact):
    with silent_server() as url:
        start = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            ServingBackend(url=url, timeout_s=1).load(artifact, 1)
        assert time.monotonic() - start < 5
    message = str(info.value)
    _one_line(message, url)
    assert "did not answer GET" in message and "within 1 s (timed out)" in message
    assert "raise --tfopt-serving-timeout" in message


def test_plugin_reports_the_timeout_in_one_line(suite, artifact):
    with silent_server() as url:
        args = ["--tfopt-backend=serving", f"--tfopt-serving-url={url}", "--tfopt-serving-timeout=1",
                "--tfopt-variants=fp32"]
        skipped = suite(SIMPLE, *args, "-rs")
        strict = suite(SIMPLE, *args, "--tfopt-strict")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines([f"*TensorFlow Serving did not answer GET {url}/v1/models/{NAME} within 1 s*"])
    strict.assert_outcomes(errors=1)
    strict.stdout.fnmatch_lines([f"*TensorFlow Serving did not answer GET {url}/v1/models/{NAME} within 1 s "
                                 "(timed out): *raise --tfopt-serving-timeout (--tfopt-strict)"])
    assert "Traceback" not in strict.stdout.str() and "site-packages" not in strict.stdout.str()


def test_connection_refused(artifact):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendUnavailable) as info:
        ServingBackend(url=url, timeout_s=1).load(artifact, 1)
    _one_line(str(info.value), url)
    assert "refused the connection" in str(info.value) and "fix --tfopt-serving-url" in str(info.value)


@pytest.mark.parametrize("status, body, expected", [
    (404, b'{ "error": "Could not find any versions of model digits_cnn" }',
     'HTTP 404 to GET *: { "error": "Could not find any versions of model digits_cnn" }: deploy the artifact: unzip -o *'
     "--model_name=digits_cnn --model_base_path=MODEL_BASE_DIR/digits_cnn"),
    (500, b"<html>internal\nerror</html>", "HTTP 500 to GET *: <html>internal error</html>: deploy the artifact*"),
])
def test_http_errors_name_status_and_body(artifact, status, body, expected):
    with fixed_server(status, body) as url:
        with pytest.raises(BackendUnavailable) as info:
            ServingBackend(url=url, timeout_s=5).load(artifact, 1)
    _one_line(str(info.value), url)
    import fnmatch

    assert fnmatch.fnmatch(str(info.value), f"*{expected}*"), str(info.value)
    assert artifact.path in str(info.value)


def test_predict_that_hangs_times_out(artifact, model_base, x_eval):
    with StandIn(model_base, NAME, predict_delay=3).load() as server:
        runner = ServingBackend(url=server.url, timeout_s=1).load(artifact, 1)
        start = time.monotonic()
        with pytest.raises(ServingError, match=r"did not answer POST .*:predict within 1 s \(timed out\)"):
            runner.predict(x_eval[:2])
        assert time.monotonic() - start < 5
        runner.close()


# ---- the REST protocol ----------------------------------------------------------------------------
def test_rest_round_trip_matches_tf_fp32(artifact, model_base, x_eval, tf_fp32):
    with StandIn(model_base, NAME).load() as server:
        runner = ServingBackend(url=server.url, timeout_s=10).load(artifact, 1)
        try:
            out = runner.predict(x_eval, batch_size=16)  # 4 requests, the last one padded
            np.testing.assert_allclose(out, tf_fp32, atol=1e-5)
            assert out.dtype == np.float32 and runner.predict(x_eval[0]).shape == (1, 10)
            invoke = runner.prepare(x_eval[:1])
            invoke()
            invoke()  # the kept-alive connection is reused
        finally:
            runner.close()
    info = runner.info
    assert info["route"] == "url" and info["url"] == server.url and info["model_name"] == NAME
    assert info["model_version"] == "1" and info["timeout_s"] == 10 and "HTTP round trip" in info["latency"]
    assert f"unzip -o {artifact.path}" in info["deploy"]


def test_plugin_runs_a_variant_on_the_url(suite, model_base, artifact):
    with StandIn(model_base, NAME).load() as server:
        result = suite(SIMPLE, "--tfopt-backend=serving", f"--tfopt-serving-url={server.url}",
                       "--tfopt-variants=fp32", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_it[[]fp32-serving[]] PASSED*"])


# ---- a spawned tensorflow_model_server ----------------------------------------------------------
def _fake_binary(directory: Path, script: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "tensorflow_model_server"
    path.write_text(script)
    path.chmod(0o755)
    return path


def test_spawned_binary_serves_polls_and_stops(artifact, x_eval, tf_fp32, tmp_path, monkeypatch):
    tests_dir = str(Path(__file__).resolve().parent)
    _fake_binary(tmp_path / "bin", f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {tests_dir!r})\n"
                                   "from test_backend_serving import fake_model_server_main\n"
                                   "fake_model_server_main(sys.argv[1:])\n")
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    backend = ServingBackend(timeout_s=120)
    assert backend.unavailable_reason() is None
    runner = backend.load(artifact, 1)
    server = runner._server
    try:
        assert runner.info["route"] == "spawned binary" and runner.info["model_version"] == "1"
        assert runner.info["url"].startswith("http://127.0.0.1:")
        assert "--tensorflow_intra_op_parallelism=1" in server.command
        assert f"--model_base_path={server.directory}{os.sep}{NAME}" in server.command
        np.testing.assert_allclose(runner.predict(x_eval), tf_fp32, atol=1e-5)
    finally:
        runner.close()
    assert server.process.poll() is not None, "the server still runs after close()"
    assert not os.path.exists(server.directory)
    runner.close()  # idempotent


@pytest.mark.parametrize("script, expected", [
    ("#!/bin/sh\necho 'E flag parsing failed' >&2\nexit 3\n",
     "tensorflow_model_server exited with code 3 before serving digits_cnn (last output: E flag parsing failed)*"),
    ("#!/bin/sh\necho 'starting' >&2\nexec sleep 60\n",
     "tensorflow_model_server did not serve digits_cnn at http://127.0.0.1:* within 1 s (last output: starting): "
     "raise --tfopt-serving-timeout*"),
])
def test_spawned_binary_that_fails_or_never_serves(artifact, tmp_path, monkeypatch, script, expected):
    _fake_binary(tmp_path / "bin", script)
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    own_tmp = tmp_path / "tmp"  # this test's server directory only (other workers spawn servers too)
    own_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        ServingBackend(timeout_s=1).load(artifact, 1)
    assert time.monotonic() - start < 8
    import fnmatch

    assert "\n" not in str(info.value) and fnmatch.fnmatch(str(info.value), expected), str(info.value)
    assert not list(own_tmp.glob("tfopt-serving-*")), "the failed server's directory was left behind"
