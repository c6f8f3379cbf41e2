"""A third-party backend registered from a conftest runs the same markers as the built-ins.

The backend here is real: LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``), written
against the public :class:`~pytest_tfopt.backends.Backend` / ``Runner`` interface only, as a
user would write one in a conftest.
"""

from __future__ import annotations

import textwrap

CONFTEST = '''
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from pytest_tfopt.backends import Backend, Runner


class RefRunner(Runner):
    """One sample at a time on LiteRT's reference kernels (float I/O variants only)."""

    def __init__(self, content, threads):
        self.interp = Interpreter(model_content=content, num_threads=threads,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.inp["shape"][1:])
        self.info = {"threads": threads, "runtime": "LiteRT reference kernels"}

    def _one(self, sample):
        self.interp.set_tensor(self.inp["index"], sample[None].astype(np.float32))
        self.interp.invoke()
        return self.interp.get_tensor(self.out["index"])[0]

    def predict(self, x, batch_size=None):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == len(self.input_shape):
            x = x[None]
        return np.stack([self._one(s) for s in x]).astype(np.float32)

    def prepare(self, x):
        self.interp.set_tensor(self.inp["index"], np.asarray(x[:1], dtype=np.float32))
        return self.interp.invoke


class RefBackend(Backend):
    name = "litert_ref"
    artifact_suffix = ".tflite"

    def unsupported_reason(self, variant, params=None):
        if variant == "int8_io":
            return "variant 'int8_io' is not available on backend 'litert_ref': it feeds float inputs"
        return None

    def load(self, artifact, threads):
        return RefRunner(artifact.content, threads)


def {hook}(registry):
    registry.register("litert_ref", RefBackend)
'''

TESTS = '''
import pytest

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_accuracy_drop(0.02)
@pytest.mark.max_output_diff(atol=0.5, reference="tflite")
def test_holds(optimized_model):
    assert optimized_model.backend == "litert_ref"
    assert optimized_model.info["runtime"] == "LiteRT reference kernels"

@pytest.mark.tfopt_variants("fp32")
@pytest.mark.max_output_diff(atol=1e-9, reference="tf")
def test_broken(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8_io")
def test_refused(optimized_model):
    pass
'''


def _run(suite, pytester, hook):
    pytester.makeconftest(textwrap.dedent(CONFTEST.replace("{hook}", hook)))
    return suite(TESTS, "--tfopt-backend=litert_ref", "-rs", "-v")


def test_backend_from_a_conftest_function_runs_the_markers(suite, pytester):
    result = _run(suite, pytester, "tfopt_register_backends")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines_random([
        "*test_holds[[]int8-litert_ref[]] PASSED*",
        "*max_output_diff*",  # the failing diff names its budget
        "*SKIPPED*variant 'int8_io' is not available on backend 'litert_ref': it feeds float inputs*",
    ])
    assert "test_broken[fp32-litert_ref] FAILED" in result.stdout.str()


def test_backend_from_the_pluggy_hook(suite, pytester):
    result = _run(suite, pytester, "pytest_tfopt_register_backends")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
