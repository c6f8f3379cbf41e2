"""A history's runs → one series per (test, variant, backend, metric) over its last commits, with its steps.

Commits are ordered by the first run that measured them (a history appended by CI is in push order); a
commit measured by several runs contributes the median of their values. Hardware-dependent metrics
(latencies) get one series per hardware fingerprint: timings from two machines are no series.
"""

from __future__ import annotations

import fnmatch
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import changepoint, fields
from .changepoint import Step
from .store import Run


@dataclass(frozen=True)
class Point:
    """One commit of a series: its value (median of ``runs`` runs) and where it sits in the history."""

    commit: str
    branch: str
    runs: int
    value: float


@dataclass(frozen=True)
class Series:
    """One metric of one (test, variant, backend) over commits, oldest first, and the steps found in it."""

    test: str
    variant: str
    backend: str
    info: fields.FieldInfo
    hardware_id: str | None
    points: tuple[Point, ...]
    steps: tuple[Step, ...]

    @property
    def field(self) -> str:
        return self.info.field

    @property
    def title(self) -> str:
        better = "higher" if self.info.higher_is_better else "lower"
        unit = f"{self.info.unit}, " if self.info.unit else ""
        where = f" on hardware {self.hardware_id}" if self.hardware_id else ""
        return f"{self.test} [{self.variant}, {self.backend}] {self.field} ({unit}{better} is better){where}"

    def kind(self, step: Step) -> str:
        """``regression`` or ``improvement``, by the metric's direction."""
        worse = step.change < 0 if self.info.higher_is_better else step.change > 0
        return "regression" if worse else "improvement"

    @property
    def current_regression(self) -> Step | None:
        """The newest step when it is a regression: the level it brought still holds at the newest commit."""
        if self.steps and self.kind(self.steps[-1]) == "regression":
            return self.steps[-1]
        return None


def commit_window(runs: Iterable[Run], last: int) -> list[str]:
    """The ``last`` newest commits, ordered by the first run that measured each."""
    order = list(dict.fromkeys(run.commit for run in sorted(runs, key=lambda r: r.id)))
    return order[-last:]


def default_fields(field: str) -> bool:
    """Series shown by default: the metrics table's (accuracy, sizes, p50/p95 latency)."""
    return fields.table_info(field) is not None


def build(history: list[tuple[Run, list[dict[str, Any]]]], last: int = 20, tests: str | None = None,
          wanted: list[str] | None = None, penalty: float = changepoint.PENALTY) -> list[Series]:
    """Every series of ``history`` (``store.read``) over its ``last`` commits.

    ``tests`` is a glob of test ids (``*test_digits*``); ``wanted`` row fields or metric names (default: the
    metrics table's; ``["all"]``: every metric a row carries).
    """
    window = commit_window((run for run, _ in history), last)
    position = {commit: i for i, commit in enumerate(window)}
    chosen = None if wanted is None or "all" in wanted else {fields.resolve(w) for w in wanted}
    values: dict[tuple[Any, ...], dict[str, list[float]]] = {}
    branches: dict[str, str] = {}
    for run, rows in history:
        if run.commit not in position:
            continue
        branches.setdefault(run.commit, run.branch)
        for row in rows:
            if tests and not fnmatch.fnmatchcase(row["test"], tests):
                continue
            for field, value in fields.metric_fields(row).items():
                if (chosen is not None and field not in chosen) or (wanted is None and not default_fields(field)):
                    continue
                info = fields.info(field)
                hardware = (row.get("hardware_id") or run.hardware_id) if info.hardware_dependent else None
                key = (row["test"], row["variant"], row["backend"], field, hardware)
                values.setdefault(key, {}).setdefault(run.commit, []).append(value)
    out = []
    for (test, variant, backend, field, hardware), by_commit in sorted(values.items(), key=_sort_key):
        commits = sorted(by_commit, key=position.__getitem__)
        points = tuple(Point(c, branches[c], len(by_commit[c]), statistics.median(by_commit[c])) for c in commits)
        info = fields.info(field)
        found = changepoint.steps([p.value for p in points], info.relative_change, penalty=penalty)
        out.append(Series(test, variant, backend, info, hardware, points, tuple(found)))
    return out


def _sort_key(item: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    test, variant, backend, field, hardware = item[0]
    return (test, variant, backend, field, hardware or "")
