"""TensorFlow Serving's REST API, client side: :class:`RestClient`, :class:`ServingError`, request and answer encoding.

Stdlib only (``http.client`` over one kept-alive connection). Requests to a one-input, one-output
model use the REST *row* format, ``{"signature_name": "serving_default", "instances": [...]}`` →
``{"predictions": [...]}``; any other model the *columnar* format, ``{"inputs": {NAME: nested list,
...}}`` → ``{"outputs": {NAME: nested list, ...}}`` (a bare list when the signature has one output),
every input in its dtype (integer inputs as JSON integers) and every output read as float32
(:func:`request_body`, :func:`parse_answer`). Every network failure is one :class:`ServingError`
line naming the URL, what happened (timed out after N s, connection refused, HTTP status and body)
and the remedy.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any

import numpy as np

from ...errors import TfoptError, UsageError, setting
from ...signature import Signature

SIGNATURE = "serving_default"


class ServingError(TfoptError):
    """A TensorFlow Serving request failed after the model was served (timeout, refused, HTTP error, bad answer)."""

    def __init__(self, message: str, kind: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # "timeout", "refused", "unreachable", "http" or "bad-answer"
        self.status = status


def excerpt(raw: bytes | str, limit: int = 160) -> str:
    """``raw`` (an HTTP body) on one line, at most ``limit`` characters, for error messages."""
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
                                   f"check the server is up and not overloaded, or raise {setting('serving_timeout')}",
                                   "timeout") from None
            except ConnectionRefusedError:
                self.close()
                raise ServingError(f"TensorFlow Serving refused the connection ({where}): start it with "
                                   f"--rest_api_port=PORT or fix {setting('serving_url')}", "refused") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise ServingError(f"cannot reach TensorFlow Serving ({where}: {reason}): check {setting('serving_url')}",
                                   "unreachable") from None
        if response.status >= 300:
            raise ServingError(f"TensorFlow Serving answered HTTP {response.status} to {where}: "
                               f"{excerpt(data)}: {remedy}", "http", response.status)
        return data

    def json(self, method: str, path: str, payload: Any = None, **kwargs: Any) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        data = self.request(method, path, body, **kwargs)
        try:
            return json.loads(data)
        except ValueError:
            raise ServingError(f"TensorFlow Serving answered {method} {self.url}{path} with something that is not "
                               f"JSON ({excerpt(data)}): is {self.url} a TF Serving REST port (usually 8501)?",
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


# ---- request and answer encoding ----------------------------------------------------------------
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
