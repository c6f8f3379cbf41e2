"""One MLflow run per result row, so budgets show next to the training runs of the same models.

Each run (in experiment :data:`DEFAULT_EXPERIMENT`, or the one named) gets the row's measurements as
metrics (every number in the row: accuracy per output, sizes, latency percentiles and intervals,
throughput, memory), its settings as params (variant, backend, runtime, quantization settings, library
versions, hardware) and tags (test id, commit, branch, outcome, one tag per verdict), and the artifact file
when it still exists. MLflow is the ``mlflow`` extra, imported only when a run is logged.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from typing import Any

from ..errors import TfoptError, UsageError, first_line, setting
from .vcs import Revision

DEFAULT_EXPERIMENT = "pytest-tfopt"
#: the value of ``--tfopt-mlflow`` given alone: MLflow's own default store ($MLFLOW_TRACKING_URI, else its default)
DEFAULT_STORE = "default"
NOT_INSTALLED = "{} needs MLflow: pip install pytest-tfopt[mlflow]"  # formatted with setting("mlflow")
#: row fields the run's name, tags and artifact hold
_TAGGED = ("test", "outcome", "verdicts", "artifact")
#: numbers in a row that are settings, not measurements: logged as params
_SETTINGS = {"calibration_size"}
_PARAM_LIMIT, _TAG_LIMIT = 6000, 5000  # MLflow's value limits (6000 for params, 8000 for tags)
_BATCH = {"metrics": 1000, "params": 100}  # log_batch's limits per call


def check(uri: str) -> None:
    """Before the first test: MLflow is installed, and ``uri`` is no test path the option swallowed."""
    if importlib.util.find_spec("mlflow") is None:
        raise UsageError(NOT_INSTALLED.format(setting("mlflow")))
    if "://" not in uri and (uri.endswith(".py") or "::" in uri):
        option = setting("mlflow")
        raise UsageError(f"{option} took the test path {uri!r} for its URI: write {option}=URI, or "
                         f"put {option} after the test paths")


def key(name: str) -> str:
    """A row field as an MLflow key: ``accuracy[risk]`` → ``accuracy/risk``; characters MLflow refuses → ``_``."""
    name = re.sub(r"\[([^\]]*)\]", r"/\1", name)
    return re.sub(r"[^\w\-. :/]", "_", name)[:250]


def _leaves(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """``(key, leaf)`` of nested dicts and lists (``latency_b1_p95_ci_ms`` → ``…/lo``, ``…/hi``)."""
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _leaves(f"{prefix}/{k}", v)]
    if isinstance(value, list) and len(value) == 2 and prefix.endswith("_ci_ms"):
        return [(f"{prefix}/lo", value[0]), (f"{prefix}/hi", value[1])]
    return [(prefix, value)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # NaN is no metric


def split(row: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A result row as MLflow metrics (every number, keys as :func:`key` makes them) and params (the rest)."""
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    for name, value in row.items():
        if name in _TAGGED:
            continue
        for leaf, item in _leaves(name, value):
            if item is None:
                continue
            if _is_number(item) and name not in _SETTINGS:
                metrics[key(leaf)] = float(item)
            else:
                params[key(leaf)] = (",".join(map(str, item)) if isinstance(item, list) else str(item))[:_PARAM_LIMIT]
    return metrics, params


def tags(row: dict[str, Any], revision: Revision) -> dict[str, str]:
    """Test id, commit, branch, outcome, the verdicts (one tag each, and one summary)."""
    verdicts = {f"tfopt.verdict.{key(v.get('budget', '?'))}":
                "inconclusive" if v.get("passed") is None else "passed" if v.get("passed") else "failed"
                for v in row.get("verdicts") or []}
    summary = "; ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in verdicts.items()) or "none"
    return {"tfopt.test": row["test"], "tfopt.commit": revision.commit, "tfopt.branch": revision.branch,
            "mlflow.source.git.commit": revision.commit, "tfopt.outcome": str(row.get("outcome")),
            "tfopt.verdicts": summary[:_TAG_LIMIT], "tfopt.hardware_id": str(row.get("hardware_id")), **verdicts}


def _reachable(uri: str) -> None:
    """An HTTP tracking server answers its health check within 10 s (MLflow itself would retry for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10):
            pass
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TfoptError(f"MLflow server {uri} does not answer ({reason}): start it or fix {setting('mlflow')}") from None


def log(uri: str, doc: dict[str, Any], revision: Revision, experiment: str = DEFAULT_EXPERIMENT) -> int:
    """Log every row of results document ``doc`` as one MLflow run; returns how many were logged.

    ``uri`` is a tracking URI or :data:`DEFAULT_STORE`. Any MLflow failure is one :class:`TfoptError` line.
    """
    tracking = None if uri == DEFAULT_STORE else uri
    if tracking:
        _reachable(tracking)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            # MLflow's dependencies (SQLAlchemy, pydantic) warn about their internals, and MLflow prints two
            # "View run" lines per run: the session's summary says once where the runs went
            warnings.simplefilter("ignore")
            _log_rows(tracking, experiment, doc, revision)
    except TfoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow, its HTTP client and the file system raise many types: one line
        raise TfoptError(f"MLflow {uri}: {type(exc).__name__}: {first_line(exc)}") from None
    return len(doc["rows"])


def _log_rows(tracking: str | None, experiment: str, doc: dict[str, Any], revision: Revision) -> None:
    from mlflow.tracking import MlflowClient  # lazy: the mlflow extra is heavy and optional

    client = MlflowClient(tracking_uri=tracking)
    experiment_id = _experiment(client, experiment)
    hardware = {f"hardware/{k}": (",".join(map(str, v)) if isinstance(v, list) else str(v))
                for k, v in (doc.get("hardware") or {}).items()}
    for row in doc["rows"]:
        _log_row(client, experiment_id, row, revision, hardware)


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # noqa: BLE001 - another job created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _log_row(client: Any, experiment_id: str, row: dict[str, Any], revision: Revision,
             hardware: dict[str, str]) -> None:
    from mlflow.entities import Metric, Param  # lazy: see log()

    metrics, params = split(row)
    run = client.create_run(experiment_id, run_name=row["test"].rsplit("::", 1)[-1][:250], tags=tags(row, revision))
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    entries = {"metrics": [Metric(k, v, now, 0) for k, v in metrics.items()],
               "params": [Param(k, v) for k, v in {**params, **hardware}.items()]}
    for kind, size in _BATCH.items():
        for start in range(0, len(entries[kind]), size):
            client.log_batch(run_id, **{kind: entries[kind][start:start + size]})
    artifact = row.get("artifact")
    if isinstance(artifact, str) and os.path.isfile(artifact):
        client.log_artifact(run_id, artifact, artifact_path="artifact")
    elif isinstance(artifact, str) and os.path.isdir(artifact):
        client.log_artifacts(run_id, artifact, artifact_path=f"artifact/{os.path.basename(artifact)}")
    status = "FAILED" if row.get("outcome") in ("failed", "error") else "FINISHED"
    client.set_terminated(run_id, status=status)
