"""Fuzzing every parser a user's text reaches: variant specs, marker arguments, change thresholds, budgets files.

The property is the same everywhere: whatever the input, the parser returns normally or raises
:class:`pytest_tfopt.errors.UsageError` (a one-line message, exit code 4 in the plugin) — never a
TypeError/ValueError/OverflowError/RecursionError traceback. The crashes fuzzing found (all fixed; see
docs/reliability.md) are pinned at the bottom of this file: each input must now give its one-line usage error.
"""

from __future__ import annotations

import datetime
import math
import string
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pytest_tfopt.budgets import CHANGE_METRICS, PARSERS, parse_change, parse_marker
from pytest_tfopt.budgets import file as budgets_file
from pytest_tfopt.errors import UsageError
from pytest_tfopt.variants import Plan, VariantSpec, default_registry, parse_variant, split_variants

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}  # no .hypothesis/
FUZZ = settings(max_examples=200, **_COMMON)
FUZZ_EACH = settings(max_examples=60, **_COMMON)  # per marker name: 60 x every name in PARSERS
FUZZ_SLOW = settings(max_examples=120, **_COMMON)
REGISTRY = default_registry()
RECIPES = {name: REGISTRY.stage(name)[1] for name in REGISTRY.names()}
PARAM_NAMES = sorted({p for r in RECIPES.values() for p in r.params})
MARKER_KWARGS = ["relative", "metric", "percentile", "batch_size", "compressed", "limit", "drop", "ratio", "ms"]

# Integers stay within 64 bits; the wider ones that used to crash several parsers are pinned at the bottom.
INTS = st.integers(min_value=-(2**63), max_value=2**63)
IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


def returns_or_usage_error(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or ``None`` when it raised a UsageError; anything else propagates (a bug)."""
    try:
        return fn(*args, **kwargs)
    except UsageError as exc:
        assert str(exc).strip() and "Traceback" not in str(exc)
        return None


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, complex):
        return math.isfinite(value.real) and math.isfinite(value.imag)
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(k) and _finite(v) for k, v in value.items())
    return True


# ---- the variant grammar ----------------------------------------------------------------------------------------
LITERALS = st.recursive(
    st.none() | st.booleans() | INTS | st.floats() | TEXT | st.binary(max_size=8)
    | st.complex_numbers(max_magnitude=1e6),
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=4) | INTS, inner, max_size=3)
    | st.frozensets(INTS | st.text(max_size=4), max_size=3).map(set),
    max_leaves=6,
)


def _literal_text(value) -> str:
    if isinstance(value, set):
        return "{" + ", ".join(map(repr, value)) + "}" if value else "set()"
    return repr(value)


@st.composite
def stage_texts(draw) -> str:
    """One stage: a known recipe (mostly) with parameters, literal values of every type, and some noise."""
    name = draw(st.sampled_from(sorted(RECIPES)) | IDENT)
    keys = list(RECIPES[name].params) if name in RECIPES else []
    params = draw(st.lists(st.tuples(st.sampled_from(keys + PARAM_NAMES) | IDENT, LITERALS), max_size=3))
    text = name
    if params or draw(st.booleans()):
        sep = draw(st.sampled_from([",", ", ", " , "]))
        text += "(" + sep.join(f"{k}={_literal_text(v)}" for k, v in params) + ")"
    if draw(st.integers(0, 9)) == 0:  # damage it: a char inserted or dropped somewhere
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(list("()=,+'\"[]{} \\x0\n*") + ["", "**", "lambda: 0"])) + text[pos + 1:]
    return text


VARIANT_TEXTS = (
    st.lists(stage_texts(), min_size=1, max_size=3).map("+".join)
    | st.text(max_size=60)
    | st.text(alphabet="int8()+=,._ 0123456789'\"[]{}-abcxyz", max_size=60)
)


@FUZZ
@given(VARIANT_TEXTS)
@example("")
@example("int8(")
@example("int8(calibration_size=100")
@example("int8)(")
@example("int8(calibration_size=1, calibration_size=2)")
@example("int8(1)")
@example("int8(a=\0)")
@example("int8(a={[1]: 2})")
@example("int8(a=" + "[" * 150 + "]" * 150 + ")")
@example("int8(a=" + "-" * 1000 + "1)")
@example("int8(a=__import__('os').system('true'))")
@example("int8(**{'calibration_size': 1})")
def test_parse_variant(text):
    spec = returns_or_usage_error(parse_variant, text)
    if spec is None:
        return
    assert isinstance(spec, VariantSpec) and isinstance(spec.id, str)
    assert [k for k, _ in spec.params] == sorted({k for k, _ in spec.params})
    if _finite(list(spec.params)):
        assert parse_variant(spec.id) == spec  # the canonical spelling (test ids, cache keys) reads back


@FUZZ_SLOW
@given(st.text(max_size=80) | st.lists(VARIANT_TEXTS, max_size=4).map(",".join))
@example("a,(b,c),d")
@example("a),b")
@example(",,, ,")
def test_split_variants(text):
    parts = split_variants(text)
    assert all(p and p == p.strip() for p in parts)
    assert split_variants(",".join(parts)) == parts


@FUZZ
@given(VARIANT_TEXTS)
@example("pruned+")
@example("+int8")
@example("int8+pruned")
@example("pruned(sparsity=0.5)+clustered(clusters=8)+qat")
@example("pruned(sparsity='x')")
@example("clustered(clusters=2.5)")
@example("lowrank(rank=None)")
@example("distilled(student=[1, 2])")
@example("pruned(m_by_n=(2, 4))")
@example("int8(calibration_size=1e400)")
@example("int8(a=1, **{})")
def test_resolve_with_the_default_registry(text):
    plan = returns_or_usage_error(REGISTRY.resolve, text)
    if plan is None:
        return
    assert isinstance(plan, Plan) and plan.stages
    assert all(recipe.is_transform for _, recipe in plan.transforms)
    assert not plan.precision[1].is_transform
    assert isinstance(plan.id, str)
    if all(_finite(list(spec.params)) for spec, _ in plan.stages):
        assert REGISTRY.resolve(plan.id) == plan  # Workbench.build resolves plan.id again


# ---- marker arguments -------------------------------------------------------------------------------------------
def _metric_fn(y_true, y_pred):
    return 0.0


ODD = st.sampled_from([
    object(), len, _metric_fn, print, np.float32(0.5), np.float64(2.0), np.int64(95), np.int32(1), np.bool_(True),
    float("nan"), float("inf"), -0.0, "top1", "mae", "rmse", "accuracy", "", "95", b"1", [], {}, (), {1: 2},
    datetime.date(2024, 1, 1), 1j, Ellipsis, type, int,
])
VALUES = st.none() | st.booleans() | INTS | st.floats() | TEXT | ODD | st.lists(INTS | st.floats(), max_size=3)


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ_EACH
@given(args=st.lists(VALUES, max_size=3),
       kwargs=st.dictionaries(st.sampled_from(MARKER_KWARGS) | IDENT | st.text(max_size=5), VALUES, max_size=3))
@example(args=[], kwargs={})
@example(args=[0.01], kwargs={"relative": 1})
@example(args=[2.0], kwargs={"percentile": 95.0, "batch_size": True})
@example(args=[1.0, 2.0, 3.0, 4.0, 5.0], kwargs={})
@example(args=[1.0], kwargs={"limit_ms": 1.0})
def test_parse_marker(name, args, kwargs):
    budget = returns_or_usage_error(parse_marker, name, tuple(args), kwargs)
    if budget is not None:
        assert callable(budget.check)


# ---- change thresholds ------------------------------------------------------------------------------------------
CHANGE_TEXT = st.builds(
    lambda sign, number, pct, pad: f"{pad}{sign}{number}{pct}{pad}",
    st.sampled_from(["", "+", "-", "++", "+-", " "]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr) | INTS.map(str) | st.sampled_from(
        ["", ".", "1e", "1_000", "0x10", "nan", "inf", "-inf", "infinity", "1e999", "٣", "½", "0" * 50]),
    st.sampled_from(["", "%", "%%", " %", "pct"]),
    st.sampled_from(["", " ", "\t", "\n"]),
)


@FUZZ
@given(metric=st.sampled_from(sorted(CHANGE_METRICS)) | TEXT,
       spec=CHANGE_TEXT | VALUES | st.text(max_size=20))
@example(metric="size", spec="%")
@example(metric="size", spec="+")
@example(metric="accuracy", spec="-0")
@example(metric="latency_p95", spec="+1e999%")
@example(metric="size", spec=True)
def test_parse_change(metric, spec):
    change = returns_or_usage_error(parse_change, metric, spec)
    if change is None:
        return
    assert metric in CHANGE_METRICS
    assert math.isfinite(change.allowed) and change.allowed >= 0
    assert change.relative == str(spec).strip().endswith("%")


# ---- budgets files ----------------------------------------------------------------------------------------------
@FUZZ
@given(st.text(max_size=200) | st.text(alphabet="[]{}=\"'\n .,#budgetsmax_size_kb0123456789+-%", max_size=200))
@example("")
@example("[[budgets]]")
@example("budgets = 3")
@example("budgets = [1, 2]")
@example("[budgets]\nmax_size_kb = 1")
@example("[[budgets]]\n[[budgets.x]]")
def test_budgets_file_arbitrary_text(text):
    parsed = returns_or_usage_error(budgets_file.parse, text, "tfopt-budgets.toml")
    assert parsed is None or all(isinstance(e, budgets_file.Entry) for e in parsed.entries)
    returns_or_usage_error(budgets_file.parse, text, "pyproject.toml", pyproject=True)


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes and backslashes escaped, control characters (and DEL) as \\uXXXX."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if key and all(c in string.ascii_letters + string.digits + "_-" for c in key) else _toml_string(key)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


TOML_SCALARS = (st.booleans() | INTS | st.floats() | TEXT | st.dates()
                | st.sampled_from(["*", "*test_a*", "int8*", "tflite", "+10%", "-0.005", "+0%", "top1", "mae"]))
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(MARKER_KWARGS) | IDENT | TEXT, inner, max_size=3),
    max_leaves=5,
)
ENTRY_KEYS = st.sampled_from(["test", "variant", "backend", *sorted(PARSERS), *sorted(CHANGE_METRICS)]) | IDENT | TEXT
ENTRIES = st.lists(st.dictionaries(ENTRY_KEYS, TOML_VALUES, max_size=5), max_size=3)


def _render(entries: list[dict], header: str, extra: dict, tables: bool) -> str:
    lines = [f"{_toml_key(k)} = {_toml(v)}" for k, v in extra.items()]
    if not tables:
        return "\n".join([*lines, f"{header} = [" + ", ".join(_toml(e) for e in entries) + "]"]) + "\n"
    for entry in entries:
        lines.append(f"[[{header}]]")
        lines.extend(f"{_toml_key(k)} = {_toml(v)}" for k, v in entry.items())
    return "\n".join(lines) + "\n"


@FUZZ_SLOW
@given(entries=ENTRIES, tables=st.booleans(), pyproject=st.booleans(),
       extra=st.dictionaries(IDENT.filter(lambda k: k not in ("budgets", "tool")), TOML_SCALARS, max_size=1))
def test_budgets_file_structured(entries, tables, pyproject, extra):
    header = "tool.tfopt.budgets" if pyproject else "budgets"
    text = _render(entries, header, extra, tables)
    tomllib.loads(text)  # the generator writes valid TOML, so the interesting part is the budgets parser
    path = "pyproject.toml" if pyproject else "tfopt-budgets.toml"
    parsed = returns_or_usage_error(budgets_file.parse, text, path, pyproject=pyproject)
    if parsed is not None:
        assert len(parsed.entries) == len(entries)
        for entry in parsed.entries:
            budgets, changes = budgets_file.BudgetsFile(path, (entry,)).select("t.py::test[int8-tflite]", "int8",
                                                                               "tflite")
            assert set(budgets) <= set(PARSERS) and set(changes) <= set(CHANGE_METRICS)


# ---- crashes found by fuzzing, now fixed: each input must give a one-line usage error, never a crash ----------------
HUGE_HEX = "0x" + "f" * 4000  # a valid Python literal of 16000 bits
BIG_INT = 10**400  # beyond float range
HUGE_INT = 10**5000  # beyond the 4300-digit int<->str limit


def one_line_usage_error(fn, *args, match: str, **kwargs) -> str:
    """The message of the UsageError ``fn(*args, **kwargs)`` must raise: it matches ``match`` and is one line."""
    with pytest.raises(UsageError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message.strip() and "\n" not in message and "Traceback" not in message
    return message


VARIANT_CRASHES = [  # (id, text, what it raised before the fix, where)
    ("huge-int-in-spec-id", "int8(calibration_size=" + HUGE_HEX + ")", ValueError,
     "VariantSpec.id: repr() of an int over 4300 digits"),
    ("huge-int-pruned", "pruned(sparsity=" + HUGE_HEX + ")", ValueError, "tfmot_recipes validate: repr() of a huge int"),
    ("huge-int-pqat", "pqat(sparsity=" + HUGE_HEX + ")", OverflowError, "collab validate: float() of a huge int"),
    ("huge-int-lowrank", "lowrank(energy=" + HUGE_HEX + ")", OverflowError, "lowrank validate: float() of a huge int"),
    ("huge-int-distilled", "distilled(temperature=" + HUGE_HEX + ")", OverflowError,
     "distill validate: float() of a huge int"),
    ("double-star", "int8(a=1, **{})", TypeError, "parse_variant: `**` gives a None key; sorted() compares it with str"),
    ("deep-unary-3000", "int8(a=" + "-" * 3000 + "1)", RecursionError, "parse_variant: ast.parse recursion"),
    ("deep-unary-20000", "int8(a=" + "-" * 20000 + "1)", MemoryError, "parse_variant: parser stack overflow"),
]


@pytest.mark.parametrize("text", [c[1] for c in VARIANT_CRASHES], ids=[c[0] for c in VARIANT_CRASHES])
def test_known_crash_variant_grammar(text):
    message = one_line_usage_error(REGISTRY.resolve, text, match=r"parameters must be key=literal pairs of modest size")
    assert message.startswith(f"variant '{text[:20]}") and len(message) < 250  # names the variant, cut short


def test_double_star_is_a_usage_error():
    """``**`` used to be accepted as a parameter named None."""
    one_line_usage_error(parse_variant, "int8(**{'calibration_size': 1})",
                         match=r"variant \"int8\(\*\*\{'calibration_size': 1\}\)\": parameters must be key=literal")


MARKER_CRASHES = [  # (name, args, kwargs, the usage error now, what it raised before the fix, where)
    ("max_size_kb", (BIG_INT,), {}, r"max_size_kb budget must be a finite number, got 1000000", OverflowError,
     "budgets._number: math.isfinite(int) overflows"),
    ("max_accuracy_drop", (BIG_INT,), {}, r"max_accuracy_drop budget must be a finite number, got 1000000",
     OverflowError, "budgets._number: math.isfinite(int) overflows"),
    ("max_unique_weights", (-HUGE_INT,), {}, r"max_unique_weights needs a whole number >= 1, got <int too large to show>",
     ValueError, "budgets._unique: repr() of a huge int in the message"),
    ("max_latency_ms", (1.0,), {"percentile": HUGE_INT},
     r"max_latency_ms\(percentile=<int too large to show>\) must be one of 50, 90, 95, 99", ValueError,
     "budgets._latency: repr() of a huge int"),
    ("max_latency_ms", (1.0,), {"percentile": np.array([50, 95])},
     r"max_latency_ms\(percentile=array\(\[50, 95\]\)\) must be one of 50, 90, 95, 99", ValueError,
     "budgets._latency: `percentile not in PERCENTILES` is ambiguous for a numpy array"),
]


@pytest.mark.parametrize(("name", "args", "kwargs", "message"), [c[:4] for c in MARKER_CRASHES],
                         ids=["max_size_kb-10e400", "max_accuracy_drop-10e400", "max_unique_weights-huge",
                              "max_latency_ms-percentile-huge", "max_latency_ms-percentile-array"])
def test_known_crash_marker_arguments(name, args, kwargs, message):
    one_line_usage_error(parse_marker, name, args, kwargs, match=message)


def test_known_crash_change_threshold():
    one_line_usage_error(parse_change, "size", HUGE_INT, match="size = <a huge number> is not a change threshold")


BUDGETS_CRASHES = [  # (text, pyproject, the usage error now, what it raised before the fix, where)
    ("a = " + "[" * 3000 + "]" * 3000, False,
     r"budgets file tfopt-budgets.toml: not valid TOML \(maximum recursion depth exceeded\): fix the syntax",
     RecursionError, "budgets_file.parse: tomllib recursion on deep arrays is not a TOMLDecodeError"),
    ("[[budgets]]\nsize = " + "1" * 5000, False,
     r"budgets file tfopt-budgets.toml: not valid TOML \(Exceeds the limit \(4300 digits\)", ValueError,
     "budgets_file.parse: tomllib raises ValueError (int digit limit), not TOMLDecodeError"),
    ("[[budgets]]\nmax_size_kb = " + "9" * 400, False,
     r"budgets file tfopt-budgets.toml, line 2 \(entry 1\): max_size_kb budget must be a finite number", OverflowError,
     "budgets._number via the budgets file"),
    ("tool = 1\n", True, r"budgets file pyproject.toml: \[tool\] / \[tool.tfopt\] must be tables", AttributeError,
     "budgets_file.parse: data['tool'] is assumed to be a table"),
    ("[tool]\ntfopt = 'x'\n", True, r"budgets file pyproject.toml: \[tool\] / \[tool.tfopt\] must be tables",
     AttributeError, "budgets_file.parse: data['tool']['tfopt'] assumed a table"),
]


@pytest.mark.parametrize(("text", "pyproject", "message"), [c[:3] for c in BUDGETS_CRASHES],
                         ids=["deep-arrays", "5000-digit-int", "400-digit-int", "pyproject-tool-not-a-table",
                              "pyproject-tfopt-not-a-table"])
def test_known_crash_budgets_file(text, pyproject, message):
    one_line_usage_error(budgets_file.parse, text, "pyproject.toml" if pyproject else "tfopt-budgets.toml",
                         pyproject=pyproject, match=message)


@pytest.mark.parametrize("value", ["'x'", "2.5", "True", "[3]", "0", "-5"])
def test_calibration_size_must_be_a_whole_number(value):
    one_line_usage_error(REGISTRY.resolve, f"int8(calibration_size={value})",
                         match="calibration_size=.* must be a whole number >= 1")
