"""Budget markers on every backend and precision, conversion and install errors, backend and thread options.

(a) For onnxruntime, openvino, tf and xla, one pytester suite per backend holds every precision:
    ``max_accuracy_drop``, ``max_size_kb``, ``max_output_diff(reference="tf")`` and ``max_latency_ms``
    pass with a loose budget and fail with a budget built to be broken from a value measured first
    through a :class:`Workbench` on the same artifact cache (half the measured drop / diff, just below
    the measured size, 1e-6 ms). Where no such budget exists the test says so and checks it holds:
    ``fp32`` has no accuracy drop against itself, and a variant that equals or beats fp32 on top-1 and
    on the Brier score (measured: onnxruntime float16) has nothing to break. Variants a backend refuses
    here (openvino bf16/float16 on CPUs without them) skip with the reason, which is checked.
(b) A Keras 3 model with an op the converter has no rule for gives a one-line ``ConversionError``
    naming the op and the backend, and nothing is cached.
(c) A missing extra skips with the pip command that installs it (openvino, nncf; onnxruntime and
    tensorrt are covered in ``test_backends.py`` / ``test_backend_tensorrt.py``).
(d) ``--tfopt-backend`` repeated and comma-separated, and ``all``.
(e) ``--tfopt-threads`` / ``Workbench(threads=2)`` reaches each backend's runtime.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import pytest

from pytest_tfopt import ConversionError, Workbench
from pytest_tfopt.backends import openvino as ov_backend

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed: pip install openvino")

PRECISIONS = {
    "onnxruntime": ["fp32", "dynamic", "float16", "int8"],
    "openvino": ["fp32", "int8", "bf16", "float16"],
    "tf": ["fp32", "bf16"],
    "xla": ["fp32", "bf16"],
}
MARKERS = ("max_accuracy_drop", "max_size_kb", "max_output_diff", "max_latency_ms")
LOOSE_DROP = 0.05  # top-1; every precision here measures <= 0.009
LOOSE_LATENCY_MS = 10_000
BROKEN_LATENCY_MS = 1e-6


def brier(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Brier score (lower is better): mean squared distance of the probabilities from the one-hot label."""
    p = np.asarray(y_pred, dtype=np.float64)
    onehot = np.eye(p.shape[1])[np.asarray(y_true).astype(int)]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


BRIER_SOURCE = '''
import numpy as np
import pytest
from pytest_tfopt import metric


@metric(higher_is_better=False)
def brier(y_true, y_pred):
    p = np.asarray(y_pred, dtype=np.float64)
    onehot = np.eye(p.shape[1])[np.asarray(y_true).astype(int)]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
'''


def _g(value: float) -> str:
    """``value`` at two significant digits, as a float literal that prints the same with ``:g``."""
    return repr(float(f"{value:.2g}"))


def _glob(text: str) -> str:
    """``text`` as a literal fnmatch pattern (``[`` opens a character class there)."""
    return text.replace("[", "[[]")


@dataclass
class Case:
    """One precision on one backend: what was measured, the budgets derived from it, what to expect."""

    backend: str
    variant: str
    refused: str | None = None
    size_kb: float = 0.0
    ref_size_kb: float = 0.0
    diff_reference: str = "tf"
    diff: float = 0.0
    top1: float = 0.0
    ref_top1: float = 0.0
    brier_drop: float = 0.0

    @property
    def top1_drop(self) -> float:
        return self.ref_top1 - self.top1

    # budgets ------------------------------------------------------------------
    def accuracy(self, broken: bool) -> str:
        if not broken:
            return repr(LOOSE_DROP)
        if self.top1_drop > 0:
            return _g(self.top1_drop / 2)
        if self.brier_drop > 0:
            return f"{_g(self.brier_drop / 2)}, metric=brier"
        return "0"  # nothing to break: the tightest budget, which must hold

    def size(self, broken: bool) -> str:
        return repr(round(math.floor(self.size_kb * 10) / 10 - 0.1, 1)) if broken else repr(round(2 * self.size_kb))

    def output_diff(self, broken: bool) -> str:
        atol = _g(self.diff / 2) if broken else repr(max(1e-4, float(_g(2 * self.diff))))
        return f"atol={atol}, reference={self.diff_reference!r}"

    def latency(self, broken: bool) -> str:
        return repr(BROKEN_LATENCY_MS if broken else LOOSE_LATENCY_MS)

    def arguments(self, marker: str, broken: bool) -> str:
        return {"max_accuracy_drop": self.accuracy, "max_size_kb": self.size, "max_output_diff": self.output_diff,
                "max_latency_ms": self.latency}[marker](broken)

    def breakable(self, marker: str) -> bool:
        return marker != "max_accuracy_drop" or self.top1_drop > 0 or self.brier_drop > 0

    # what a broken budget prints -------------------------------------------------------------
    def message(self, marker: str) -> str:
        head = f"{self.variant} on {self.backend}"
        if marker == "max_accuracy_drop":
            limit = float(self.accuracy(True).split(",")[0])
            if self.top1_drop > 0:
                return (f"max_accuracy_drop({limit:g}) broken: {head}: top1 {self.top1:.4f} vs fp32 {self.ref_top1:.4f}, "
                        f"drop {self.top1_drop:.4f} > budget {limit:g}")
            return f"max_accuracy_drop({limit:g}) broken: {head}: brier * vs fp32 *, drop * > budget {limit:g}"
        if marker == "max_size_kb":
            limit = float(self.size(True))
            return (f"max_size_kb({limit:g}) broken: {head}: {self.size_kb:.1f} KB (fp32 {self.ref_size_kb:.1f} KB) "
                    f"> budget {limit:g} KB")
        if marker == "max_output_diff":
            atol = float(_g(self.diff / 2))
            return (f"max_output_diff(atol={atol:g}, rtol=0, reference={self.diff_reference!r}) broken: {head} vs fp32 "
                    f"on {self.diff_reference}: max |diff| {self.diff:.3g}, mean *, cosine *, top-1 agreement *; "
                    "* of 4500 outputs beyond atol + rtol*|ref|")
        return (f"max_latency_ms({BROKEN_LATENCY_MS:g}, percentile=50) broken: {head}: p50 * ms * (fp32 * ms) "
                f"> budget {BROKEN_LATENCY_MS:g} ms*")


@pytest.fixture(scope="module")
def wb(shared_cache, model_path, data_path) -> Workbench:
    """The plugin's own settings (threads=1, default variants and calibration): the suites load what it builds."""
    return Workbench(model_path, data_path, cache_dir=shared_cache, threads=1)


@pytest.fixture
def runtimes(preloaded_runtimes):
    """Import the ONNX stack too before in-process pytester runs (see ``preloaded_runtimes``)."""
    for name in ("onnx", "onnxruntime.quantization", "tf2onnx"):
        importlib.import_module(name)


def measure(wb: Workbench, backend: str, variant: str) -> Case:
    """Build (into the shared cache) and measure ``variant`` on ``backend`` the way the markers will."""
    case = Case(backend, variant, refused=wb.backend(backend).unsupported_reason(variant, {}))
    if case.refused:  # skips before any budget is checked; these values only make valid marker arguments
        case.size_kb = case.ref_size_kb = case.diff = 1.0
        return case
    model, ref = wb.runnable(variant, backend), wb.reference(backend)
    # against itself tf fp32 differs by exactly 0, which no atol can break: compare it with tflite fp32; so does
    # openvino fp32 since both run the same serving graph (the model's named signature) on oneDNN's f32 kernels
    case.diff_reference = "tflite" if (backend, variant) in (("tf", "fp32"), ("openvino", "fp32")) else "tf"
    theirs = wb.reference(case.diff_reference).predictions()
    case.diff = float(np.abs(model.predictions().astype(np.float64) - theirs).max())
    case.size_kb, case.ref_size_kb = model.size_bytes / 1024, ref.size_bytes / 1024
    case.top1, case.ref_top1 = model.evaluate(), ref.evaluate()
    y = wb.eval_dataset.y
    case.brier_drop = brier(y, model.predictions()) - brier(y, ref.predictions())
    assert case.diff > 0, f"{variant} on {backend}: outputs identical to fp32 on {case.diff_reference}"
    assert case.top1_drop < LOOSE_DROP, f"{variant} on {backend}: top-1 drop {case.top1_drop}"
    return case


def suite_source(cases: list[Case]) -> str:
    lines = [BRIER_SOURCE]
    for case in cases:
        v = case.variant
        lines += ["", f'@pytest.mark.tfopt_variants("{v}")']
        lines += [f"@pytest.mark.{m}({case.arguments(m, broken=False)})" for m in MARKERS]
        lines += [f"def test_holds_{v}(optimized_model):", "    pass"]
        for m in MARKERS:
            lines += ["", f'@pytest.mark.tfopt_variants("{v}")', f"@pytest.mark.{m}({case.arguments(m, broken=True)})",
                      f"def test_broken_{m}_{v}(optimized_model):", "    pass"]
    return "\n".join(lines) + "\n"


# ---- (a) every precision's markers pass and fail, one run per backend --------------------------
@pytest.mark.parametrize("backend", list(PRECISIONS))
def test_markers_pass_and_fail_on_each_precision(suite, wb, runtimes, backend):
    if backend == "openvino" and not HAS_OPENVINO:
        pytest.skip("openvino is not installed: pip install openvino")
    cases = [measure(wb, backend, v) for v in PRECISIONS[backend]]
    result = suite(suite_source(cases), "-rs", "-v", f"--tfopt-backend={backend}", "--tfopt-perf=enforce")
    out = result.stdout.str()
    ran = [c for c in cases if not c.refused]
    unbreakable = [(c, m) for c in ran for m in MARKERS if not c.breakable(m)]
    result.assert_outcomes(passed=len(ran) + len(unbreakable), failed=4 * len(ran) - len(unbreakable),
                           skipped=5 * (len(cases) - len(ran)))
    for case in ran:
        v, head = case.variant, f"{case.variant}-{backend}"
        assert f"test_holds_{v}[{head}] PASSED" in out
        summary = [ln for ln in out.splitlines() if ln.startswith(f"test_holds_{v}[{head}]")]
        assert summary and all(f"{m} PASS" in summary[-1] for m in MARKERS), summary
        for m in MARKERS:
            if case.breakable(m):
                assert f"test_broken_{m}_{v}[{head}] FAILED" in out
                result.stdout.fnmatch_lines([f"*{_glob(case.message(m))}*"])
            else:
                assert f"test_broken_{m}_{v}[{head}] PASSED" in out
    # what had nothing to break: fp32 against itself everywhere, onnxruntime float16 (no worse on top-1 or Brier)
    assert {(c.variant, m) for c, m in unbreakable} >= {("fp32", "max_accuracy_drop")}
    assert all(m == "max_accuracy_drop" and (c.variant == "fp32" or c.top1_drop <= 0) for c, m in unbreakable)
    for case in cases:
        if case.refused:
            assert case.variant in ("bf16", "float16") and backend == "openvino"
            assert "is not available on backend 'openvino' on this CPU" in case.refused
            assert "so it would silently run f32" in case.refused
            skips = [ln for ln in result.stdout.lines if ln.startswith("SKIPPED") and ln.endswith(f": {case.refused}")]
            assert len(skips) == 5, skips  # its loose test and its four broken ones, each with the reason


# ---- (b) an op the converter cannot convert -----------------------------------------------------
def _svd_model():
    """A small Keras 3 model whose layer computes singular values (TF op ``Svd``): no TFLite builtin,
    no OpenVINO conversion rule, no ONNX op."""
    import keras
    import tensorflow as tf

    class SingularValues(keras.layers.Layer):
        def call(self, x):
            return tf.linalg.svd(x, compute_uv=False)

    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4), name="matrix")
    out = keras.layers.Dense(3, activation="softmax")(SingularValues()(inp))
    model = keras.Model(inp, out, name="svd_model")
    x = np.random.default_rng(0).random((40, 4, 4), dtype=np.float32)
    return model, (x, np.arange(40) % 3)


def _artifacts(cache) -> list[str]:
    """What the cache holds besides lock files (a failed build leaves only its ``KEY.lock``)."""
    return sorted(p.name for p in cache.iterdir() if p.suffix != ".lock") if cache.exists() else []


@needs_openvino
def test_unconvertible_op_on_openvino_is_one_line_naming_op_and_backend(tmp_path):
    model, data = _svd_model()
    cache = tmp_path / "cache"
    bench = Workbench(model, data, cache_dir=cache, threads=1)
    for _ in range(2):  # the second attempt fails the same way: nothing was cached by the first
        with pytest.raises(ConversionError) as info:
            bench.build("fp32", "openvino")
        message = str(info.value)
        assert message == ("backend 'openvino' could not convert svd_model: no conversion rule for op Svd "
                           "(run it on backend tflite or tf, or replace the op)")
        assert info.value.__suppress_context__  # raised `from None`: no OpenVINO traceback chained
    assert _artifacts(cache) == []
    assert len(list(cache.glob("*.lock"))) == 1


def test_unconvertible_op_on_tflite_names_the_op(tmp_path):
    model, data = _svd_model()
    cache = tmp_path / "cache"
    with pytest.raises(ConversionError) as info:
        Workbench(model, data, cache_dir=cache, threads=1).build("fp32", "tflite")
    message = str(info.value)
    assert "\n" not in message and message.startswith("TFLiteConverter could not build fp32 for svd_model: ")
    assert "'tf.Svd' op is neither a custom op nor a flex op" in message
    assert _artifacts(cache) == []


def test_unconvertible_op_on_onnxruntime_is_one_line_naming_op_and_backend(tmp_path):
    model, data = _svd_model()
    cache = tmp_path / "cache"
    bench = Workbench(model, data, cache_dir=cache, threads=1)
    with pytest.raises(ConversionError) as info:
        bench.build("fp32", "onnxruntime")
    message = str(info.value)
    assert "\n" not in message and "Svd" in message and "onnxruntime" in message
    assert _artifacts(cache) == []


# ---- (c) an extra that is not installed --------------------------------------------------------
SIMPLE = """
def test_it(optimized_model):
    assert optimized_model.size_bytes > 0
"""


def test_missing_openvino_skips_with_the_pip_command(suite, monkeypatch):
    real = ov_backend.importlib.util.find_spec
    monkeypatch.setattr(ov_backend.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    result = suite(SIMPLE, "-rs", "--tfopt-backend=openvino", "--tfopt-variants=fp32,int8,bf16")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["SKIPPED [[]3[]] *: backend 'openvino' needs openvino: pip install openvino "
                                 "(or pytest-tfopt[[]openvino[]])"])
    strict = suite(SIMPLE, "--tfopt-backend=openvino", "--tfopt-variants=fp32", "--tfopt-strict")
    strict.assert_outcomes(errors=1)
    strict.stdout.fnmatch_lines(["*backend 'openvino' needs openvino: pip install openvino*(--tfopt-strict)*"])


@needs_openvino
def test_missing_nncf_skips_int8_on_openvino_with_the_pip_command(suite, monkeypatch):
    monkeypatch.setattr(ov_backend, "nncf_available", lambda: False)
    result = suite(SIMPLE, "-rs", "--tfopt-backend=openvino", "--tfopt-variants=int8")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*variant 'int8' on backend 'openvino' needs NNCF for post-training "
                                 "quantization: pip install nncf (or pytest-tfopt[[]openvino[]])"])


# ---- (d) --tfopt-backend repeated, comma-separated, all ----------------------------------------
def _collected(result) -> list[str]:
    return [ln.split("::", 1)[1] for ln in result.stdout.lines if ln.startswith("test_suite.py::")]


def test_backend_option_repeated_and_comma_separated(suite):
    result = suite(SIMPLE, "--collect-only", "-q", "--tfopt-variants=fp32,int8",
                   "--tfopt-backend=tflite", "--tfopt-backend=onnxruntime,openvino")
    assert result.ret == 0
    assert _collected(result) == [f"test_it[{v}-{b}]" for v in ("fp32", "int8")
                                  for b in ("tflite", "onnxruntime", "openvino")]
    again = suite(SIMPLE, "--collect-only", "-q", "--tfopt-variants=fp32",
                  "--tfopt-backend=openvino,tflite", "--tfopt-backend=tflite")  # order kept, duplicate dropped
    assert _collected(again) == ["test_it[fp32-openvino]", "test_it[fp32-tflite]"]


def test_backend_all_is_every_backend_available_here(suite, monkeypatch):
    monkeypatch.delenv("TFOPT_SERVING_URL", raising=False)
    assert not any(os.access(os.path.join(d, "tensorflow_model_server"), os.X_OK)
                   for d in os.environ.get("PATH", "").split(os.pathsep) if d)
    result = suite(SIMPLE, "--collect-only", "-q", "--tfopt-variants=fp32", "--tfopt-backend=all")
    assert result.ret == 0
    backends = [re.fullmatch(r"test_it\[fp32-(\w+)\]", t).group(1) for t in _collected(result)]
    expected = ["onnxruntime", *(["openvino"] if HAS_OPENVINO else []), "tf", "tflite", "xla"]
    assert backends == expected  # sorted by name; serving (no URL, no binary) and tensorrt (no GPU) left out
    mixed = suite(SIMPLE, "--collect-only", "-q", "--tfopt-variants=fp32", "--tfopt-backend=tflite,all")
    assert [re.fullmatch(r"test_it\[fp32-(\w+)\]", t).group(1) for t in _collected(mixed)] == [
        "tflite", *[b for b in expected if b != "tflite"]]  # 'all' among others: expanded in place, no repeats


# ---- (e) --tfopt-threads reaches every backend -------------------------------------------------
THREADS_SUITE = """
def test_threads(optimized_model):
    info = optimized_model.info
    assert info["threads"] == 2, info
    if optimized_model.backend == "onnxruntime":
        assert optimized_model.runner._session.get_session_options().intra_op_num_threads == 2
    print("THREADS", optimized_model.backend, info["threads"], info.get("tf_intra_op_threads"))
"""


def test_threads_option_reaches_each_backend_through_the_plugin(suite, wb, runtimes):
    backends = ["tflite", "tf", "onnxruntime", *(["openvino"] if HAS_OPENVINO else [])]
    for backend in backends:
        wb.build("fp32", backend)  # cached: the run only loads (threads are not part of the cache key)
    result = suite(THREADS_SUITE, "-v", "-s", f"--tfopt-backend={','.join(backends)}", "--tfopt-variants=fp32",
                   "--tfopt-threads=2")  # the last --tfopt-threads wins over the fixture's 1
    result.assert_outcomes(passed=len(backends))
    result.stdout.fnmatch_lines_random([f"*THREADS {b} 2 *" for b in backends])


def test_threads_reach_each_runtime(wb, shared_cache, model_path, data_path):
    import tensorflow as tf

    two = Workbench(model_path, data_path, cache_dir=shared_cache, threads=2)
    tflite = two.backend("tflite").load(wb.build("fp32", "tflite"), two.threads)
    assert tflite.info["threads"] == 2 and tflite.threads == 2  # LiteRT Interpreter(num_threads=2); no getter
    ort = two.runnable("fp32", "onnxruntime")
    assert ort.info["threads"] == 2
    assert ort.runner._session.get_session_options().intra_op_num_threads == 2  # read back from the session
    if HAS_OPENVINO:
        assert two.runnable("fp32", "openvino").info["threads"] == 2  # INFERENCE_NUM_THREADS, read back
    # TensorFlow's intra-op pool is process-wide and fixed by its first op: the tf runner records the
    # threads it was asked for ("threads") and, separately, what TensorFlow really uses
    process = tf.config.threading.get_intra_op_parallelism_threads()
    for threads in (1, 2):
        runner = two.backend("tf").load(wb.build("fp32", "tf"), threads)
        assert runner.info["threads"] == threads
        assert runner.info["tf_intra_op_threads"] == process
        runner.close()
