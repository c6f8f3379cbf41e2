"""The HTML report's plots: Vega-Lite specs read back from the page, drawn by the real renderer (vl-convert).

Most tests use made-up rows (no TensorFlow); the last ones run the real paths: ``tfopt report`` on a results
file and the plugin's ``--tfopt-report=r.html``.
"""

from __future__ import annotations

import json
import struct
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pytest_tfopt import report
from pytest_tfopt.cli import main
from pytest_tfopt.report import plotdata

vl_convert = pytest.importorskip("vl_convert", reason="the report extra (pytest-tfopt[report]) draws the plots")
pytest.importorskip("altair", reason="the report extra (pytest-tfopt[report]) draws the plots")

DIGITS = "examples/test_digits_budgets.py"


def row(variant: str, backend: str = "tflite", test: str = "test_a", **fields: Any) -> dict[str, Any]:
    """A result row as the plugin writes it: fp32 reference fields, accuracy, size, batch-1 latency."""
    base = {"test": f"{DIGITS}::{test}[{variant}-{backend}]", "variant": variant, "backend": backend,
            "outcome": "passed", "accuracy": 0.97, "metric": "top1", "reference_accuracy": 0.975,
            "size_bytes": 13_000, "reference_size_bytes": 33_000, "source_hash": "digits", "verdicts": []}
    return {**base, **fields}


def latency(p50: float, spread: float = 3.0, ci: bool = True) -> dict[str, Any]:
    """Batch-1 latency fields: p50 .. p99 rising to ``spread`` × p50, with 95 % intervals when ``ci``."""
    out: dict[str, Any] = {"latency_b1_n": 400, "latency_b1_min_ms": p50 / 2, "latency_b1_max_ms": p50 * 40}
    for p, factor in zip(plotdata.PERCENTILES, (1.0, spread * 0.6, spread * 0.8, spread), strict=True):
        out[f"latency_b1_p{p}_ms"] = p50 * factor
        if ci:
            out[f"latency_b1_p{p}_ci_ms"] = [p50 * factor * 0.95, None if p == 99 else p50 * factor * 1.1]
    return out


ROWS = [
    row("int8", accuracy=0.968, **latency(0.008)),
    row("float16", size_bytes=19_000, accuracy=0.975),
    row("dynamic", size_bytes=12_700, accuracy=0.9733),
    row("int8", backend="onnxruntime", size_bytes=18_000, accuracy=0.969, **latency(0.12)),
    row("int8_io", backend="onnxruntime", size_bytes=17_000, accuracy=0.95, outcome="failed", **latency(0.1),
        verdicts=[{"budget": "max_accuracy_drop", "passed": False, "message": "accuracy drop 0.025 > 0.01"}]),
]


class Page(HTMLParser):
    """The report's parts: table rows, chart divs, the charts' specs and the other scripts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows, self.divs, self.specs, self.scripts, self.notes = 0, [], {}, [], []
        self._script: dict[str, str] | None = None
        self._text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.rows += tag == "tr" and a.get("class") is not None
        if tag == "div" and a.get("class") == "chart":
            self.divs.append(a["id"])
        if tag == "script":
            assert "src" not in a, "the page must load nothing: every script is inline"
            self._script, self._text = a, []
        if tag == "p" and a.get("class") == "note":
            self.notes.append(self.getpos())

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            if self._script.get("class") == "tfopt-spec":
                self.specs[self._script["data-target"]] = json.loads("".join(self._text))
            else:
                self.scripts.append("".join(self._text))
            self._script = None


def html_of(rows: list[dict[str, Any]]) -> str:
    return report.render("r.html", {"rows": rows, "commit": "abc", "created": "2026-01-01T00:00:00Z"})


def titled(page: Page, prefix: str) -> list[dict[str, Any]]:
    return [s for s in page.specs.values() if s["title"]["text"].startswith(prefix)]


def layer(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(lay for lay in spec["layer"] if lay.get("name") == name)


def values(spec: dict[str, Any], name: str) -> list[dict[str, Any]]:
    data = layer(spec, name).get("data", spec.get("data"))  # layers of one data set share the chart's
    return data["values"] if "values" in data else spec["datasets"][data["name"]]


def version() -> str:
    from pytest_tfopt.report.plots import vega_lite_version  # after the importorskip: it needs the extra

    return vega_lite_version()


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


@pytest.fixture(scope="module")
def page() -> Page:
    return Page(html_of(ROWS))


# ---- the page ---------------------------------------------------------------------------------
def test_page_is_one_offline_file_with_a_chart_per_spec(page):
    assert page.rows == len(ROWS)  # the table stays
    assert sorted(page.divs) == sorted(page.specs) and len(page.specs) == 3
    bundle = max(page.scripts, key=len)
    assert len(bundle) > 200_000 and "vegaEmbed" in bundle  # Vega, Vega-Lite and vega-embed inlined
    assert any("vegaEmbed('#'" in s for s in page.scripts)
    assert "pytest-tfopt[report]" not in html_of(ROWS)


def test_tradeoff_plots_carry_fp32_the_frontier_and_failures(page):
    size, speed = titled(page, "accuracy vs size"), titled(page, "accuracy vs latency")
    assert len(size) == len(speed) == 1
    for spec in size + speed:
        assert {r["backend"] for r in values(spec, "fp32")} == {"tflite", "onnxruntime"}  # fp32 accuracy lines
        assert layer(spec, "frontier")["mark"]["interpolate"] == "step-after" and values(spec, "frontier")
        shape = layer(spec, "points")["encoding"]["shape"]["scale"]
        assert "failed" in shape["domain"] and shape["range"][shape["domain"].index("failed")] == "cross"
        colour = layer(spec, "points")["encoding"]["color"]["scale"]
        assert colour["domain"] == ["onnxruntime", "tflite"]  # one colour per backend, the same on every chart
        assert not {"text"} & {lay["mark"]["type"] for lay in spec["layer"]}  # names in tooltips, not printed
    points = values(size[0], "points")
    assert {(p["variant"], p["status"]) for p in points} >= {("fp32", "fp32 reference"), ("int8_io", "failed")}
    assert [(p["variant"], p["backend"]) for p in values(size[0], "frontier points")] == [("dynamic", "tflite"),
                                                                                          ("float16", "tflite")]


def test_axes_keep_noise_small_and_go_log_over_ten_times(page):
    (size,), (speed,) = titled(page, "accuracy vs size"), titled(page, "accuracy vs latency")
    y = layer(size, "points")["encoding"]["y"]["scale"]
    assert y["domain"][1] - y["domain"][0] >= plotdata.MIN_SCORE_SPAN and 0 <= y["domain"][0] < 0.95
    assert layer(size, "points")["encoding"]["x"]["scale"]["type"] == "linear"  # 12.7 .. 33 KB
    assert layer(size, "points")["encoding"]["x"]["scale"]["domain"][0] == 0
    assert layer(speed, "points")["encoding"]["x"]["scale"]["type"] == "log"  # 0.008 .. 0.12 ms: 15x


def test_latency_is_percentiles_with_their_intervals_not_min_max(page):
    (spec,) = titled(page, "latency percentiles")
    marks = layer(spec, "percentiles")["encoding"]
    assert marks["shape"]["scale"]["domain"] == ["p50", "p90", "p95", "p99"]
    assert marks["x"]["scale"]["type"] == "log"
    bars = layer(spec, "intervals")["encoding"]
    assert (bars["x"]["field"], bars["x2"]["field"]) == ("lo", "hi")
    records = values(spec, "percentiles")
    assert "min" not in json.dumps(records) and "max" not in json.dumps(records)
    p99 = next(r for r in records if r["label"] == "int8 / tflite" and r["percentile"] == "p99")
    assert p99["unbounded"] and p99["lo"] == pytest.approx(0.024 * 0.95)
    assert "int8_io / onnxruntime (FAILED)" in {r["label"] for r in records}


def test_each_chart_renders_to_an_image(page):
    version_ = version()
    for spec in page.specs.values():
        png = vl_convert.vegalite_to_png(spec, vl_version=version_)
        width, height = png_size(png)
        assert 500 <= width <= 1400 and 150 <= height <= 900 and len(png) > 10_000, (spec["title"], width, height)
        svg = vl_convert.vegalite_to_svg(spec, vl_version=version_)
        assert "…" not in svg  # no label cut short
    svg = vl_convert.vegalite_to_svg(titled(page, "accuracy vs size")[0], vl_version=version_)
    assert "fp32 reference" in svg and "failed" in svg and "onnxruntime" in svg  # the legend names them
    svg = vl_convert.vegalite_to_svg(titled(page, "latency percentiles")[0], vl_version=version_)
    assert "int8_io / onnxruntime (FAILED)" in svg and "p99" in svg


def test_a_script_end_in_a_name_does_not_break_the_page():
    odd = row("</script><b>x", **latency(0.01))
    page = Page(html_of([odd]))
    assert len(page.specs) == 3 and page.rows == 1
    assert any(p["variant"] == "</script><b>x" for p in values(titled(page, "accuracy vs size")[0], "points"))


def test_without_the_extra_the_page_keeps_its_table_and_says_how(monkeypatch):
    monkeypatch.setitem(sys.modules, "altair", None)  # `import altair` raises ImportError, as when not installed
    text = html_of(ROWS)
    page = Page(text)
    assert page.rows == len(ROWS) and not page.specs and not page.scripts
    assert len(page.notes) == 1 and 'pip install "pytest-tfopt[report]"' in text


def test_nothing_to_plot_says_so():
    page = Page(html_of([row("int8", accuracy=None, size_bytes=None, outcome="error", error="build failed")]))
    assert page.rows == 1 and not page.specs and len(page.notes) == 1


# ---- the choices, without a renderer ------------------------------------------------------------
@pytest.mark.parametrize(("higher", "expected"), [(True, ["a", "c"]), (False, ["a", "b"])])
def test_frontier_keeps_the_points_nothing_beats(higher, expected):
    points = [{"name": "a", "x": 1, "y": 0.5}, {"name": "b", "x": 2, "y": 0.4}, {"name": "c", "x": 3, "y": 0.9},
              {"name": "d", "x": 3, "y": 0.45}]
    assert [p["name"] for p in plotdata.frontier(points, higher)] == expected


@pytest.mark.parametrize(("values_", "higher", "expected"), [
    ([0.971, 0.9733], True, (0.05, 0.0, 1.0)),   # noise of 0.2 points: the axis still spans 5 points
    ([0.99, 1.0], True, (0.05, 0.0, 1.0)),       # slid inside [0, 1], not cut
    ([0.2, 0.9], True, (0.7, 0.0, 1.0)),         # wide data: all of it, with a margin
    ([0.451, 0.452], False, (0.045, -1, 1)),     # an error (mae): 10 % of its size
])
def test_accuracy_axis_spans_enough(values_, higher, expected):
    lo, hi = plotdata.accuracy_domain(values_, higher)
    least, floor, ceiling = expected
    assert hi - lo >= least and floor <= lo <= min(values_) and max(values_) <= hi <= ceiling


def test_cost_axis_is_log_past_ten_times():
    assert plotdata.value_scale([1.0, 9.9])["type"] == "linear"
    scale = plotdata.value_scale([0.01, 0.2])
    assert scale["type"] == "log" and scale["domain"][0] <= 0.01 and scale["domain"][1] >= 0.2
    assert plotdata.log_ticks([0.002, 0.15]) == [0.002, 0.005, 0.01, 0.02, 0.05, 0.1]  # no 0.002 beside 0.003
    assert plotdata.log_ticks([0.0005, 20]) == [0.001, 0.01, 0.1, 1.0, 10.0]  # many decades: powers of ten


# ---- the real paths -------------------------------------------------------------------------------
def test_tfopt_report_writes_the_plots(tmp_path, capsys):
    results = tmp_path / "head.json"
    results.write_text(json.dumps({"schema": "pytest-tfopt/results", "schema_version": 1, "rows": ROWS}))
    out = tmp_path / "r.html"
    assert main(["report", str(results), "-o", str(out)]) == 0, capsys.readouterr().err
    page = Page(out.read_text())
    assert len(page.specs) == 3 and page.rows == len(ROWS)


PLUGIN_SUITE = """
import pytest

@pytest.mark.tfopt_variants("fp32", "int8")
@pytest.mark.max_accuracy_drop(0.0, metric="top1")
def test_a(optimized_model):
    optimized_model.latency()
"""


def test_plugin_report_has_plots_of_the_run(suite, pytester, tmp_path):
    out = pytester.path / "r.html"
    result = suite(PLUGIN_SUITE, f"--tfopt-report={out}", "--tfopt-latency-max-s=0.5")
    result.assert_outcomes(passed=1, failed=1)  # int8 loses a little accuracy: a zero-drop budget breaks
    page = Page(out.read_text())
    (size,) = titled(page, "accuracy vs size")
    assert {(p["variant"], p["status"]) for p in values(size, "points")} == {("fp32", "fp32 reference"),
                                                                             ("int8", "failed")}
    assert values(size, "frontier") and values(size, "fp32")
    for i, spec in enumerate(page.specs.values()):
        png = vl_convert.vegalite_to_png(spec, vl_version=version())
        assert png_size(png)[0] >= 500
        Path(tmp_path / f"chart{i}.png").write_bytes(png)
