"""The one metrics table, the views older names keep of it, and the helpers every report and message share."""

from __future__ import annotations

import pytest

from pytest_tfopt import baseline, metrics
from pytest_tfopt.budgets import CHANGE_METRICS, change, is_change_metric
from pytest_tfopt.budgets.rows import is_recorded, verdict_row
from pytest_tfopt.budgets.verdict import RECORDED_NOTE, Verdict
from pytest_tfopt.errors import first_line
from pytest_tfopt.report import common, terminal
from pytest_tfopt.report.table import fmt, table


@pytest.mark.parametrize("metric", metrics.METRICS, ids=lambda m: m.name)
def test_every_metric_says_all_a_table_needs(metric):
    assert metric.name and metric.row_key and metric.label
    assert metric.unit in ("", " B", " ms")
    assert isinstance(metric.higher_is_better, bool) and isinstance(metric.hardware_dependent, bool)
    format(1234.5678, metric.message_format)
    format(1234.5678, metric.column_format)
    assert metric.name in change.MEASURE  # a change threshold can measure it on a model
    assert metrics.get(metric.name) is metric and metrics.BY_ROW_KEY[metric.row_key] is metric


def test_the_old_names_are_views_of_the_table():
    names = [m.name for m in metrics.METRICS]
    assert list(baseline.METRICS) == list(CHANGE_METRICS) == names == list(metrics.NAMES)
    for m in metrics.METRICS:
        assert baseline.METRICS[m.name] == (m.row_key, m.higher_is_better)
        higher, (unit, fmt_), _ = CHANGE_METRICS[m.name]
        assert (higher, unit, fmt_) == (m.higher_is_better, m.unit, m.message_format)
    assert baseline.HARDWARE_INDEPENDENT == ("accuracy", "size", "gzip_size")
    assert [c[0] for c in common.COLUMNS] == ["accuracy", "size KB", "gzip KB", "p50 ms", "p95 ms"]
    assert [(c[1], c[3]) for c in common.COLUMNS] == [(m.row_key, m.higher_is_better) for m in metrics.METRICS]
    assert {"accuracy", "size KB", "p50 ms", "p95 ms"} <= set(terminal.COLUMNS)


def test_names_per_output_fields_and_hardware():
    assert metrics.split_output("accuracy[risk]") == ("accuracy", "risk")
    assert metrics.split_output("size") == ("size", None)
    assert metrics.row_field("latency_p50") == "latency_b1_p50_ms"
    assert metrics.row_field("accuracy[risk]") == "accuracy[risk]"
    assert is_change_metric("accuracy[risk]") and not is_change_metric("size[risk]") and not is_change_metric("speed")
    assert [n for n in metrics.NAMES if metrics.hardware_dependent(n)] == ["latency_p50", "latency_p95"]
    assert not metrics.hardware_dependent("accuracy[risk]")
    with pytest.raises(KeyError):
        metrics.hardware_dependent("speed")
    assert baseline.metric_value({"accuracy[risk]": 0.5, "size_bytes": 10}, "accuracy[risk]") == 0.5
    assert baseline.metric_value({"size_bytes": 10}, "latency_p95") is None


def test_columns_show_bytes_as_kb_and_leave_the_rest():
    assert common.scaled("size_bytes", 2048) == 2.0
    assert common.scaled("gzip_size_bytes", None) is None
    assert common.scaled("latency_b1_p50_ms", 3) == 3 and common.scaled("compression_ratio", 4.0) == 4.0


def test_ratchet_takes_over_improvements_in_each_direction():
    old = {"rows": [{"test": "t", "variant": "v", "backend": "b", "accuracy": 0.9, "size_bytes": 100,
                     "accuracy[risk]": 0.5, "latency_b1_p50_ms": 2.0}]}
    new = [{"test": "t", "variant": "v", "backend": "b", "accuracy": 0.8, "size_bytes": 90,
            "accuracy[risk]": 0.6, "latency_b1_p50_ms": 3.0}]
    doc, improved = baseline.ratchet(old, new)
    assert improved == 2
    assert {k: doc["rows"][0][k] for k in ("accuracy", "size_bytes", "accuracy[risk]", "latency_b1_p50_ms")} == {
        "accuracy": 0.9, "size_bytes": 90, "accuracy[risk]": 0.6, "latency_b1_p50_ms": 2.0}


def test_text_table_aligns_and_cuts_trailing_spaces():
    lines = table(["name", "ms"], [["a", "1.5"], ["long", "10.25"]], [False, True])
    assert lines == ["name     ms", "a       1.5", "long  10.25"]
    assert table(["x", "y"], []) == ["x  y"]
    assert fmt(None, ".1f") == "-" and fmt(2, ".1f") == "2.0"


def test_verdicts_keep_their_recorded_flag_and_old_rows_still_read():
    broken = Verdict("max_latency_ms", True, 2.0, None, 1.0, "slow" + RECORDED_NOTE, recorded=True)
    row = verdict_row(broken)
    assert row["recorded"] is True and is_recorded(row)
    plain = verdict_row(Verdict("max_size_kb", True, 1.0, None, 2.0, "fine", detail="gzip"))
    assert "recorded" not in plain and plain["detail"] == "gzip" and not is_recorded(plain)
    old = {k: v for k, v in row.items() if k != "recorded"}  # saved before verdicts carried the flag
    assert is_recorded(old)
    line = terminal.table_lines([{"test": "t", "variant": "v", "backend": "b", "verdicts": [old, plain]}])[1]
    assert line.endswith("max_latency_ms RECORDED, max_size_kb[gzip] PASS")


def test_first_line_of_an_exception():
    assert first_line(RuntimeError("\n  boom: bad op  \nat line 3\n")) == "boom: bad op"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError(" "), empty="") == ""
    assert first_line(ValueError("x" * 500), limit=10) == "x" * 10
