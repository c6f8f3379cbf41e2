"""The plugin's session state: settings from options and ini, registries, workbenches, the gate, the rows.

One :class:`TfoptState` per pytest session (and per xdist worker), kept in ``config.stash[STATE]`` and
registered as a plugin (it receives the conftest registration functions and the workers' rows). At the end
of the session :func:`write_outputs` writes reports, baselines and TensorBoard runs from the rows.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest

from . import baseline, history, report, security, tfenv
from .backends import default_registry as default_backends
from .budgets import evaluate
from .budgets import file as budgets_file
from .cache import CacheStats
from .errors import CacheError, TfoptError, UsageError
from .history import mlflow_log
from .measure.latency import LatencySettings
from .measure.reuse import ReuseStats
from .outputs import check_writable, check_writable_dir
from .remote_cache import is_url, open_cache
from .terminal_progress import TerminalProgress
from .variants import default_registry as default_variants
from .variants import split_variants
from .workbench import Workbench

DEFAULT_VARIANTS = "dynamic,float16,int8"
#: the user property a test's result row travels in (to the xdist controller, to JUnit XML)
ROW_KEY = "tfopt"
STATE = pytest.StashKey["TfoptState"]()


def state_of(config: pytest.Config) -> TfoptState:
    """The session's :class:`TfoptState`."""
    return config.stash[STATE]


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Turn the core's :class:`~pytest_tfopt.errors.UsageError` into pytest's (exit code 4, one line)."""
    try:
        yield
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


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
        self.remeasure = bool(getattr(opt, "tfopt_remeasure", False))
        # what rows compute beyond what budgets measured (gzip size): everything when the rows are written anywhere
        # (reports, baselines, TensorBoard, JUnit XML, history, MLflow: later gates may need it), else nothing
        self.asked_fields: tuple[str, ...] | None = None if _rows_written(config) else ()
        self.cache_dir = opt.tfopt_cache_dir or self._ini_cache_dir() or self._default_cache_dir()
        self.trust_shared = bool(opt.tfopt_cache_trust_shared)
        self.notes: list[str] = []
        self.inconclusive = opt.tfopt_inconclusive or (config.getini("tfopt_inconclusive") or "warn").strip()
        if self.inconclusive not in evaluate.INCONCLUSIVE_POLICIES:
            raise UsageError(f"ini tfopt_inconclusive = {self.inconclusive!r}: use one of {', '.join(evaluate.INCONCLUSIVE_POLICIES)}")
        # a directory nothing can be written to, or one others could plant artifacts in, is a usage error
        # (exit 4), once, before collection
        try:
            # a URL: an unreachable remote is one note (the summary shows it), an error under --tfopt-strict
            open_cache(self.cache_dir, trust_shared=self.trust_shared, strict=self.strict,
                       warn=self.notes.append).check()
        except CacheError as exc:
            raise UsageError(str(exc)) from None
        self.calibration_size = _int_ini(config, "tfopt_calibration_size")
        self.latency = LatencySettings(max_time_s=_latency_cap(config))
        self.variants = default_variants()
        self.backends = default_backends()
        self.backends.register("serving", functools.partial(_serving_backend, opt.tfopt_serving_url,
                                                            opt.tfopt_serving_timeout))
        config.hook.pytest_tfopt_register_variants.call_historic(kwargs={"registry": self.variants})
        config.hook.pytest_tfopt_register_backends.call_historic(kwargs={"registry": self.backends})
        self._backend_option = opt.tfopt_backend
        self._backend_list: list[str] | None = None
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
        self.history = opt.tfopt_history or self.ini_path("tfopt_history")  # appended to at the end
        self.mlflow = opt.tfopt_mlflow or config.getini("tfopt_mlflow") or None  # a tracking URI or "default"
        _check_outputs(opt, self.history, self.mlflow)
        self.budgets_file = budgets_file.find(opt.tfopt_budgets, str(config.rootpath))
        self.baseline = baseline.load(opt.tfopt_baseline) if opt.tfopt_baseline else None
        self.baseline_rows = {baseline.row_key(r): r for r in (self.baseline or {}).get("rows", [])}
        self.same_hardware = self.baseline is None or baseline.same_hardware(self.baseline)
        if not self.same_hardware:
            self.notes.append(f"baseline {opt.tfopt_baseline} was measured on other hardware "
                              f"({self.baseline.get('hardware', {}).get('cpu', '?')}): only accuracy and size are compared")
        self.gate = evaluate.Gate(self.budgets_file, self.baseline_rows if self.baseline is not None else None,
                                  self.same_hardware, opt.tfopt_perf, self.inconclusive, self.canonical,
                                  profile=bool(opt.tfopt_profile))
        self.cache_stats = CacheStats()
        #: the workbenches' build progress (a bar beside pytest's line, or a section at the end; also a plugin)
        self.progress = TerminalProgress(config)
        self.reuse_stats = ReuseStats()  # the workers' measurement counts (xdist); see total_reuse_stats
        self._benches: dict[tuple[Any, Any], tuple[Any, Any, Workbench]] = {}

    def _ini_cache_dir(self) -> str | None:
        value = (self.config.getini("tfopt_cache_dir") or "").strip()
        return value if is_url(value) else self.ini_path("tfopt_cache_dir")

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
            with usage_errors():
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
                              trust_shared=self.trust_shared, latency=self.latency, reuse=True,
                              remeasure=self.remeasure)
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
        total = CacheStats()
        total.add(self.cache_stats)
        for _, _, bench in self._benches.values():
            total.add(bench.cache.stats)
        return total


    def total_reuse_stats(self) -> ReuseStats:
        """Measurements reused from records and measured, in this process and (controller) its workers."""
        total = ReuseStats(self.reuse_stats.reused, self.reuse_stats.measured)
        for _, _, bench in self._benches.values():
            if bench.measurement_store is not None:
                total.reused += bench.measurement_store.stats.reused
                total.measured += bench.measurement_store.stats.measured
        return total


def _rows_written(config: pytest.Config) -> bool:
    """Whether this run writes its result rows anywhere but the terminal (see ``TfoptState.asked_fields``)."""
    opt = config.option
    options = ("tfopt_report", "tfopt_save_baseline", "tfopt_update_baseline", "tfopt_tensorboard", "xmlpath",
               "tfopt_history", "tfopt_mlflow")
    if any(getattr(opt, name, None) for name in options):
        return True
    for ini in ("tfopt_history", "tfopt_mlflow"):
        try:
            if config.getini(ini):
                return True
        except ValueError:  # not registered (an older options module)
            pass
    return False


def _serving_backend(url: str | None, timeout_s: float) -> Any:
    from .backends.serving import ServingBackend  # lazy: only when the backend is used

    return ServingBackend(url=url, timeout_s=timeout_s)


def _identity(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else id(value)


def _latency_cap(config: pytest.Config) -> float:
    """``--tfopt-latency-max-s`` (else ini ``tfopt_latency_max_s``): seconds, more than the 0.5 s minimum time."""
    raw = config.option.tfopt_latency_max_s
    where = "--tfopt-latency-max-s" if raw is not None else "ini tfopt_latency_max_s"
    if raw is None:
        raw = config.getini("tfopt_latency_max_s") or "20"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{where} = {raw!r} is not a number of seconds: e.g. 20") from None
    if not value >= LatencySettings.min_time_s or value == float("inf"):
        raise UsageError(f"{where} = {raw!r}: give a finite number of seconds of at least "
                         f"{LatencySettings.min_time_s:g} (the minimum time of one measurement)")
    return value


def _int_ini(config: pytest.Config, name: str) -> int:
    raw = config.getini(name)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise UsageError(f"ini {name} = {raw!r} is not an integer: e.g. {name} = 200") from None
    if value < 1:
        raise UsageError(f"ini {name} = {value}: use 1 or more samples")
    return value


def write_outputs(state: TfoptState) -> None:
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
    if state.history:
        writers.append((f"history: {state.history} ({len(doc['rows'])} results appended)",
                        functools.partial(history.append_document, state.history, doc, str(state.config.rootpath))))
    if state.mlflow:
        experiment = opt.tfopt_mlflow_experiment
        revision = history.vcs.revision(str(state.config.rootpath))
        writers.append((f"mlflow: {len(doc['rows'])} runs logged to {state.mlflow} (experiment {experiment})",
                        functools.partial(mlflow_log.log, state.mlflow, doc, revision, experiment)))
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


def _check_outputs(opt: Any, history_path: str | None = None, mlflow_uri: str | None = None) -> None:
    """Every output path is checked before the first test, not after the last one (usage errors)."""
    if history_path:
        history.store.check(history_path)
    if mlflow_uri:
        mlflow_log.check(mlflow_uri)
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
