"""The plugin's command-line options and ini keys, and the check of how path options were written."""

from __future__ import annotations

from typing import Any

import pytest

from .budgets import evaluate
from .session import DEFAULT_VARIANTS
from .workbench import DEFAULT_CALIBRATION_SIZE


def spelling(name: str) -> str:
    """The plugin's spelling of a setting named in the core's remedies (:func:`pytest_tfopt.errors.setting`)."""
    return "--tfopt-" + name.replace("_", "-")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tfopt", "model-optimization regression tests (pytest-tfopt)")
    _what_runs(group)
    _how_it_runs(group)
    _gates(group)
    _outputs(group)
    _ini(parser)


def _what_runs(group: Any) -> None:
    """Backends and variants."""
    group.addoption("--tfopt-backend", action="append", default=None, metavar="NAME[,NAME]",
                    help="backend(s) to run variants on, comma-separated or repeated; 'all' = every backend "
                         "available here (default: tflite)")
    group.addoption("--tfopt-variants", default=None, metavar="LIST",
                    help="comma list of variants for every test using optimized_model; overrides markers and ini "
                         "(e.g. int8,float16)")


def _how_it_runs(group: Any) -> None:
    """The cache, threads, strictness, core pinning."""
    group.addoption("--tfopt-cache-dir", default=None, metavar="DIR_OR_URL",
                    help="artifact cache directory, or an fsspec URL (s3://bucket/prefix, gs://, az://, file://) "
                         "of a shared remote cache read through a private local copy (default: ini "
                         "tfopt_cache_dir, else tfopt/ inside pytest's cache dir; see docs/sharding.md)")
    group.addoption("--tfopt-cache-trust-shared", action="store_true", default=False,
                    help="the cache directory is a deliberately shared team cache: accept it although others can "
                         "write it; entries are then signed with $TFOPT_CACHE_SECRET, and unsigned or badly signed "
                         "ones are rebuilt (see docs/security.md)")
    group.addoption("--tfopt-rebuild", action="store_true", default=False,
                    help="ignore cached artifacts and build every variant again")
    group.addoption("--tfopt-remeasure", action="store_true", default=False,
                    help="measure accuracy, outputs, gzip size and memory again instead of reusing the values "
                         "recorded for the same artifact, data, runtime, threads and hardware (latency and load "
                         "are always measured)")
    group.addoption("--tfopt-threads", type=int, default=None, metavar="N",
                    help="runtime threads on every backend (LiteRT num_threads, TF intra-op, ONNX Runtime intra-op, "
                         "OpenVINO INFERENCE_NUM_THREADS, TF Serving); default: the cores shared among xdist workers")
    group.addoption("--tfopt-strict", action="store_true", default=False,
                    help="fail, instead of skip, tests whose backend or variant cannot run here; an unreachable "
                         "remote cache (--tfopt-cache-dir=s3://...) is an error, not a warning")
    group.addoption("--tfopt-pin-cores", action="store_true", default=False,
                    help="pin each xdist worker to its own core(s) so latency measurements do not disturb each other "
                         "(each worker then has fewer threads; see README)")


def _gates(group: Any) -> None:
    """How timing and undecided verdicts count; the budgets file and baselines."""
    group.addoption("--tfopt-perf", choices=evaluate.PERF_MODES, default="enforce",
                    help="latency budgets: enforce (fail when broken), record (measure and report, never fail), "
                         "off (do not measure) (default: enforce)")
    group.addoption("--tfopt-profile", action="store_true", default=False,
                    help="profile every measured variant op by op (in runs of its own, after its gates) and put the "
                         "profile in its result row and the JSON/HTML reports; broken timing gates are profiled "
                         "anyway (default: off; see docs/profiling.md)")
    group.addoption("--tfopt-latency-max-s", type=float, default=None, metavar="SECONDS",
                    help="the most one latency measurement may time, re-timing an undecided percentile included "
                         "(default: 20; ini tfopt_latency_max_s): more time decides more p95/p99 budgets")
    group.addoption("--tfopt-inconclusive", choices=evaluate.INCONCLUSIVE_POLICIES, default=None,
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


def _outputs(group: Any) -> None:
    """Reports, TensorBoard, the serving backend's server."""
    group.addoption("--tfopt-report", action="append", default=[], metavar="PATH",
                    help="write a report; format by extension: .json, .md, .html, .benchmark.json (repeatable)")
    group.addoption("--tfopt-tensorboard", default=None, metavar="DIR",
                    help="write every metric as TensorBoard scalars, one run per variant and backend")
    group.addoption("--tfopt-history", default=None, metavar="PATH",
                    help="append this run's results (commit, branch, hardware, versions) to a history file (SQLite; "
                         "safe for concurrent writers); 'tfopt history PATH' shows and gates on steps (ini "
                         "tfopt_history; see docs/history.md)")
    group.addoption("--tfopt-mlflow", nargs="?", const="default", default=None, metavar="URI",
                    help="log each result as an MLflow run to this tracking URI (e.g. http://mlflow:5000); alone: "
                         "MLflow's own default store; needs pytest-tfopt[mlflow] (ini tfopt_mlflow)")
    group.addoption("--tfopt-mlflow-experiment", default="pytest-tfopt", metavar="NAME",
                    help="the MLflow experiment of --tfopt-mlflow runs (default: pytest-tfopt)")
    group.addoption("--tfopt-serving-url", default=None, metavar="URL",
                    help="backend serving: REST URL of a TensorFlow Serving server that serves the artifacts "
                         "(e.g. http://localhost:8501; default: $TFOPT_SERVING_URL, else start "
                         "tensorflow_model_server from PATH)")
    group.addoption("--tfopt-serving-timeout", type=float, default=30.0, metavar="SECONDS",
                    help="backend serving: timeout of every request and of a spawned server's start-up (default: 30)")


def _ini(parser: pytest.Parser) -> None:
    parser.addini("tfopt_model", "source model: .keras/.h5 file, SavedModel dir or .tflite (relative to the ini file)")
    parser.addini("tfopt_cache_dir", "artifact cache directory (relative to the ini file) or remote cache URL "
                  "(s3://, gs://, az://, file://); --tfopt-cache-dir overrides it")
    parser.addini("tfopt_dataset", ".npz data set with x_train,y_train,x_test,y_test or x,y (relative to the ini file)")
    parser.addini("tfopt_latency_max_s", "the most one latency measurement may time, seconds (default: 20)",
                  default="20")
    parser.addini("tfopt_inconclusive", "warn, fail or pass: what an INCONCLUSIVE verdict does (default: warn)",
                  default="warn")
    parser.addini("tfopt_signature", "SavedModel / .tflite signature to test (default: serving_default)",
                  default="serving_default")
    parser.addini("tfopt_variants", f"default variants (comma list); default: {DEFAULT_VARIANTS}", default=DEFAULT_VARIANTS)
    parser.addini("tfopt_calibration_size", "calibration samples drawn (seeded) from the training split",
                  default=str(DEFAULT_CALIBRATION_SIZE))
    parser.addini("tfopt_keras", "auto (tf.keras as TensorFlow ships it) or legacy (TF_USE_LEGACY_KERAS=1, tf_keras)",
                  default="auto")
    parser.addini("tfopt_history", "history file every run appends its results to (relative to the ini file)")
    parser.addini("tfopt_mlflow", "MLflow tracking URI every run logs its results to ('default': MLflow's own store)")


PATH_OPTIONS = ("--tfopt-cache-dir", "--tfopt-budgets", "--tfopt-save-baseline", "--tfopt-baseline",
                "--tfopt-report", "--tfopt-tensorboard", "--tfopt-history")


def check_path_options_spelling(config: pytest.Config) -> None:
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
