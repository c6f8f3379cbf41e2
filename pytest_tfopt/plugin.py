"""The pytest plugin: options, markers, fixtures and the summary, over the core.

Nothing here converts or measures: it turns options and markers into
:class:`~pytest_tfopt.workbench.Workbench` calls and core results into outcomes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import baseline, budgets_file, report, security, tfenv
from .backends import default_registry as default_backends
from .budgets import MARKER_DOCS, PARSERS, evaluate, parse_marker
from .cache import ArtifactCache, CacheStats
from .errors import BackendUnavailable, CacheError, TfoptError, UsageError
from .outputs import check_writable, check_writable_dir
from .report.terminal import table_lines
from .results import JUNIT_FIELDS, result_row
from .variants import default_registry as default_variants
from .variants import split_variants
from .workbench import DEFAULT_CALIBRATION_SIZE, Workbench

DEFAULT_VARIANTS = "dynamic,float16,int8"
ROW_KEY = "tfopt"
STATE = pytest.StashKey["TfoptState"]()
#: the runnable models a test obtained (optimized_model, reference_model, tfopt_variant(...)), in order
USED_MODELS = pytest.StashKey[list]()
MODEL_FIXTURES = ("optimized_model", "reference_model", "tfopt_variant")
INCONCLUSIVE_POLICIES = ("warn", "fail", "pass")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tfopt", "model-optimization regression tests (pytest-tfopt)")
    group.addoption("--tfopt-backend", action="append", default=None, metavar="NAME[,NAME]",
                    help="backend(s) to run variants on, comma-separated or repeated; 'all' = every backend "
                         "available here (default: tflite)")
    group.addoption("--tfopt-variants", default=None, metavar="LIST",
                    help="comma list of variants for every test using optimized_model; overrides markers and ini "
                         "(e.g. int8,float16)")
    group.addoption("--tfopt-cache-dir", default=None, metavar="DIR",
                    help="artifact cache directory (default: tfopt/ inside pytest's cache dir)")
    group.addoption("--tfopt-cache-trust-shared", action="store_true", default=False,
                    help="the cache directory is a deliberately shared team cache: accept it although others can "
                         "write it; entries are then signed with $TFOPT_CACHE_SECRET, and unsigned or badly signed "
                         "ones are rebuilt (see docs/security.md)")
    group.addoption("--tfopt-rebuild", action="store_true", default=False,
                    help="ignore cached artifacts and build every variant again")
    group.addoption("--tfopt-threads", type=int, default=None, metavar="N",
                    help="runtime threads on every backend (LiteRT num_threads, TF intra-op, ONNX Runtime intra-op, "
                         "OpenVINO INFERENCE_NUM_THREADS, TF Serving); default: the cores shared among xdist workers")
    group.addoption("--tfopt-strict", action="store_true", default=False,
                    help="fail, instead of skip, tests whose backend or variant cannot run here")
    group.addoption("--tfopt-pin-cores", action="store_true", default=False,
                    help="pin each xdist worker to its own core(s) so latency measurements do not disturb each other "
                         "(each worker then has fewer threads; see README)")
    group.addoption("--tfopt-perf", choices=("enforce", "record", "off"), default="enforce",
                    help="latency budgets: enforce (fail when broken), record (measure and report, never fail), "
                         "off (do not measure) (default: enforce)")
    group.addoption("--tfopt-inconclusive", choices=INCONCLUSIVE_POLICIES, default=None,
                    help="a verdict whose interval straddles its budget: warn (shown INCONCLUSIVE, exit 0; the "
                         "default: the data cannot decide, which is not a regression), fail (the test fails: for "
                         "gates that must decide), pass (counted as passed) (ini tfopt_inconclusive)")
    group.addoption("--tfopt-budgets", default=None, metavar="PATH",
                    help="budgets file (default: tfopt-budgets.toml or [tool.tfopt.budgets] in pyproject.toml)")
    group.addoption("--tfopt-save-baseline", default=None, metavar="PATH",
                    help="save every result as a baseline (schema-versioned JSON)")
    group.addoption("--tfopt-baseline", default=None, metavar="PATH",
                    help="compare against this baseline: change thresholds from the budgets file fail their tests")
    group.addoption("--tfopt-update-baseline", action="store_true", default=False,
                    help="ratchet: rewrite --tfopt-baseline where results improved")
    group.addoption("--tfopt-report", action="append", default=[], metavar="PATH",
                    help="write a report; format by extension: .json, .md, .html, .benchmark.json (repeatable)")
    group.addoption("--tfopt-tensorboard", default=None, metavar="DIR",
                    help="write every metric as TensorBoard scalars, one run per variant and backend")
    group.addoption("--tfopt-serving-url", default=None, metavar="URL",
                    help="backend serving: REST URL of a TensorFlow Serving server that serves the artifacts "
                         "(e.g. http://localhost:8501; default: $TFOPT_SERVING_URL, else start "
                         "tensorflow_model_server from PATH)")
    group.addoption("--tfopt-serving-timeout", type=float, default=30.0, metavar="SECONDS",
                    help="backend serving: timeout of every request and of a spawned server's start-up (default: 30)")
    parser.addini("tfopt_model", "source model: .keras/.h5 file, SavedModel dir or .tflite (relative to the ini file)")
    parser.addini("tfopt_dataset", ".npz data set with x_train,y_train,x_test,y_test or x,y (relative to the ini file)")
    parser.addini("tfopt_inconclusive", "warn, fail or pass: what an INCONCLUSIVE verdict does (default: warn)",
                  default="warn")
    parser.addini("tfopt_signature", "SavedModel / .tflite signature to test (default: serving_default)",
                  default="serving_default")
    parser.addini("tfopt_variants", f"default variants (comma list); default: {DEFAULT_VARIANTS}", default=DEFAULT_VARIANTS)
    parser.addini("tfopt_calibration_size", "calibration samples drawn (seeded) from the training split",
                  default=str(DEFAULT_CALIBRATION_SIZE))
    parser.addini("tfopt_keras", "auto (tf.keras as TensorFlow ships it) or legacy (TF_USE_LEGACY_KERAS=1, tf_keras)",
                  default="auto")


class TfoptState:
    """Per-session state: settings, registries, workbenches and collected rows."""

    def __init__(self, config: pytest.Config) -> None:
        opt = config.option
        self.config = config
        self.strict = bool(opt.tfopt_strict)
        self.threads = tfenv.default_threads() if opt.tfopt_threads is None else opt.tfopt_threads
        if self.threads < 1:
            raise UsageError(f"--tfopt-threads={opt.tfopt_threads}: use 1 or more threads")
        self.rebuild = bool(opt.tfopt_rebuild)
        self.cache_dir = opt.tfopt_cache_dir or self._default_cache_dir()
        self.trust_shared = bool(opt.tfopt_cache_trust_shared)
        self.inconclusive = opt.tfopt_inconclusive or (config.getini("tfopt_inconclusive") or "warn").strip()
        if self.inconclusive not in INCONCLUSIVE_POLICIES:
            raise UsageError(f"ini tfopt_inconclusive = {self.inconclusive!r}: use one of {', '.join(INCONCLUSIVE_POLICIES)}")
        # a directory nothing can be written to, or one others could plant artifacts in, is a usage error
        # (exit 4), once, before collection
        try:
            ArtifactCache(self.cache_dir, trust_shared=self.trust_shared).check()
        except CacheError as exc:
            raise UsageError(str(exc)) from None
        self.calibration_size = _int_ini(config, "tfopt_calibration_size")
        self.variants = default_variants()
        self.backends = default_backends()
        self.backends.register("serving", functools.partial(_serving_backend, opt.tfopt_serving_url,
                                                            opt.tfopt_serving_timeout))
        config.hook.pytest_tfopt_register_variants.call_historic(kwargs={"registry": self.variants})
        config.hook.pytest_tfopt_register_backends.call_historic(kwargs={"registry": self.backends})
        self._backend_option = opt.tfopt_backend
        self._backend_list: list[str] | None = None
        self.notes: list[str] = []
        self.cli_variants = split_variants(opt.tfopt_variants) if opt.tfopt_variants is not None else None
        if self.cli_variants == []:
            raise UsageError(f"--tfopt-variants={opt.tfopt_variants!r} names no variant: give e.g. "
                             "--tfopt-variants=int8,float16 (or leave it out for the markers and ini)")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if self.threads > cores:
            self.notes.append(f"WARNING --tfopt-threads={self.threads} is more than the {cores} cores here: the "
                              "runtimes oversubscribe them and latencies measure the contention")
        self.ini_variants = split_variants(config.getini("tfopt_variants") or DEFAULT_VARIANTS)
        self.rows: list[dict[str, Any]] = []
        for path in opt.tfopt_report:  # every output is checked now, not after the last test
            report.format_of(path)
            check_writable(path, "--tfopt-report")
        if opt.tfopt_save_baseline:
            check_writable(opt.tfopt_save_baseline, "--tfopt-save-baseline")
        if opt.tfopt_update_baseline and opt.tfopt_baseline:
            check_writable(opt.tfopt_baseline, "--tfopt-update-baseline: --tfopt-baseline")
        if opt.tfopt_tensorboard:
            if os.path.isfile(opt.tfopt_tensorboard):
                raise UsageError(f"--tfopt-tensorboard {opt.tfopt_tensorboard!r} is a file: give a directory for the runs")
            check_writable_dir(opt.tfopt_tensorboard, "--tfopt-tensorboard")
        if opt.tfopt_tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise UsageError("--tfopt-tensorboard needs TensorBoard: pip install tensorboard (or pytest-tfopt[tensorboard])")
        if opt.tfopt_update_baseline and not opt.tfopt_baseline:
            raise UsageError("--tfopt-update-baseline needs --tfopt-baseline PATH (the baseline to ratchet)")
        self.budgets_file = budgets_file.find(opt.tfopt_budgets, str(config.rootpath))
        self.baseline = baseline.load(opt.tfopt_baseline) if opt.tfopt_baseline else None
        self.baseline_rows = {baseline.row_key(r): r for r in (self.baseline or {}).get("rows", [])}
        self.same_hardware = self.baseline is None or baseline.same_hardware(self.baseline)
        if not self.same_hardware:
            self.notes.append(f"baseline {opt.tfopt_baseline} was measured on other hardware "
                              f"({self.baseline.get('hardware', {}).get('cpu', '?')}): only accuracy and size are compared")
        self.cache_stats = CacheStats()
        self._benches: dict[tuple[Any, Any], tuple[Any, Any, Workbench]] = {}

    def _default_cache_dir(self) -> str:
        cache = getattr(self.config, "cache", None)
        path = str(cache.mkdir("tfopt")) if cache is not None else str(self.config.rootpath / ".tfopt_cache")
        security.tighten(path)
        return path

    def canonical(self, variant: str) -> str:
        """The canonical id of a variant written in a budgets file (itself when it does not parse: a glob)."""
        try:
            return self.variants.resolve(variant).id
        except TfoptError:
            return variant

    @property
    def backend_names(self) -> list[str]:
        """``--tfopt-backend`` resolved; first needed at collection, after conftests registered their backends."""
        if self._backend_list is None:
            with _usage_errors():
                self._backend_list = self._backend_names(self._backend_option)
        return self._backend_list

    def _backend_names(self, raw: list[str] | None) -> list[str]:
        names = [n.strip() for item in (raw or ["tflite"]) for n in item.split(",") if n.strip()]
        available = [n for n in self.backends.names() if "all" in names and not self.backends.get(n).unavailable_reason()]
        names = [m for n in names for m in (available if n == "all" else [n])]
        for n in names:
            self.backends.get(n)
        return list(dict.fromkeys(names))

    def ini_path(self, name: str) -> str | None:
        value = self.config.getini(name)
        if not value:
            return None
        base = self.config.inipath.parent if self.config.inipath else self.config.rootpath
        return str((base / value).resolve()) if not os.path.isabs(value) else value

    def workbench(self, model: Any, dataset: Any) -> Workbench:
        key = (_identity(model), _identity(dataset))
        if key not in self._benches:
            bench = Workbench(model, dataset, cache_dir=self.cache_dir, threads=self.threads, rebuild=self.rebuild,
                              calibration_size=self.calibration_size, variants=self.variants, backends=self.backends,
                              log=self.progress, signature=self.config.getini("tfopt_signature") or "serving_default",
                              trust_shared=self.trust_shared)
            self._benches[key] = (model, dataset, bench)  # keep the objects alive so ids stay unique
        return self._benches[key][2]

    def pytest_plugin_registered(self, plugin: object) -> None:
        """Call ``tfopt_register_variants``/``tfopt_register_backends`` of plugins and conftests.

        pytest replays this hook for every plugin registered before this one, too.
        """
        for attr, registry in (("tfopt_register_variants", self.variants), ("tfopt_register_backends", self.backends)):
            register = getattr(plugin, attr, None)
            if callable(register):
                register(registry=registry)

    def progress(self, message: str) -> None:
        """Progress of long builds (a line per stage and epoch) on the terminal, unless -q."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and self.config.get_verbosity() >= 0:
            with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
                reporter.ensure_newline()
                reporter.write_line(f"[tfopt] {message}")
        else:
            logging.getLogger("pytest_tfopt").info(message)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect result rows (in the xdist controller they arrive in workers' reports)."""
        if report.when not in ("call", "setup"):
            return
        for name, value in report.user_properties:
            if name == ROW_KEY and isinstance(value, dict):
                self.rows.append(value)

    def unmatched_budgets(self) -> list[str]:
        """A warning line for every budgets-file entry that selected no result of this run."""
        if self.budgets_file is None:
            return []
        results = [(r["test"], r["variant"], r["backend"]) for r in self.rows]
        return [f"WARNING budgets file {self.budgets_file.path}: {entry} matched no result: check its test/variant/"
                "backend selectors (node ids match literally or as a glob)"
                for entry in self.budgets_file.unmatched(results, self.canonical)]

    def total_cache_stats(self) -> CacheStats:
        total = CacheStats(self.cache_stats.built, self.cache_stats.reused, self.cache_stats.build_seconds)
        for _, _, bench in self._benches.values():
            s = bench.cache.stats
            total.built += s.built
            total.reused += s.reused
            total.build_seconds += s.build_seconds
        return total


def _serving_backend(url: str | None, timeout_s: float) -> Any:
    from .backends.serving import ServingBackend  # lazy: only when the backend is used

    return ServingBackend(url=url, timeout_s=timeout_s)


def _identity(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else id(value)


def _int_ini(config: pytest.Config, name: str) -> int:
    raw = config.getini(name)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise UsageError(f"ini {name} = {raw!r} is not an integer: e.g. {name} = 200") from None
    if value < 1:
        raise UsageError(f"ini {name} = {value}: use 1 or more samples")
    return value


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    try:
        yield
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


@contextlib.contextmanager
def _core(state: TfoptState | None = None) -> Iterator[None]:
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


PATH_OPTIONS = ("--tfopt-cache-dir", "--tfopt-budgets", "--tfopt-save-baseline", "--tfopt-baseline",
                "--tfopt-report", "--tfopt-tensorboard")


def _check_path_options_spelling(config: pytest.Config) -> None:
    """``--tfopt-cache-dir /some/dir`` (a space, not ``=``): pytest looks for its ini file before it knows
    the plugin's options and takes ``/some/dir`` for a test path, which can move the rootdir and the ini file
    it reads (someone else's configuration). Stop with one line when that value changed either."""
    args = list(config.invocation_params.args)
    spaced = [(args[i], args[i + 1]) for i in range(len(args) - 1) if args[i] in PATH_OPTIONS]
    if not spaced:
        return
    try:
        from _pytest.config.findpaths import determine_setup

        positional = config._parser.parse_known_args(args).file_or_dir  # the plugin's options are known now

        def setup(extra: list[str]) -> tuple[Any, Any]:
            rootpath, inipath, *_ = determine_setup(
                inifile=config.option.inifilename, override_ini=config.option.override_ini,
                args=[*positional, *extra], rootdir_cmd_arg=config.option.rootdir or None,
                invocation_dir=config.invocation_params.dir)
            return rootpath, inipath

        right = setup([])
        for option, value in spaced:
            if setup([value]) != right:
                raise pytest.UsageError(
                    f"{option} {value}: pytest took {value!r} for a test path while looking for its ini file "
                    f"(rootdir: {config.rootpath}); write {option}={value} (with '=') to keep this project's "
                    "configuration"
                )
    except (ImportError, TypeError, AttributeError):  # another pytest's internals: no check
        return


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tfopt_variants(*names): variants to parametrize optimized_model over")
    for _name, doc in MARKER_DOCS.items():
        config.addinivalue_line("markers", doc)
    _check_path_options_spelling(config)
    if config.option.tfopt_pin_cores:
        _pin_worker()
    with _usage_errors():
        tfenv.configure(tfenv.TfSettings(keras=config.getini("tfopt_keras") or "auto",
                                         threads=config.option.tfopt_threads or tfenv.default_threads()))
        state = TfoptState(config)
    config.stash[STATE] = state
    config.pluginmanager.register(state, "tfopt-state")  # replays plugin registration: conftest functions run
    state.backend_names  # noqa: B018 - a typo in --tfopt-backend is a usage error before collection


def _pin_worker() -> None:
    """Give xdist worker gwN the N-th share of this process's cores (before TensorFlow starts)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index = int(worker[2:])
    share = [c for i, c in enumerate(cores) if i % count == index % count] or [cores[index % len(cores)]]
    os.sched_setaffinity(0, share)


def _state(config: pytest.Config) -> TfoptState:
    return config.stash[STATE]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = _state(metafunc.config)
    if "_tfopt_variant_name" in metafunc.fixturenames:
        variants = state.cli_variants
        if variants is None:
            marker = metafunc.definition.get_closest_marker("tfopt_variants")
            if marker is not None:
                # an empty marker parametrizes with "": a usage error naming the test at collection
                variants = [v for a in marker.args for v in split_variants(str(a))] or [""]
        metafunc.parametrize("_tfopt_variant_name", _unique_variants(metafunc, state, variants or state.ini_variants),
                             indirect=True)
    if "_tfopt_backend_name" in metafunc.fixturenames:
        metafunc.parametrize("_tfopt_backend_name", state.backend_names, indirect=True)


def _unique_variants(metafunc: pytest.Metafunc, state: TfoptState, variants: list[str]) -> list[str]:
    """``variants`` with repeats (also in other spellings of one canonical id) dropped, with a warning."""
    seen: dict[str, str] = {}
    for v in variants:
        try:
            key = state.variants.resolve(v).id
        except TfoptError:
            key = v  # reported with the test's name at collection
        if key in seen:
            metafunc.definition.warn(pytest.PytestWarning(
                f"tfopt: variant {v!r} is listed twice (as {seen[key]!r}): it runs once"))
            continue
        seen[key] = v
    return list(seen.values())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate variant names and budget markers now, so a typo is a usage error naming the test."""
    state = _state(config)
    for item in items:
        try:
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "_tfopt_variant_name" in callspec.params:
                if callspec.params["_tfopt_variant_name"] == "":
                    raise UsageError("@tfopt_variants() names no variant: give e.g. "
                                     "@pytest.mark.tfopt_variants(\"int8\") or remove the marker")
                state.variants.resolve(callspec.params["_tfopt_variant_name"])
            for name in PARSERS:
                for mark in item.iter_markers(name):
                    parse_marker(name, mark.args, mark.kwargs)
            _check_budgets_have_a_model(item)
        except UsageError as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from None


def _check_budgets_have_a_model(item: pytest.Item) -> None:
    """A budget (or tfopt_variants) marker on a test that can get no runnable model would never be checked."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & set(MODEL_FIXTURES):
        return
    budgets = sorted({name for name in PARSERS if _closest_markers(item, name)})
    if item.get_closest_marker("tfopt_variants") is not None:
        budgets.append("tfopt_variants")
    if budgets:
        raise UsageError(
            f"{', '.join(budgets)} on a test that uses no model would never be checked: request the optimized_model "
            "fixture (or reference_model, or tfopt_variant(...) for models built in the test body)"
        )


# ---- fixtures ------------------------------------------------------------------
@pytest.fixture(scope="session")
def tfopt_model(request: pytest.FixtureRequest) -> Any:
    """The FP32 source model: a path or a Keras model. Default: ini ``tfopt_model``; override it in conftest."""
    path = _state(request.config).ini_path("tfopt_model")
    if path is None:
        pytest.fail("no model configured: set ini tfopt_model = PATH or override the tfopt_model fixture", pytrace=False)
    return path


@pytest.fixture(scope="session")
def tfopt_dataset(request: pytest.FixtureRequest) -> Any:
    """The data set: a ``Dataset`` or an ``.npz`` path. Default: ini ``tfopt_dataset``; override it in conftest."""
    return _state(request.config).ini_path("tfopt_dataset")


@pytest.fixture
def _tfopt_workbench(request: pytest.FixtureRequest, tfopt_model: Any, tfopt_dataset: Any) -> Workbench:
    return _state(request.config).workbench(tfopt_model, tfopt_dataset)


@pytest.fixture
def calibration_dataset(_tfopt_workbench: Workbench) -> Any:
    """The calibration samples (seeded, ``tfopt_calibration_size`` of the training split)."""
    with _core():
        return _tfopt_workbench.calibration()


@pytest.fixture
def eval_dataset(_tfopt_workbench: Workbench) -> Any:
    """The evaluation (test) split."""
    with _core():
        return _tfopt_workbench.evaluation


@pytest.fixture
def _tfopt_backend_name(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "tflite")


@pytest.fixture
def _tfopt_variant_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tfopt_backend(request: pytest.FixtureRequest, _tfopt_backend_name: str, _tfopt_workbench: Workbench) -> Any:
    """The backend this test runs on (skips, or fails under --tfopt-strict, when it is missing here)."""
    state = _state(request.config)
    with _core(state):
        return _tfopt_workbench.backend(_tfopt_backend_name)


@pytest.fixture
def tfopt_variant(request: pytest.FixtureRequest, tfopt_backend: Any, _tfopt_workbench: Workbench) -> Any:
    """Factory: ``tfopt_variant("int8")`` returns that variant as a runnable model on this test's backend."""
    state = _state(request.config)

    def make(variant: str, backend: str | None = None) -> Any:
        with _core(state):
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


# ---- budgets and results ----------------------------------------------------
def _budgets(item: pytest.Item, state: TfoptState, model: Any) -> tuple[list[Any], list[Any]]:
    """What ``item`` states for ``model``: its closest markers, the budgets file's entries and the baseline row,
    selected in the core (:func:`pytest_tfopt.budgets.evaluate.select`)."""
    marked = {name: [parse_marker(name, m.args, m.kwargs) for m in _closest_markers(item, name)] for name in PARSERS}
    from_file: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    if state.budgets_file is not None:
        from_file, changes = state.budgets_file.select(item.nodeid, model.variant, model.backend, state.canonical)
    base = state.baseline_rows.get((item.nodeid, model.variant, model.backend))
    return evaluate.select(marked, from_file, changes, base, state.baseline is not None, state.same_hardware)


def _closest_markers(item: pytest.Item, name: str) -> list[Any]:
    """Every ``name`` marker of the closest node that has one: several on a test all apply (e.g. a p50
    and a p99 ``max_latency_ms``), and a test's own markers override its class's or module's."""
    found: list[Any] = []
    owner = None
    for node, mark in item.iter_markers_with_node(name):
        if owner is not None and node is not owner:
            break
        owner = node
        found.append(mark)
    return found[::-1]  # in the order they are written, top to bottom


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """After the body: judge the test's budgets on its model(s) and record a row for each.

    The model judged is ``optimized_model`` when the test has it; else every model the test obtained
    through ``reference_model`` or ``tfopt_variant(...)`` (in the body too).
    """
    funcargs = getattr(item, "funcargs", {})
    bench = funcargs.get("_tfopt_workbench")
    if bench is None:
        return (yield)
    state = _state(item.config)
    try:
        result = yield
    except BaseException:
        for model in _judged_models(item, funcargs):
            _record(item, model, None, [], "failed")
        raise
    models = _judged_models(item, funcargs)
    if not models:
        if any(_closest_markers(item, name) for name in PARSERS):
            pytest.fail("the test's budget markers were not checked: it built no model (call tfopt_variant(...) "
                        "in the body, or request optimized_model)", pytrace=False)
        return result
    failures = []
    for model in models:
        try:
            failures += _judge(item, state, bench, model)
        except BaseException as exc:  # a check that raised is still a row, with its error
            _record(item, model, None, [], "failed", error=_first_line(exc))
            raise
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
    return result


def _judged_models(item: pytest.Item, funcargs: dict[str, Any]) -> list[Any]:
    model = funcargs.get("optimized_model")
    if model is not None:
        return [model]
    return list(item.stash.get(USED_MODELS, []))


def _judge(item: pytest.Item, state: TfoptState, bench: Workbench, model: Any) -> list[str]:
    """Every budget of ``item`` on ``model``; records its row; returns the failure text (empty when none broke)."""
    with _core(state):
        reference = bench.reference(model.backend)
        model.begin_test(item.nodeid)
        values, changes = _budgets(item, state, model)
        verdicts = evaluate.judge(model, values, changes, item.config.option.tfopt_perf,
                                  functools.partial(_reference_for, bench=bench, model=model, reference=reference))
    evaluate.measure_accuracy(model, reference)
    broken = [v.message for v in verdicts if v.passed is False]
    if state.inconclusive == "fail":  # a gate that must decide: undecided is not green
        broken += [f"{v.message} (--tfopt-inconclusive=fail)" for v in verdicts if v.passed is None]
    note = None
    if broken:  # before the row is recorded: the triage lands in it
        from .triage import failure_note  # lazy: the debugger runs only for failing accuracy budgets

        note = failure_note(bench, model, verdicts) or f"kept artifact: {model.path}"
    _record(item, model, reference, verdicts, "failed" if broken else "passed")
    return [*broken, note] if broken else []


def _reference_for(budget: Any, bench: Workbench, model: Any, reference: Any) -> Any:
    """fp32 on the same backend, or the variant a budget names (``min_speedup(reference="int8")``)."""
    name = getattr(budget, "reference_variant", "fp32")
    backend = getattr(budget, "reference_backend", model.backend)
    return reference if (name, backend) == ("fp32", model.backend) else bench.runnable(name, backend)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "msg", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def _record(item: pytest.Item, model: Any, reference: Any, verdicts: list[Any], outcome: str,
            error: str | None = None) -> None:
    row = result_row(item.nodeid, model, reference, verdicts, outcome)
    if error:
        row["error"] = error
    item.user_properties.append((ROW_KEY, row))
    for field in JUNIT_FIELDS:  # shown by CI systems that read JUnit XML
        if row.get(field) is not None:
            item.user_properties.append((f"tfopt_{field}", row[field]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Rows carry pytest's own outcome; a tfopt test that errored or skipped before its body gets a row too.

    So the JSON/Markdown/HTML counts are pytest's: passed, failed, skipped, xfailed, xpassed, error,
    inconclusive.
    """
    report = yield
    rows = [value for name, value in report.user_properties if name == ROW_KEY and isinstance(value, dict)]
    if report.when == "call":
        outcome = _outcome(report, rows, _state(item.config).inconclusive)
        for row in rows:
            row["outcome"] = outcome
    elif report.when == "setup" and not report.passed and "_tfopt_workbench" in getattr(item, "fixturenames", ()):
        params = getattr(getattr(item, "callspec", None), "params", {})
        row = {"test": item.nodeid, "variant": str(params.get("_tfopt_variant_name", "?")),
               "backend": str(params.get("_tfopt_backend_name", "tflite")),
               "outcome": "skipped" if report.skipped else "error", "verdicts": []}
        if report.failed:
            row["error"] = _report_text(report)
        report.user_properties = [*report.user_properties, (ROW_KEY, row)]  # not the item's own list
    return report


def _outcome(report: pytest.TestReport, rows: list[dict[str, Any]], policy: str = "warn") -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.passed and policy != "pass" and any(v["passed"] is None for r in rows for v in r.get("verdicts", [])):
        return "inconclusive"
    return report.outcome


def _report_text(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr)
    return (text.strip().splitlines() or ["error"])[0][:300]


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    """A passing test whose verdict is inside the noise band shows as INCONCLUSIVE (not flipped by chance)."""
    if report.when != "call" or not report.passed or _state(config).inconclusive == "pass":
        return None
    for name, row in report.user_properties:
        if name == ROW_KEY and isinstance(row, dict) and any(v["passed"] is None for v in row.get("verdicts", [])):
            return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        s = _state(session.config).total_cache_stats()
        workeroutput["tfopt_cache"] = {"built": s.built, "reused": s.reused, "build_seconds": s.build_seconds}
        return
    if STATE in session.config.stash:
        state = _state(session.config)
        if state.strict and state.unmatched_budgets() and session.exitstatus == pytest.ExitCode.OK:
            state.notes.append("ERROR: budgets-file entries matched no result (--tfopt-strict)")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        try:
            _write_outputs(state)
        except OutputError as exc:
            state.notes.append(str(exc))
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def _write_outputs(state: TfoptState) -> None:
    """Reports, the baseline and TensorBoard runs, in the controller, from every worker's rows.

    Each output is written on its own: one that fails is an ERROR note (and exit code 3), the others
    are still written.
    """
    opt = state.config.option
    doc = baseline.document(state.rows)
    writers: list[tuple[str, Any]] = [
        (f"report: {path}", functools.partial(report.write, path, doc, state.baseline)) for path in opt.tfopt_report
    ]
    if opt.tfopt_save_baseline:  # rows of tests that never measured (skipped, errors) are no baseline
        measured = [r for r in state.rows if "size_bytes" in r]
        writers.append((f"baseline saved: {opt.tfopt_save_baseline} ({len(measured)} results)",
                        functools.partial(baseline.save, opt.tfopt_save_baseline, baseline.document(measured))))
    if opt.tfopt_update_baseline and state.baseline is not None:
        updated, improved = baseline.ratchet(state.baseline, state.rows)
        writers.append((f"baseline updated: {opt.tfopt_baseline} ({improved} improvements taken over)",
                        functools.partial(baseline.save, opt.tfopt_baseline, updated)))
    if opt.tfopt_tensorboard:
        def tensorboard_runs() -> None:
            from .report import tensorboard

            tensorboard.write(opt.tfopt_tensorboard, state.rows)

        writers.append((f"tensorboard: {opt.tfopt_tensorboard}", tensorboard_runs))
    errors = []
    for done, write in writers:
        try:
            write()
            state.notes.append(done)
        except (TfoptError, OSError) as exc:
            errors.append(f"ERROR writing {done.split(':')[0]} ({exc})")
    if errors:
        raise OutputError("; ".join(errors))


class OutputError(Exception):
    """Some outputs could not be written (the others were)."""


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    stats = getattr(node, "workeroutput", {}).get("tfopt_cache")
    if stats:
        own = _state(node.config).cache_stats
        own.built += stats["built"]
        own.reused += stats["reused"]
        own.build_seconds += stats["build_seconds"]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if STATE not in config.stash or getattr(config, "workerinput", None) is not None:
        return
    state = _state(config)
    stats = state.total_cache_stats()
    if not state.rows and not stats.built and not stats.reused and not state.notes:
        return
    tr = terminalreporter
    tr.write_sep("=", "tfopt summary")
    for line in table_lines(sorted(state.rows, key=lambda r: r["test"])):
        tr.write_line(line)
    for row in sorted(state.rows, key=lambda r: r["test"]):  # passed, but not decided: say why
        for v in row.get("verdicts", []):
            if v["passed"] is None:
                tr.write_line(f"INCONCLUSIVE {row['test']}: {v['message']}", yellow=True)
    for line in state.unmatched_budgets():
        tr.write_line(line, yellow=True)
    fallbacks = {r["variant"] for r in state.rows if r.get("xnnpack_fallback")}
    if fallbacks:
        tr.write_line(f"XNNPACK refused {', '.join(sorted(fallbacks))}: ran on the builtin kernels instead")
    tr.write_line(
        f"artifacts: {stats.built} built ({stats.build_seconds:.1f} s), {stats.reused} reused; "
        f"cache: {Path(state.cache_dir)}"
    )
    for note in state.notes:
        tr.write_line(note)
