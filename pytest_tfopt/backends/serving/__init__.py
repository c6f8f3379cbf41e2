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
* **binary**: ``tensorflow_model_server`` on ``PATH``: one server per loaded variant, started on
  free ports over the unpacked artifact and polled until ``AVAILABLE`` (:mod:`.server`), stopped by
  :meth:`ServingRunner.close`, at garbage collection or at interpreter exit.
* neither: :meth:`ServingBackend.unavailable_reason` says what to provide (the test skips).

The exported ``serving_default`` signature takes and returns the model's inputs and outputs by
name (:meth:`~pytest_tfopt.models.SourceModel.serving_function`); requests use the REST row format
for a one-input, one-output model and the columnar format otherwise (:mod:`.client`). One
kept-alive connection. Latency is the HTTP round trip, so it includes the server's JSON decoding
and encoding. Every network failure is one line naming the URL, what happened and the remedy:
:class:`BackendUnavailable` while loading (the test skips; fails under ``--tfopt-strict``),
:class:`ServingError` once the model served.

Modules: :mod:`.client` (REST client, errors, request/answer encoding), :mod:`.server` (a spawned
``tensorflow_model_server``), :mod:`.backend` (artifact layout, :class:`ServingBackend`,
:class:`ServingRunner`). Every public name of them is importable from this package, as it was from
the single ``serving.py`` module it replaces.
"""

from __future__ import annotations

from .backend import (
    DEFAULT_TIMEOUT_S,
    LATENCY_NOTE,
    URL_ENV,
    VERSION,
    ServingBackend,
    ServingRunner,
    read_signature,
    served_name,
)
from .client import SIGNATURE, RestClient, ServingError, parse_answer, request_body, request_format
from .server import SETUP_DOCS, UNAVAILABLE, SpawnedServer, free_port, unavailable

__all__ = [
    "DEFAULT_TIMEOUT_S", "LATENCY_NOTE", "SETUP_DOCS", "SIGNATURE", "UNAVAILABLE", "URL_ENV", "VERSION", "unavailable",
    "RestClient", "ServingBackend", "ServingError", "ServingRunner", "SpawnedServer",
    "free_port", "parse_answer", "read_signature", "request_body", "request_format", "served_name",
]
