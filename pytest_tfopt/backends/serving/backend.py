"""The serving backend itself: the artifact in TF Serving's layout, :class:`ServingBackend` and :class:`ServingRunner`.

Artifact (``.serving.zip``): the source exported as backend ``tf`` exports it into ``NAME/1/``,
zipped deterministically; :func:`served_name` picks ``NAME`` and :func:`read_signature` reads the
packed ``serving_default`` signature back. Loading goes to the server at ``url`` (checked for an
``AVAILABLE`` version; the user deploys it, and every "not found" message says how) or to a
:class:`~pytest_tfopt.backends.serving.server.SpawnedServer`; the runner then calls ``:predict``
through a :class:`~pytest_tfopt.backends.serving.client.RestClient`.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from ... import tfenv
from ...artifact import Artifact
from ...errors import BackendUnavailable, UsageError
from ...models import SourceModel
from ...security import private_dir, user_cache_dir
from ...signature import Signature, TensorInfo, dtype_name, run_in_batches
from .. import Backend, Runner
from .._archive import pack
from ..tf import PRECISIONS, export_saved_model
from .client import SIGNATURE, RestClient, ServingError, excerpt, parse_answer, request_body, request_format
from .server import SpawnedServer, unavailable

URL_ENV = "TFOPT_SERVING_URL"
VERSION = "1"
DEFAULT_TIMEOUT_S = 30.0
LATENCY_NOTE = "HTTP round trip incl. JSON encode/decode (request body prebuilt, kept-alive connection)"


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
                               f"{', '.join(self.signature.output_names)} ({excerpt(data)}): check the server "
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
        return unavailable()

    def unsupported_reason(self, variant: str, params: dict[str, Any] | None = None) -> str | None:
        if variant in PRECISIONS:
            return None
        return (f"variant {variant!r} is not available on backend 'serving': TensorFlow Serving runs float "
                f"SavedModels (fp32, bf16); use tflite or onnxruntime for {variant}")

    def convert(self, source: SourceModel, recipe: Any, calibration: Any, params: dict[str, Any]) -> Artifact:
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
            raise BackendUnavailable(unavailable())
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
        path = os.path.join(private_dir(user_cache_dir("serving")), f"{artifact.sha256[:16]}.serving.zip")
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                fh.write(artifact.content)
    return (f"deploy the artifact: unzip -o {path} -d MODEL_BASE_DIR and serve it with --model_name={name} "
            f"--model_base_path=MODEL_BASE_DIR/{name}")
