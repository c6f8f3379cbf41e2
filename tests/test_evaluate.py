"""Judging in the core, without pytest: budget selection, change thresholds, perf modes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pytest_tfopt.budgets import Verdict, evaluate, parse_change, parse_marker


@dataclass
class FakeModel:
    variant: str = "int8"
    backend: str = "tflite"
    size_bytes: int = 2000


@dataclass(frozen=True)
class Slow:
    """A timing budget that is always broken."""

    marker: str = "max_latency_ms"
    kind = "perf"

    def check(self, model, reference):
        return Verdict(self.marker, False, 9.0, None, 1.0, "max_latency_ms(1) broken: 9 ms > budget 1 ms")


def test_markers_override_the_file_and_aliases_count_as_their_target():
    file_budget = parse_marker("max_accuracy_drop", (0.0001,), {})
    alias = parse_marker("min_accuracy_drop", (0.5,), {})
    size = parse_marker("max_size_kb", (10,), {})
    values, _ = evaluate.select({"min_accuracy_drop": [alias]}, {"max_accuracy_drop": file_budget, "max_size_kb": size},
                                {}, None, False, True)
    assert values == [size, alias]


def test_change_thresholds_meet_their_baseline_or_say_why_not():
    size = parse_change("size", "+0%")
    values, checks = evaluate.select({}, {}, {"size": size}, {"size_bytes": 1000}, True, True)
    assert values == [] and checks == [(size, 1000.0)]
    values, checks = evaluate.select({}, {}, {"size": size}, None, True, True)
    assert checks == [(size, None)] and isinstance(values[0], evaluate.NotCompared)
    verdict = values[0].check(FakeModel(), None)
    assert verdict.passed is None and "no row for this test" in verdict.message and math.isnan(verdict.measured)
    values, _ = evaluate.select({}, {}, {"size": size}, {"test": "t"}, True, True)
    assert "no value for it" in values[0].check(FakeModel(), None).message
    values, _ = evaluate.select({}, {}, {"size": size}, None, False, True)  # no baseline at all: nothing to say
    assert values == []


def test_judge_under_each_perf_mode():
    size = parse_change("size", "+0%")
    changes = [(size, 1000.0)]
    enforce = evaluate.judge(FakeModel(), [Slow()], changes, "enforce", lambda b: None)
    assert [(v.budget, v.passed) for v in enforce] == [("max_latency_ms", False), ("size change", False)]
    record = evaluate.judge(FakeModel(), [Slow()], changes, "record", lambda b: None)
    assert record[0].passed is True and record[0].recorded and record[0].message.endswith("--tfopt-perf=record)")
    assert record[1].passed is False and not record[1].recorded  # size is not a timing budget
    off = evaluate.judge(FakeModel(), [Slow()], changes, "off", lambda b: None)
    assert [v.budget for v in off] == ["size change"]
