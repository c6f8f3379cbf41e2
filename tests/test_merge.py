"""``tfopt merge``: sharded runs' results documents as one run's, and the errors that keep it honest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_tfopt import baseline
from pytest_tfopt.cli import main

SUITE = """
import pytest

@pytest.mark.tfopt_variants("int8", "float16")
def test_vision(optimized_model):
    pass

@pytest.mark.tfopt_variants("int8")
@pytest.mark.max_size_kb(40)
def test_small(optimized_model):
    pass
"""


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``tfopt argv`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # not what ran before (a pytester run prints here too)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one ``tfopt: error:`` line of ``err``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfopt: error: ") and "Traceback" not in err, err
    return lines[0]


def row(test: str, variant: str = "int8", **fields: object) -> dict:
    return {"test": f"test_suite.py::{test}", "variant": variant, "backend": "tflite", "size_bytes": 14000,
            "accuracy": 0.9, "latency_b1_p50_ms": 0.2, "hardware_id": baseline.hardware_id(), **fields}


def shard(path: Path, rows: list[dict], **fields: object) -> Path:
    """A results document of ``rows`` (top-level ``fields`` replaced) written to ``path``."""
    path.write_text(json.dumps({**baseline.document(rows), **fields}))
    return path


def verdicts(out: str) -> tuple[list[list[str]], list[str]]:
    """A ``tfopt compare`` output's status/test/variant/backend columns, and its summary and BROKEN lines."""
    lines = out.splitlines()
    table = [line.split()[:4] for line in lines if line.split()[:1] in (["ok"], ["BROKEN"], ["added"], ["removed"])]
    return table, [line for line in lines if " compared, " in line or line.startswith("BROKEN ")]


# ---- a real sharded run -----------------------------------------------------------------------
def test_merged_shards_give_the_unsplit_runs_rows_and_verdicts(suite, pytester, capsys):
    path = pytester.path
    suite(SUITE, f"--tfopt-save-baseline={path / 'full.json'}").assert_outcomes(passed=3)
    suite(SUITE, "-k", "test_vision", f"--tfopt-save-baseline={path / 'shard-1.json'}").assert_outcomes(
        passed=2, deselected=1)
    suite(SUITE, "-k", "test_small", f"--tfopt-save-baseline={path / 'shard-2.json'}").assert_outcomes(
        passed=1, deselected=2)

    code, out, err = run(capsys, "merge", path / "shard-1.json", path / "shard-2.json", "-o", path / "run.json")
    assert (code, err) == (0, "")
    assert out == f"wrote {path / 'run.json'} (3 rows from 2 shards)\n"
    full, merged = (json.loads((path / name).read_text()) for name in ("full.json", "run.json"))
    def values(rows: list[dict]) -> list[dict]:  # which run measured a value and which reused it differs
        return [{k: v for k, v in r.items() if k != "reused"} for r in rows]

    assert values(merged["rows"]) == values(full["rows"])  # the suite times nothing: every value is the unsplit run's
    assert merged["hardware"] == full["hardware"] and merged["commit"] == full["commit"]
    assert [s["rows"] for s in merged["shards"]] == [2, 1]

    gate = path / "gate.toml"  # one broken budget, and change thresholds the rows answer
    gate.write_text('[[budgets]]\nvariant = "float16"\nmax_size_kb = 5\n\n[[budgets]]\nsize = "+0%"\naccuracy = "-0.0"\n')
    unsplit = run(capsys, "compare", path / "full.json", path / "full.json", "--budgets", gate)
    sharded = run(capsys, "compare", path / "full.json", path / "run.json", "--budgets", gate)
    assert unsplit[0] == sharded[0] == 1
    assert verdicts(sharded[1]) == verdicts(unsplit[1])
    assert "3 compared, 0 added, 0 removed; 7 thresholds checked, 1 broken" in sharded[1]

    # the plugin reads the merged document as a baseline like one run's: same hardware, change thresholds judged
    pytester.makefile(".toml", **{"tfopt-budgets": '[[budgets]]\nsize = "+0%"\n'})
    result = suite(SUITE, f"--tfopt-baseline={path / 'run.json'}")
    result.assert_outcomes(passed=3)
    assert "other hardware" not in result.stdout.str()


# ---- what a merge keeps -----------------------------------------------------------------------
def test_identical_rows_merge_and_agreed_fields_are_kept(tmp_path, capsys):
    a = shard(tmp_path / "a.json", [row("test_a"), row("test_b")], tool="tfopt bench")
    b = shard(tmp_path / "b.json", [row("test_b"), row("test_c")], tool="tfopt bench")
    code, out, err = run(capsys, "merge", a, b, "-o", tmp_path / "out" / "run.json")
    assert (code, err) == (0, "")
    doc = baseline.load(tmp_path / "out" / "run.json")
    assert [r["test"] for r in doc["rows"]] == [f"test_suite.py::test_{t}" for t in "abc"]
    assert doc["tool"] == "tfopt bench" and doc["hardware"] == json.loads(a.read_text())["hardware"]
    assert list(doc["hardware_blocks"]) == [doc["hardware"]["id"]]


def test_shards_on_different_hardware_keep_every_block(tmp_path, capsys):
    other = {"cpu": "Other CPU", "cores": 64, "machine": "aarch64", "id": "0123456789ab"}
    a = shard(tmp_path / "a.json", [row("test_a")])
    b = shard(tmp_path / "b.json", [row("test_b", hardware_id=other["id"])], hardware=other)
    code, out, err = run(capsys, "merge", a, b, "-o", tmp_path / "run.json")
    assert code == 0
    assert err.startswith("tfopt: note: the shards ran on 2 kinds of hardware (") and "Other CPU" in err
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["hardware_blocks"][other["id"]] == other
    assert doc["hardware_blocks"][baseline.hardware_id()]["cpu"] == baseline.hardware()["cpu"]
    assert [r["hardware_id"] for r in doc["rows"]] == [baseline.hardware_id(), other["id"]]
    assert doc["hardware"]["mixed"] is True and not baseline.same_hardware(doc)

    gate = tmp_path / "gate.toml"
    gate.write_text('[[budgets]]\nlatency_p50 = "+0%"\nsize = "+0%"\n')
    code, out, err = run(capsys, "compare", a, tmp_path / "run.json", "--budgets", gate)
    assert code == 0 and "measured on different hardware" in err and "latency_p50 change thresholds skipped" in err
    code, out, err = run(capsys, "compare", tmp_path / "run.json", tmp_path / "run.json", "--budgets", gate)
    assert code == 0 and err == "" and "4 thresholds checked, 0 broken" in out  # same placement: same hardware

    c = shard(tmp_path / "c.json", [row("test_c")])  # a merged document merges again, its blocks carried over
    code, _, err = run(capsys, "merge", tmp_path / "run.json", c, "-o", tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert code == 0 and sorted(again["hardware_blocks"]) == sorted(doc["hardware_blocks"])
    assert again["shards"][0]["shards"] == doc["shards"] and len(again["rows"]) == 3


def test_different_commits_are_a_note_or_with_the_flag_an_error(tmp_path, capsys):
    a = shard(tmp_path / "a.json", [row("test_a")], commit="a" * 40, versions={"tensorflow": "2.16.1"})
    b = shard(tmp_path / "b.json", [row("test_b")], commit="b" * 40, versions={"tensorflow": "2.17.0"})
    code, _, err = run(capsys, "merge", a, b, "-o", tmp_path / "run.json")
    assert code == 0
    assert f"tfopt: note: the shards come from different commits (aaaaaaaaaaaa in {str(a)!r}, bbbbbbbbbbbb" in err
    assert "the shards differ in 'versions'" in err
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["commit"] is None and "versions" not in doc
    assert [(s["commit"], s["versions"]) for s in doc["shards"]] == [("a" * 40, {"tensorflow": "2.16.1"}),
                                                                     ("b" * 40, {"tensorflow": "2.17.0"})]

    code, out, err = run(capsys, "merge", a, b, "-o", tmp_path / "strict.json", "--require-same-commit")
    assert code == 2 and out == ""
    assert "different commits" in error_line(err) and "--require-same-commit" in err
    assert not (tmp_path / "strict.json").exists()


# ---- errors: one line, exit 2, nothing written -------------------------------------------------
def test_a_row_in_two_shards_is_an_error_naming_both_files(tmp_path, capsys):
    a = shard(tmp_path / "shard-1.json", [row("test_a"), row("test_b")])
    b = shard(tmp_path / "shard-2.json", [row("test_b", size_bytes=15000)])
    code, out, err = run(capsys, "merge", a, b, "-o", tmp_path / "run.json")
    assert code == 2 and out == ""
    assert error_line(err) == (f"tfopt: error: result test_suite.py::test_b [int8, tflite] is in both {str(a)!r} "
                               f"and {str(b)!r} with different values: run each test in one shard only (check "
                               "the shards' -k, paths or --splits/--group)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-1.json", "shard-2.json"]


@pytest.mark.parametrize("damage, expected", [
    (lambda text: text[:40], "is not valid JSON"),
    (lambda text: text.replace('"schema_version": 1', '"schema_version": 2'), "has schema version 2, this pytest"),
    (lambda text: text.replace('"size_bytes": 14000', '"size_bytes": "14 KB"'), "row 1 has size_bytes = '14 KB'"),
])
def test_a_damaged_shard_is_the_same_one_line_error_as_compare_gives(tmp_path, capsys, damage, expected):
    good = shard(tmp_path / "shard-1.json", [row("test_a")])
    bad = shard(tmp_path / "shard-2.json", [row("test_b")])
    bad.write_text(damage(bad.read_text()))
    code, out, err = run(capsys, "merge", good, bad, "-o", tmp_path / "run.json")
    assert code == 2 and out == ""
    line = error_line(err)
    assert f"results file {str(bad)!r}" in line and expected in line
    assert line == error_line(run(capsys, "compare", good, bad)[2])
    assert not (tmp_path / "run.json").exists()


def test_output_never_overwrites_an_input_and_inputs_are_named_once(tmp_path, capsys, monkeypatch):
    a = shard(tmp_path / "a.json", [row("test_a")])
    b = shard(tmp_path / "b.json", [row("test_b")])
    before = b.read_text()
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "merge", a, b, "-o", "./b.json")
    assert code == 2 and "-o './b.json' is the input" in error_line(err) and "new file" in err
    assert b.read_text() == before
    code, _, err = run(capsys, "merge", a, "a.json", "-o", "run.json")
    assert code == 2 and "is given twice" in error_line(err)
    assert not (tmp_path / "run.json").exists()


def test_failed_write_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    from pytest_tfopt import cli

    a = shard(tmp_path / "a.json", [row("test_a")])
    monkeypatch.setattr(cli.os, "replace", lambda src, dst: (_ for _ in ()).throw(PermissionError(13, "denied")))
    code, out, err = run(capsys, "merge", a, "-o", tmp_path / "run.json")
    assert code == 1 and out == ""
    assert "cannot write" in error_line(err) and "denied" in err
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_help_names_the_command_and_each_option(capsys):
    assert main(["--help"]) == 0
    assert "merge     merge the results documents of sharded runs" in capsys.readouterr().out
    assert main(["merge", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("SHARD", "--output", "--require-same-commit", "docs/sharding.md"))
    assert main(["merge", "a.json"]) == 2
    assert "the following arguments are required: -o/--output" in error_line(capsys.readouterr().err)
