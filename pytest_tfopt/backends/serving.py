"""TensorFlow Serving backend (``serving``): the SavedModel in TF Serving's layout, run over its REST API.

Artifact (``.serving.zip``): the source exported as backend ``tf`` exports it (``fp32``; ``bf16``
under the ``mixed_bfloat16`` policy) into TF Serving's versioned layout ``NAME/1/`` and zipped
deterministically, so ``unzip ARTIFACT -d /models`` *is* a deployment (``/models/NAME/1/saved_model.pb``).
``NAME`` is ``model_name`` (default: the source file's stem, e.g. ``digits_cnn``) for plain ``fp32``
and ``NAME-<variant>`` for any other variant, so a reference and its variant never share a name.

Routes, the first that applies:

* **URL** (``url``, else ``$TFOPT_SERVING_URL``; the plugin's ``--tfopt-serving-url``): a server
  you run. pytest-tfopt does not deploy to it: serve the artifact under ``NAME`` (``Runner.info``
  and every "not found" message give the ``unzip`` command). Loading checks
  ``GET {url}/v1/models/NAME`` for an ``AVAILABLE`` version.
* **binary**: ``tensorflow_model_server`` on ``PATH``: the artifact is unpacked into a temporary
  model base directory and one server per loaded variant starts on free ports, polled until
  ``AVAILABLE`` (or ``timeout_s``: then it is killed and the error quotes its last log lines), and
  stopped by :meth:`ServingRunner.close`, at garbage collection or at interpreter exit. TF Serving
  has no flag to choose the listen address: its REST port listens on every interface; we talk to
  ``127.0.0.1``.
* neither: :meth:`ServingBackend.unavailable_reason` says what to provide (the test skips).

The exported ``serving_default`` signature takes and returns the model's inputs and outputs by
name (:meth:`~pytest_tfopt.models.SourceModel.serving_function`). Requests to a one-input,
one-output model use the REST *row* format, ``{"signature_name": "serving_default", "instances":
[...]}`` → ``{"predictions": [...]}``; any other model the *columnar* format, ``{"inputs": {NAME:
nested list, ...}}`` → ``{"outputs": {NAME: nested list, ...}}`` (a bare list when the signature has
one output), every input in its dtype (integer inputs as JSON integers) and every output read as
float32 (:func:`request_body`, :func:`parse_answer`). One kept-alive connection. Latency is the HTTP round
trip, so it includes the server's JSON decoding and encoding. Every network failure is one line
naming the URL, what happened (timed out after N s, connection refused, HTTP status and body) and
the remedy: :class:`BackendUnavailable` while loading (the test skips; fails under
``--tfopt-strict``), :class:`ServingError` once the model served.
"""

from __future__ import annotations

import http.client
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import weakref
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import tfenv
from ..artifact import Artifact
from ..errors import BackendUnavailable, TfoptError, UsageError
from ..models import SourceModel
from ..signature import Signature, TensorInfo, dtype_name, run_in_batches
from . import Backend, Runner
from ._archive import pack, unpack
from .tf import PRECISIONS, export_saved_model

URL_ENV = "TFOPT_SERVING_URL"
VERSION = "1"
SIGNATURE = "serving_default"
DEFAULT_TIMEOUT_S = 30.0
SETUP_DOCS = "https://www.tensorflow.org/tfx/serving/setup"
UNAVAILABLE = (
    "backend 'serving' needs a TensorFlow Serving server: pass --tfopt-serving-url=http://HOST:8501 "
    f"or put tensorflow_model_server on PATH (see {SETUP_DOCS})"
)
LATENCY_NOTE = "HTTP round trip incl. JSON encode/decode (request body prebuilt, kept-alive connection)"


class ServingError(TfoptError):
    """A TensorFlow Serving request failed after the model was served (timeout, refused, HTTP error, bad answer)."""

    def __init__(self, message: str, kind: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # "timeout", "refused", "unreachable", "http" or "bad-answer"
        self.status = status


def _excerpt(raw: bytes | str, limit: int = 160) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())[:limit] or "(empty body)"


# ---- HTTP ---------------------------------------------------------------------------------------
class RestClient:
    """TF Serving's REST API at ``url`` over one kept-alive ``http.client`` connection (stdlib only)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"TensorFlow Serving URL {url!r} is not an http(s) URL: use e.g. http://localhost:8501")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._prefix = parts.path.rstrip("/")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self, timeout_s: float) -> tuple[http.client.HTTPConnection, bool]:
        reused = self._conn is not None
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=timeout_s)
        else:
            self._conn.timeout = timeout_s
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout_s)
        return self._conn, reused

    def request(self, method: str, path: str, body: bytes | None = None, timeout_s: float | None = None,
                remedy: str = "check the server's log") -> bytes:
        """The body of a 2xx answer to ``method path``; else a one-line :class:`ServingError`."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        where = f"{method} {self.url}{path}"
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            conn, reused = self._connection(timeout_s)
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()  # a kept-alive connection the server closed meanwhile: retry once on a new one
                if reused and attempt == 0:
                    continue
                raise ServingError(f"TensorFlow Serving closed the connection ({where}: {exc or type(exc).__name__}): "
                                   f"{remedy}", "unreachable") from None
            except TimeoutError:
                self.close()
                raise ServingError(f"TensorFlow Serving did not answer {where} within {timeout_s:g} s (timed out): "
                                   "check the server is up and not overloaded, or raise --tfopt-serving-timeout",
                                   "timeout") from None
            except ConnectionRefusedError:
                self.close()
                raise ServingError(f"TensorFlow Serving refused the connection ({where}): start it with "
                                   "--rest_api_port=PORT or fix --tfopt-serving-url", "refused") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise ServingError(f"cannot reach TensorFlow Serving ({where}: {reason}): check --tfopt-serving-url",
                                   "unreachable") from None
        if response.status >= 300:
            raise ServingError(f"TensorFlow Serving answered HTTP {response.status} to {where}: "
                               f"{_excerpt(data)}: {remedy}", "http", response.status)
        return data

    def json(self, method: str, path: str, payload: Any = None, **kwargs: Any) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        data = self.request(method, path, body, **kwargs)
        try:
            return json.loads(data)
        except ValueError:
            raise ServingError(f"TensorFlow Serving answered {method} {self.url}{path} with something that is not "
                               f"JSON ({_excerpt(data)}): is {self.url} a TF Serving REST port (usually 8501)?",
                               "bad-answer") from None

    def status(self, name: str, **kwargs: Any) -> tuple[str | None, list[str]]:
        """``(AVAILABLE version or None, every version's state and error)`` of model ``name``."""
        doc = self.json("GET", f"/v1/models/{name}", **kwargs)
        versions = doc.get("model_version_status", []) if isinstance(doc, dict) else []
        available, states = None, []
        for entry in versions:
            state = str(entry.get("state", "?"))
            error = str((entry.get("status") or {}).get("error_message", "") or "")
            states.append(f"version {entry.get('version')}: {state}" + (f" ({error})" if error else ""))
            if state == "AVAILABLE" and available is None:
                available = str(entry.get("version"))
        return available, states


# ---- the model in the artifact ------------------------------------------------------------------
def served_name(source_name: str, precision: str, model_name: str | None = None) -> str:
    """The name TF Serving serves a variant under: ``model_name`` or the source's stem, ``-<variant>`` unless fp32."""
    base_name, _, plan = source_name.partition(":")  # transformed sources are named "SOURCE:PLAN"
    base = model_name or os.path.splitext(os.path.basename(base_name.rstrip("/\\")))[0]
    variant = plan or precision
    name = base if variant == "fp32" else f"{base}-{variant}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "model"


def read_signature(content: bytes) -> dict[str, Any]:
    """Name and version of the packed ``NAME/1/`` SavedModel, and its ``serving_default`` :class:`Signature` (keys sorted)."""
    tf = tfenv.tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        pb = next(n for n in zf.namelist() if n.count("/") == 2 and n.endswith("/saved_model.pb"))
        proto = saved_model_pb2.SavedModel.FromString(zf.read(pb))
    name, version, _ = pb.split("/")
    sig = next(m.signature_def[SIGNATURE] for m in proto.meta_graphs if SIGNATURE in m.signature_def)

    def info(key: str, tensor: Any) -> TensorInfo:
        dims = [int(d.size) for d in tensor.tensor_shape.dim][1:]
        return TensorInfo(key, tuple(None if d < 0 else d for d in dims),
                          dtype_name(tf.dtypes.as_dtype(tensor.dtype)))

    signature = Signature(tuple(info(k, sig.inputs[k]) for k in sorted(sig.inputs)),
                          tuple(info(k, sig.outputs[k]) for k in sorted(sig.outputs)))
    return {"name": name, "version": version, "signature": signature}


def request_format(signature: Signature) -> str:
    """``"row"`` (``instances``/``predictions``) for a one-input, one-output model, else ``"columnar"``.

    The columnar format (``inputs``/``outputs``, each a mapping name → the whole batch as a nested
    list) names every input and output; the row format is what this backend always sent to
    one-input models, and TF Serving answers both alike.
    """
    return "row" if len(signature.inputs) == 1 and len(signature.outputs) == 1 else "columnar"


def request_body(signature: Signature, feed: dict[str, np.ndarray]) -> bytes:
    """The ``:predict`` request for ``feed`` (input name → batch, already in each input's dtype): ints stay ints."""
    if request_format(signature) == "row":
        ((_, x),) = feed.items()
        return json.dumps({"signature_name": SIGNATURE, "instances": x.tolist()}).encode()
    inputs = {name: values.tolist() for name, values in feed.items()}
    return json.dumps({"signature_name": SIGNATURE, "inputs": inputs}).encode()


def parse_answer(signature: Signature, doc: Any) -> dict[str, np.ndarray]:
    """The outputs by name (float32) of a ``:predict`` answer; ``ValueError``/``KeyError``/``TypeError`` if malformed.

    Row answers hold ``predictions`` (one entry per sample; a dict by output name when there are
    several). Columnar answers hold ``outputs``: a mapping output name → batch, or, from a
    one-output signature, the bare batch.
    """
    names = signature.output_names
    if "outputs" in doc:
        outputs = doc["outputs"]
        if not isinstance(outputs, dict):
            if len(names) != 1:
                raise ValueError(f"one unnamed output for outputs {', '.join(names)}")
            outputs = {names[0]: outputs}
        return {n: np.asarray(outputs[n], dtype=np.float32) for n in names}
    predictions = doc["predictions"]
    if predictions and isinstance(predictions[0], dict):
        return {n: np.asarray([p[n] for p in predictions], dtype=np.float32) for n in names}
    if len(names) != 1:
        raise ValueError(f"unnamed predictions for outputs {', '.join(names)}")
    return {names[0]: np.asarray(predictions, dtype=np.float32)}


# ---- runner -------------------------------------------------------------------------------------
class ServingRunner(Runner):
    """A model served by TensorFlow Serving, called through the REST predict API, inputs and outputs by name."""

    def __init__(self, client: RestClient, served: dict[str, Any], info: dict[str, Any],
                 stop: Callable[[], Any] | None = None) -> None:
        self._client = client
        self.name = served["name"]
        self.signature: Signature = served["signature"]
        self.input_shape = self.signature.inputs[0].shape  # the first input's, for callers of one-input models
        self.info = {"runtime": "TensorFlow Serving (REST)", **info}
        self._stop = stop
        self._path = f"/v1/models/{self.name}:predict"

    def _feed(self, x: Any) -> dict[str, np.ndarray]:
        return self.signature.feed(x, "input", self.name)

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        data = self._client.request("POST", self._path, request_body(self.signature, feed))
        where = f"POST {self._client.url}{self._path}"
        try:
            outputs = parse_answer(self.signature, json.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError):
            key = "predictions" if request_format(self.signature) == "row" else "outputs"
            raise ServingError(f"TensorFlow Serving answered {where} without float {key!r} for "
                               f"{', '.join(self.signature.output_names)} ({_excerpt(data)}): check the server "
                               "serves this artifact", "bad-answer") from None
        n = len(next(iter(feed.values())))
        for name, out in outputs.items():
            if out.ndim == 0 or len(out) != n:
                got = 1 if out.ndim == 0 else len(out)
                raise ServingError(f"TensorFlow Serving answered {where} with {got} predictions of {name!r} for {n} "
                                   "instances: check the server serves this artifact", "bad-answer")
        return outputs

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        return self.signature.result(run_in_batches(self._feed(x), batch_size, self._run))

    def prepare(self, x: Any) -> Callable[[], None]:
        body = request_body(self.signature, self._feed(x))
        request, path = self._client.request, self._path

        def invoke() -> None:
            request("POST", path, body)

        return invoke

    def close(self) -> None:
        """Close the connection and stop a server this runner started (idempotent)."""
        self._client.close()
        if self._stop is not None:
            self._stop()


# ---- a spawned tensorflow_model_server ----------------------------------------------------------
def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_server(proc: subprocess.Popen, log: Any, directory: str) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    log.close()
    shutil.rmtree(directory, ignore_errors=True)


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, "rb") as fh:
            text = fh.read()[-8192:].decode("utf-8", "replace")
    except OSError:
        return "(no output)"
    kept = [line.strip()[:200] for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(no output)"


class SpawnedServer:
    """``tensorflow_model_server`` serving one unpacked artifact; stopped by :meth:`stop`, at GC or at exit."""

    def __init__(self, binary: str, content: bytes, name: str, threads: int, timeout_s: float) -> None:
        self.directory = tempfile.mkdtemp(prefix="tfopt-serving-")
        unpack(content, self.directory)
        self.log_path = os.path.join(self.directory, "server.log")  # beside NAME/, never taken for a version
        rest, grpc = free_port(), free_port()
        while grpc == rest:
            grpc = free_port()
        self.url = f"http://127.0.0.1:{rest}"
        self.command = [
            binary, f"--port={grpc}", f"--rest_api_port={rest}", f"--model_name={name}",
            f"--model_base_path={os.path.join(self.directory, name)}",
            f"--rest_api_timeout_in_ms={int(timeout_s * 1000)}",
            f"--tensorflow_intra_op_parallelism={threads}", "--tensorflow_inter_op_parallelism=1",
            "--file_system_poll_wait_seconds=0",  # the model directory never changes: look once
        ]
        log = open(self.log_path, "wb")  # a file, not a pipe: a chatty server can never block on it
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        except OSError as exc:
            log.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            raise BackendUnavailable(f"cannot start {binary} ({exc.strerror or exc}): {UNAVAILABLE}") from None
        # weakref.finalize also runs at interpreter exit (atexit), so no server outlives the session
        self.stop = weakref.finalize(self, _stop_server, self.process, log, self.directory)

    def wait_available(self, client: RestClient, name: str, timeout_s: float) -> str:
        """Poll the status API until ``name`` is AVAILABLE (its version); on timeout or exit kill it and raise."""
        deadline = time.monotonic() + timeout_s
        states: list[str] = []
        while True:
            code = self.process.poll()
            if code is not None:
                tail = _tail(self.log_path)  # before stop(), which removes the log
                self.stop()
                raise BackendUnavailable(f"tensorflow_model_server exited with code {code} before serving {name} "
                                         f"(last output: {tail}): check that the binary runs and "
                                         "the artifact is a SavedModel")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = _tail(self.log_path)
                self.stop()
                seen = f"; {', '.join(states)}" if states else ""
                raise BackendUnavailable(f"tensorflow_model_server did not serve {name} at {self.url} within "
                                         f"{timeout_s:g} s{seen} (last output: {tail}): raise --tfopt-serving-timeout "
                                         "or check the server's log")
            try:
                version, states = client.status(name, timeout_s=max(0.05, min(1.0, remaining)))
            except ServingError as exc:
                if exc.kind not in ("refused", "timeout", "unreachable") and exc.status != 404:
                    self.stop()
                    raise BackendUnavailable(str(exc)) from None
                version = None  # still starting, or the model not loaded yet
            if version is not None:
                return version
            if any(s.split(": ", 1)[1].startswith("END") for s in states):  # the load failed for good
                tail = _tail(self.log_path)
                self.stop()
                raise BackendUnavailable(f"tensorflow_model_server could not load {name} ({', '.join(states)}; "
                                         f"last output: {tail}): check the artifact loads with tf.saved_model.load")
            time.sleep(0.1)


# ---- backend ------------------------------------------------------------------------------------
class ServingBackend(Backend):
    """TensorFlow Serving over REST: a server at ``url`` (or ``$TFOPT_SERVING_URL``), or a spawned ``binary``.

    ``timeout_s`` bounds every request and the start-up of a spawned server (seconds).
    ``model_name`` is the served name of fp32 (other variants: ``NAME-<variant>``); default: source stem.
    """

    name = "serving"
    artifact_suffix = ".serving.zip"

    def __init__(self, url: str | None = None, model_name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 binary: str = "tensorflow_model_server") -> None:
        self.url = (url or os.environ.get(URL_ENV, "")).strip().rstrip("/") or None
        if self.url is not None:
            RestClient(self.url, 1.0)  # a malformed URL is a usage error now, not a skip later
        if not timeout_s or timeout_s <= 0:
            raise UsageError(f"TensorFlow Serving timeout {timeout_s!r} s: use a positive number of seconds, e.g. 30")
        self.model_name = model_name
        self.timeout_s = float(timeout_s)
        self.binary = binary

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("tensorflow") is None:
            return "backend 'serving' needs TensorFlow to export the SavedModel: pip install tensorflow"
        if self.url or shutil.which(self.binary):
            return None
        return UNAVAILABLE

    def unsupported_reason(self, variant: str, params: dict[str, Any] | None = None) -> str | None:
        if variant in PRECISIONS:
            return None
        return (f"variant {variant!r} is not available on backend 'serving': TensorFlow Serving runs float "
                f"SavedModels (fp32, bf16); use tflite or onnxruntime for {variant}")

    def build(self, source: SourceModel, recipe: Any, calibration: Any, params: dict[str, Any]) -> Artifact:
        self.refuse_unsupported(recipe.name, params)
        name = served_name(source.name, recipe.name, self.model_name)
        with tempfile.TemporaryDirectory(prefix="tfopt-export-") as tmp:
            settings = export_saved_model(source, recipe.name, os.path.join(tmp, name, VERSION), self.name)
            content = pack(tmp)
        settings = {**settings, "layout": f"{name}/{VERSION}/", "model_name": name}
        return Artifact(content, {"variant": recipe.name, "converter": "SavedModel export", "settings": settings,
                                  "format": "zip"}, self.artifact_suffix)

    def load(self, artifact: Artifact, threads: int) -> ServingRunner:
        sig = read_signature(artifact.content)
        name = sig["name"]
        columnar = request_format(sig["signature"]) == "columnar"
        info: dict[str, Any] = {
            "threads": threads, "signature": SIGNATURE, "model_name": name, "timeout_s": self.timeout_s,
            "request_format": "REST columnar format (inputs by name)" if columnar else "REST row format (instances)",
            "latency": LATENCY_NOTE,
        }
        if self.url:
            return self._load_url(artifact, sig, info)
        binary = shutil.which(self.binary)
        if binary is None:
            raise BackendUnavailable(UNAVAILABLE)
        server = SpawnedServer(binary, artifact.content, name, threads, self.timeout_s)
        client = RestClient(server.url, self.timeout_s)
        sig["version"] = server.wait_available(client, name, self.timeout_s)
        info.update(route="spawned binary", url=server.url, binary=binary, model_version=sig["version"],
                    server_threads=f"--tensorflow_intra_op_parallelism={threads}",
                    runtime=f"TensorFlow Serving ({os.path.basename(binary)}, pid {server.process.pid})")
        runner = ServingRunner(client, sig, info, server.stop)
        runner._server = server  # keeps the server (and its finalizer) alive exactly as long as the runner
        return runner

    def _load_url(self, artifact: Artifact, sig: dict[str, Any], info: dict[str, Any]) -> ServingRunner:
        name = sig["name"]
        deploy = _deploy_hint(artifact, name)
        client = RestClient(self.url, self.timeout_s)
        try:
            version, states = client.status(name, remedy=deploy)
        except ServingError as exc:
            raise BackendUnavailable(str(exc)) from None
        if version is None:
            raise BackendUnavailable(f"TensorFlow Serving at {self.url} has no AVAILABLE version of {name} "
                                     f"({', '.join(states) or 'no versions'}): wait for it to load, or {deploy}")
        sig["version"] = version
        info.update(route="url", url=self.url, model_version=version, deploy=deploy, server_threads="the server's own",
                    runtime=f"TensorFlow Serving at {self.url}")
        return ServingRunner(client, sig, info)

    def versions(self) -> dict[str, str]:
        # the served name is inside the artifact (NAME/1/), so another model_name is another artifact
        return {"serving-layout": f"NAME/{VERSION}", "serving-model-name": self.model_name or "(source stem)"}


def _deploy_hint(artifact: Artifact, name: str) -> str:
    """How to make a server serve this artifact as ``name`` (the user deploys it; pytest-tfopt does not)."""
    path = artifact.path
    if path is None:  # never cached: keep a copy where the hint can point
        from ..security import private_dir, user_cache_dir

        path = os.path.join(private_dir(user_cache_dir("serving")), f"{artifact.sha256[:16]}.serving.zip")
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                fh.write(artifact.content)
    return (f"deploy the artifact: unzip -o {path} -d MODEL_BASE_DIR and serve it with --model_name={name} "
            f"--model_base_path=MODEL_BASE_DIR/{name}")
