"""Steps in a noisy series of per-commit values: a penalised piecewise-constant fit, as airspeed velocity does.

The series is split into segments of constant level by optimal partitioning (dynamic programming over
every split, Jackson et al. 2005): the fit minimises the sum of absolute deviations from each segment's
median plus a penalty per segment. Absolute deviations and medians keep a lone outlier from pulling a
level; the penalty, ``penalty × σ × ln(n)``, grows with the series' noise σ (estimated robustly from the
differences of consecutive values, so the steps themselves hardly inflate it) and with its length (a
BIC-like term: a longer series offers more chances to split noise). A boundary between two segments is
reported as a :class:`Step` when the levels differ by at least ``min_change`` (relative, or in points for
scores): asv's regression threshold, so a real but negligible shift is not a finding.

Segments are at least ``min_size`` values long, except the newest, which may be a single commit: the
commit that makes a step is flagged in the run that measures it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

#: penalty factor: segments cost ``PENALTY × σ × ln(n)``; see tests/test_history.py for its false-positive rate
PENALTY = 3.0
#: the smallest relative change reported (asv's default regression threshold)
MIN_CHANGE = 0.05
#: the smallest change of a score (accuracy) reported, in points
MIN_CHANGE_POINTS = 0.01
#: the fewest values a series needs before a step can be told from noise
MIN_VALUES = 4


@dataclass(frozen=True)
class Step:
    """A change of level at value ``index`` (the first value of the new level)."""

    index: int
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def relative(self) -> float | None:
        """The change as a fraction of the level before (``None`` when that level is 0)."""
        return self.change / abs(self.before) if self.before else None


def noise(values: np.ndarray) -> float:
    """A robust standard deviation of the noise: 1.4826 × the median absolute consecutive difference / √2."""
    if len(values) < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(values))) / math.sqrt(2.0))


def _costs(y: np.ndarray) -> np.ndarray:
    """``cost[i, j]``: the sum of absolute deviations of ``y[i:j]`` from its median (``inf`` where j ≤ i).

    Each segment's values are kept sorted as it grows (a few dozen values: plain lists beat numpy here).
    """
    n = len(y)
    cost = np.full((n + 1, n + 1), np.inf)
    values = [float(v) for v in y]
    for i in range(n):
        segment: list[float] = []
        for j in range(i, n):
            bisect.insort(segment, values[j])
            m = len(segment)
            median = segment[m // 2] if m % 2 else (segment[m // 2 - 1] + segment[m // 2]) / 2
            cost[i, j + 1] = sum(abs(v - median) for v in segment)
    return cost


def segments(values: list[float] | np.ndarray, penalty: float, min_size: int = 2) -> list[int]:
    """The start indexes of the best segmentation of ``values`` (always starts with 0).

    Minimises Σ cost(segment) + ``penalty`` per segment; every segment has at least ``min_size`` values
    but the last, which may have one.
    """
    y = np.asarray(values, dtype=float)
    n = len(y)
    if n < 2:
        return [0] if n else []
    cost = _costs(y)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):
        shortest = 1 if j == n else min_size
        for i in range(0, j - shortest + 1):
            total = best[i] + cost[i, j] + penalty
            if total < best[j]:
                best[j], start[j] = total, i
    bounds, j = [], n
    while j > 0:
        bounds.append(int(start[j]))
        j = int(start[j])
    return sorted(bounds)


def steps(values: list[float] | np.ndarray, relative_change: bool = True, penalty: float = PENALTY,
          min_change: float | None = None, min_size: int = 2) -> list[Step]:
    """The steps of ``values`` (one per commit, oldest first) that change the level by ``min_change`` or more.

    ``min_change`` is a fraction of the level before (default :data:`MIN_CHANGE`) or, with
    ``relative_change=False`` (scores such as accuracy), points (default :data:`MIN_CHANGE_POINTS`).
    A series shorter than :data:`MIN_VALUES` has no steps: too few values to tell one from noise.
    """
    y = np.asarray(values, dtype=float)
    if len(y) < MIN_VALUES:
        return []
    scale = float(np.median(np.abs(y))) or 1.0
    sigma = max(noise(y), 1e-9 * scale)  # a constant series (sizes): any real change is a step
    bounds = segments(y, penalty * sigma * math.log(len(y)), min_size)
    levels = [float(np.median(y[a:b])) for a, b in zip(bounds, [*bounds[1:], len(y)], strict=True)]
    threshold = min_change if min_change is not None else MIN_CHANGE if relative_change else MIN_CHANGE_POINTS
    found = []
    for k in range(1, len(bounds)):
        step = Step(bounds[k], levels[k - 1], levels[k])
        size = abs(step.relative) if relative_change and step.relative is not None else abs(step.change)
        if size >= threshold:
            found.append(step)
    return found
