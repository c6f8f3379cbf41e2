"""The pytest plugin: options, hooks and the summary, over the core.

Nothing here converts, measures or judges: options and markers become a
:class:`~pytest_tfopt.session.TfoptState` (settings, registries, the gate), the fixtures
(:mod:`pytest_tfopt.fixtures`) hand out runnable models, and after each test the core's
:class:`~pytest_tfopt.budgets.evaluate.Gate` judges them; this module turns its verdicts into pytest
outcomes, result rows and the terminal summary.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest

from . import fixtures, hookspecs, options, tfenv, xdist_groups
from .budgets import MARKER_DOCS, PARSERS, parse_marker
from .errors import TfoptError, UsageError, first_line, front_end
from .fixtures import MODEL_FIXTURES, USED_MODELS, core_errors
from .remote_cache import describe
from .report.terminal import table_lines
from .results import JUNIT_FIELDS, result_row
from .session import ROW_KEY, STATE, OutputError, TfoptState, state_of, usage_errors, write_outputs
from .variants import split_variants
from .workbench import Workbench

_FRONT_END = pytest.StashKey[contextlib.ExitStack]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)
    for name, module in (("tfopt-options", options), ("tfopt-fixtures", fixtures)):  # hooks of their own modules
        if not pluginmanager.is_registered(module):
            pluginmanager.register(module, name)


def pytest_configure(config: pytest.Config) -> None:
    stack = contextlib.ExitStack()  # the core's remedies name --tfopt-* options until pytest_unconfigure
    stack.enter_context(front_end(options.spelling))
    config.stash[_FRONT_END] = stack
    config.addinivalue_line("markers", "tfopt_variants(*names): variants to parametrize optimized_model over")
    for _name, doc in MARKER_DOCS.items():
        config.addinivalue_line("markers", doc)
    options.check_path_options_spelling(config)
    if config.option.tfopt_pin_cores:
        _pin_worker()
    with usage_errors():
        tfenv.configure(tfenv.TfSettings(keras=config.getini("tfopt_keras") or "auto",
                                         threads=config.option.tfopt_threads or tfenv.default_threads()))
        state = TfoptState(config)
    config.stash[STATE] = state
    config.pluginmanager.register(state, "tfopt-state")  # replays plugin registration: conftest functions run
    config.pluginmanager.register(state.progress, "tfopt-progress")  # its bar, its "tfopt builds" section
    state.backend_names  # noqa: B018 - a typo in --tfopt-backend is a usage error before collection


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(_FRONT_END, None)
    if stack is not None:
        stack.close()


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = state_of(metafunc.config)
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
    state = state_of(config)
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


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: one worker per tfopt variant and backend (:mod:`pytest_tfopt.xdist_groups`)."""
    if config.getoption("dist", None) != "loadgroup" or STATE not in config.stash:
        return None
    return xdist_groups.make_scheduler(config, log, state_of(config).backend_names)


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


# ---- budgets and results ----------------------------------------------------
def _marked(item: pytest.Item) -> dict[str, list[Any]]:
    """Marker name → the budgets ``item``'s closest markers state (the gate lets them override the file's)."""
    return {name: [parse_marker(name, m.args, m.kwargs) for m in _closest_markers(item, name)] for name in PARSERS}


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
    state = state_of(item.config)
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
            _record(item, model, None, [], "failed", error=first_line(exc, 300))
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
    """Every budget of ``item`` on ``model`` (the core's gate); records its row; returns the failure text."""
    with core_errors(state):
        judgement = state.gate.judge(item.nodeid, model, bench, _marked(item))
    _record(item, model, judgement.reference, judgement.verdicts, "passed" if judgement.passed else "failed")
    return judgement.failures


def _record(item: pytest.Item, model: Any, reference: Any, verdicts: list[Any], outcome: str,
            error: str | None = None) -> None:
    row = result_row(item.nodeid, model, reference, verdicts, outcome, asked=state_of(item.config).asked_fields)
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
        outcome = _outcome(report, rows, state_of(item.config).inconclusive)
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
    if report.when != "call" or not report.passed or state_of(config).inconclusive == "pass":
        return None
    for name, row in report.user_properties:
        if name == ROW_KEY and isinstance(row, dict) and any(v["passed"] is None for v in row.get("verdicts", [])):
            return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        s = state_of(session.config).total_cache_stats()
        workeroutput["tfopt_cache"] = s.as_dict()
        m = state_of(session.config).total_reuse_stats()
        workeroutput["tfopt_measurements"] = {"reused": m.reused, "measured": m.measured}
        return
    if STATE in session.config.stash:
        state = state_of(session.config)
        if state.strict and state.unmatched_budgets() and session.exitstatus == pytest.ExitCode.OK:
            state.notes.append("ERROR: budgets-file entries matched no result (--tfopt-strict)")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        try:
            write_outputs(state)
        except OutputError as exc:
            state.notes.append(str(exc))
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    stats = getattr(node, "workeroutput", {}).get("tfopt_cache")
    if stats:
        state_of(node.config).cache_stats.add(stats)
    counts = getattr(node, "workeroutput", {}).get("tfopt_measurements")
    if counts:
        state_of(node.config).reuse_stats.reused += counts["reused"]
        state_of(node.config).reuse_stats.measured += counts["measured"]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if STATE not in config.stash or getattr(config, "workerinput", None) is not None:
        return
    state = state_of(config)
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
        f"artifacts: {stats.built} built ({stats.build_seconds:.1f} s), {stats.reused} reused"
        + (f" ({stats.fetched} fetched from the remote, {stats.uploaded} uploaded)" if stats.fetched or stats.uploaded
           else "") + f"; cache: {describe(state.cache_dir)}"
    )
    measured = state.total_reuse_stats()
    if measured.reused or measured.measured:
        tr.write_line(f"measurements: {measured.reused} reused, {measured.measured} measured"
                      + (" (--tfopt-remeasure)" if state.remeasure else ""))
    for note in state.notes:
        tr.write_line(note)
