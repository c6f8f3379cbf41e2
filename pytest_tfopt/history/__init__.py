"""Result history: every run's rows in an embedded SQLite store, steps found per metric series, MLflow runs.

Modules: :mod:`.store` (the SQLite file: runs and their rows, safe for concurrent writers), :mod:`.vcs` (the
commit and branch a run measured), :mod:`.fields` (which row fields are metrics, and their direction),
:mod:`.changepoint` (steps in a noisy series: a penalised piecewise-constant fit), :mod:`.series` (rows →
one series per test/variant/backend/metric, with its steps), :mod:`.plot` (the charts of ``tfopt history
--plot``), :mod:`.mlflow_log` (one MLflow run per result row).
"""

from __future__ import annotations

from typing import Any

from . import store, vcs


def append_document(path: str, doc: dict[str, Any], cwd: str | None = None) -> int:
    """Append the rows of results document ``doc`` (``baseline.document``) to the history at ``path`` as one run,
    with the revision checked out in ``cwd``; returns the run's id."""
    hardware = dict(doc.get("hardware") or {})
    hardware_id = hardware.pop("id", None)
    return store.append(path, doc["rows"], vcs.revision(cwd), hardware, doc.get("versions") or {}, hardware_id)
