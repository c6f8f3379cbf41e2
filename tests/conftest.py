"""Shared fixtures for pytest-tfopt's own tests: the shipped model and data, one artifact cache."""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "digits_cnn.h5"
DATA = ROOT / "fixtures" / "digits.npz"


@pytest.fixture(autouse=True)
def _no_outer_xdist_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Suites run by these tests must not think they are xdist workers when this suite runs under -n 2."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def model_path() -> Path:
    return MODEL


@pytest.fixture(scope="session")
def data_path() -> Path:
    return DATA


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact cache for the whole test session, so each variant converts once."""
    return tmp_path_factory.mktemp("tfopt-cache")


@pytest.fixture(scope="session")
def bench(shared_cache: Path):
    from pytest_tfopt import Workbench

    return Workbench(MODEL, DATA, cache_dir=shared_cache, threads=1)


@pytest.fixture(scope="session")
def preloaded_runtimes() -> None:
    """Import TensorFlow & co. in this process before in-process pytester runs.

    pytester restores ``sys.modules`` after each in-process run; a TensorFlow
    imported inside one run would be dropped and imported again by the next,
    which its C++ runtime does not survive.
    """
    from pytest_tfopt import tfenv

    tfenv.tensorflow()
    import ai_edge_litert.interpreter  # noqa: F401
    import h5py  # noqa: F401
    import keras  # noqa: F401
    import tf_keras  # noqa: F401

    for optional in ("openvino", "nncf", "onnxruntime", "tf2onnx"):  # compiled modules that cannot load twice either
        with contextlib.suppress(ImportError):
            importlib.import_module(optional)
    # NNCF imports its OpenVINO backend lazily, inside the first quantization, and registers metatypes in
    # registries of modules already loaded: imported inside one pytester run and dropped with it, a second
    # import raises "OVParameterMetatype is already registered". Load them once, for the whole session.
    for lazy in NNCF_OPENVINO_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(lazy)


#: what ``nncf.quantize`` on an OpenVINO model imports on first use (NNCF 2.x)
NNCF_OPENVINO_MODULES = (
    "nncf.openvino.graph.metatypes.openvino_metatypes", "nncf.openvino.graph.nncf_graph_builder",
    "nncf.openvino.graph.model_transformer", "nncf.openvino.engine", "nncf.openvino.hardware.fused_patterns",
    "nncf.openvino.quantization.quantize_model", "nncf.openvino.quantization.quantize_ifmodel",
    "nncf.openvino.statistics.aggregator", "nncf.quantization.algorithms.min_max.openvino_backend",
    "nncf.quantization.algorithms.fast_bias_correction.openvino_backend",
    "nncf.quantization.algorithms.post_training.algorithm", "nncf.quantization.algorithms.accuracy_control.algorithm",
)


@pytest.fixture
def suite(pytester: pytest.Pytester, shared_cache: Path, preloaded_runtimes: None):
    """A pytester project configured with the shipped model and data; returns a runner."""
    pytester.makeini(
        f"""
        [pytest]
        tfopt_model = {MODEL}
        tfopt_dataset = {DATA}
        """
    )

    def run(source: str, *args: str, subprocess: bool = False):
        pytester.makepyfile(test_suite=source)
        cli = ["-p", "no:cacheprovider", f"--tfopt-cache-dir={shared_cache}", "--tfopt-threads=1", *args]
        if subprocess:
            return pytester.runpytest_subprocess(*cli)
        return pytester.runpytest(*cli)

    return run
