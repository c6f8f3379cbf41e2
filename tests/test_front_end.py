"""The core's remedies are front-end neutral: each front end spells the settings they name."""

from __future__ import annotations

import pytest

from pytest_tfopt import baseline, errors, report
from pytest_tfopt.cli import SPELLING, main
from pytest_tfopt.errors import UsageError, front_end, setting
from pytest_tfopt.options import spelling as plugin_spelling


@pytest.fixture
def no_front_end(monkeypatch):
    """As the core is used from Python: no front end runs (this test session's plugin spelling set aside)."""
    monkeypatch.setattr(errors, "_front_ends", [])


def test_the_library_names_its_own_keywords(no_front_end, tmp_path):
    assert setting("rebuild") == "rebuild=True" and setting("backend", "tf") == "backend='tf'"
    with pytest.raises(UsageError, match=r"does not exist: save one with pytest_tfopt\.baseline\.save\(\) "):
        baseline.load(tmp_path / "missing.json")


def test_each_front_end_spells_the_same_remedy_its_way(no_front_end, tmp_path):
    with front_end(plugin_spelling):
        assert setting("backend", "tf") == "--tfopt-backend=tf" and setting("cache_trust_shared") == "--tfopt-cache-trust-shared"
        with pytest.raises(UsageError, match="unknown format") as plugin:
            report.format_of("out.xyz")
        with front_end(SPELLING.get):  # nested (a CLI run inside a pytest session): the inner one spells
            with pytest.raises(UsageError, match="unknown format") as cli:
                report.format_of("out.xyz")
            assert setting("serving_url") == "--tfopt-serving-url"  # the CLI has none: the outer spells it
        assert setting("rebuild") == "--tfopt-rebuild"  # the inner one left
    assert str(plugin.value).startswith("--tfopt-report out.xyz") and str(cli.value).startswith("-o out.xyz")
    assert setting("rebuild") == "rebuild=True"


def test_the_cli_reports_a_bad_results_file_through_the_core(tmp_path, capsys):
    bad = tmp_path / "run.json"
    bad.write_text("[1, 2]")
    assert main(["report", str(bad), "-o", str(tmp_path / "r.md")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0 and f"results file {str(bad)!r} is not a pytest-tfopt results document" in line
    assert "write one with 'tfopt bench --json' or pytest --tfopt-save-baseline" in line
