"""A ``tensorflow_model_server`` this backend starts itself: :class:`SpawnedServer`, :func:`free_port`.

The artifact is unpacked into a temporary model base directory and one server per loaded variant
starts on free ports, polled until ``AVAILABLE`` (or ``timeout_s``: then it is killed and the error
quotes its last log lines), and stopped by :meth:`SpawnedServer.stop`, at garbage collection or at
interpreter exit. TF Serving has no flag to choose the listen address: its REST port listens on every
interface; we talk to ``127.0.0.1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from typing import Any

from ...errors import BackendUnavailable, setting
from .._archive import unpack
from .client import RestClient, ServingError

SETUP_DOCS = "https://www.tensorflow.org/tfx/serving/setup"
UNAVAILABLE = (  # as the plugin spells it; unavailable() spells it for the front end that runs
    "backend 'serving' needs a TensorFlow Serving server: pass --tfopt-serving-url=http://HOST:8501 "
    f"or put tensorflow_model_server on PATH (see {SETUP_DOCS})"
)


def unavailable() -> str:
    """Why the backend cannot run without a server, naming the front end's URL setting."""
    return (f"backend 'serving' needs a TensorFlow Serving server: pass {setting('serving_url', 'http://HOST:8501')} "
            f"or put tensorflow_model_server on PATH (see {SETUP_DOCS})")


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
            raise BackendUnavailable(f"cannot start {binary} ({exc.strerror or exc}): {unavailable()}") from None
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
                                         f"{timeout_s:g} s{seen} (last output: {tail}): raise {setting('serving_timeout')} "
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
