"""The plugin's fixtures: the model and data under test, the backend, and the runnable models.

``optimized_model`` (parametrized over variants and backends), ``reference_model`` and the
``tfopt_variant(...)`` factory hand out :class:`~pytest_tfopt.runnable.RunnableModel` objects and remember
them on the test (:data:`USED_MODELS`), so the plugin judges the budgets of every model a test used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from .errors import BackendUnavailable, TfoptError
from .session import TfoptState, state_of
from .workbench import Workbench

#: the runnable models a test obtained (optimized_model, reference_model, tfopt_variant(...)), in order
USED_MODELS = pytest.StashKey[list]()
#: the fixtures that give a test a runnable model (a budget on a test without one would never be checked)
MODEL_FIXTURES = ("optimized_model", "reference_model", "tfopt_variant")


@contextlib.contextmanager
def core_errors(state: TfoptState | None = None) -> Iterator[None]:
    """Turn core errors into one-line test failures (skips for missing backends)."""
    # "from None": the report shows one line, not a "during handling ..." chain
    try:
        yield
    except BackendUnavailable as exc:
        if state is not None and state.strict:
            raise pytest.fail.Exception(f"{exc} (--tfopt-strict)", pytrace=False) from None
        raise pytest.skip.Exception(str(exc)) from None
    except TfoptError as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None


@pytest.fixture(scope="session")
def tfopt_model(request: pytest.FixtureRequest) -> Any:
    """The FP32 source model: a path or a Keras model. Default: ini ``tfopt_model``; override it in conftest."""
    path = state_of(request.config).ini_path("tfopt_model")
    if path is None:
        pytest.fail("no model configured: set ini tfopt_model = PATH or override the tfopt_model fixture", pytrace=False)
    return path


@pytest.fixture(scope="session")
def tfopt_dataset(request: pytest.FixtureRequest) -> Any:
    """The data set: a ``Dataset`` or an ``.npz`` path. Default: ini ``tfopt_dataset``; override it in conftest."""
    return state_of(request.config).ini_path("tfopt_dataset")


@pytest.fixture
def _tfopt_workbench(request: pytest.FixtureRequest, tfopt_model: Any, tfopt_dataset: Any) -> Workbench:
    return state_of(request.config).workbench(tfopt_model, tfopt_dataset)


@pytest.fixture
def calibration_dataset(_tfopt_workbench: Workbench) -> Any:
    """The calibration samples (seeded, ``tfopt_calibration_size`` of the training split)."""
    with core_errors():
        return _tfopt_workbench.calibration()


@pytest.fixture
def eval_dataset(_tfopt_workbench: Workbench) -> Any:
    """The evaluation (test) split."""
    with core_errors():
        return _tfopt_workbench.eval_dataset


@pytest.fixture
def _tfopt_backend_name(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "tflite")


@pytest.fixture
def _tfopt_variant_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tfopt_backend(request: pytest.FixtureRequest, _tfopt_backend_name: str, _tfopt_workbench: Workbench) -> Any:
    """The backend this test runs on (skips, or fails under --tfopt-strict, when it is missing here)."""
    state = state_of(request.config)
    with core_errors(state):
        return _tfopt_workbench.backend(_tfopt_backend_name)


@pytest.fixture
def tfopt_variant(request: pytest.FixtureRequest, tfopt_backend: Any, _tfopt_workbench: Workbench) -> Any:
    """Factory: ``tfopt_variant("int8")`` returns that variant as a runnable model on this test's backend."""
    state = state_of(request.config)

    def make(variant: str, backend: str | None = None) -> Any:
        with core_errors(state):
            model = _tfopt_workbench.runnable(variant, backend or tfopt_backend.name)
        model.begin_test(request.node.nodeid)  # this test's row shows what this test measured
        used = request.node.stash.setdefault(USED_MODELS, [])
        if not any(m is model for m in used):
            used.append(model)  # its budgets are checked after the test body
        return model

    return make


@pytest.fixture
def reference_model(tfopt_variant: Any) -> Any:
    """The fp32 variant on the same backend: what budgets compare against."""
    return tfopt_variant("fp32")


@pytest.fixture
def optimized_model(_tfopt_variant_name: str, tfopt_variant: Any) -> Any:
    """The variant under test (parametrized: ``test_x[int8-tflite]``), a runnable model."""
    return tfopt_variant(_tfopt_variant_name)
