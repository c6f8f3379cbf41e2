"""Variant recipes: how a source model becomes an optimized artifact.

A variant is named by a spec string such as ``int8``, ``int8(calibration_size=100)`` or a
chain ``pruned(sparsity=0.8)+int8``: zero or more model-level *transforms* (pruning,
clustering, QAT, ...) followed by one *precision* (a converter recipe). A chain that ends
in a transform gets that transform's default precision appended.
Recipes live in a :class:`VariantRegistry`; the built-ins register through the same
:meth:`VariantRegistry.register` a third party uses (see ``hookspecs.py``).
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..entry_points import load_entry_points
from ..errors import UsageError

_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class VariantSpec:
    """A parsed variant: recipe ``name`` plus keyword ``params`` (sorted, hashable)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def id(self) -> str:
        """The canonical spelling, used in test ids and cache keys."""
        if not self.params:
            return self.name
        return f"{self.name}({','.join(f'{k}={v!r}' for k, v in self.params)})"

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class Recipe:
    """A named way to build an artifact (a *precision*) or to change a model (a *transform*).

    Precision: ``build(source, calibration, params) -> Artifact``.
    Transform: ``apply(model, train, params, log) -> (model, stats)``. With
    ``needs_keras`` (the default) ``model`` is a tf_keras model (rebuilt from Keras 3 if
    need be); without it, it is the current :class:`~pytest_tfopt.models.SourceModel`.
    It returns a Keras model or a ``SourceModel`` (e.g. a SavedModel). ``train`` is the
    training split (``None`` when the data set has none); ``stats`` (JSON-able) lands in
    the artifact metadata. ``params`` lists the accepted keyword parameters and their
    defaults; ``needs_calibration`` says whether calibration data is used (it is then
    part of the cache key); ``default_precision`` ends a chain that ends in this transform;
    ``validate(params)`` raises :class:`UsageError` for bad values; ``fingerprint(params)``
    names whatever else the result depends on (e.g. a student architecture) for the cache key.
    ``precision_params`` (transforms only) are defaults this transform gives the chain's precision
    when the spec does not set them (``clustered`` makes ``int8`` per-tensor, see there).
    """

    name: str
    build: Callable[..., Any] | None = None
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    needs_calibration: bool = False
    apply: Callable[..., Any] | None = None
    default_precision: str = "fp32"
    validate: Callable[[dict[str, Any]], None] | None = None
    needs_keras: bool = True
    fingerprint: Callable[[dict[str, Any]], str] | None = None
    precision_params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_transform(self) -> bool:
        return self.apply is not None


@dataclass(frozen=True)
class Plan:
    """A resolved variant: transforms (in order) and the final precision."""

    stages: tuple[tuple[VariantSpec, Recipe], ...]

    def precision_params(self) -> dict[str, Any]:
        """The precision's effective parameters: its defaults, then the transforms' ``precision_params``
        (for parameters the precision has), then what the spec sets."""
        spec, recipe = self.stages[-1]
        params = dict(recipe.params)
        for _, stage in self.stages[:-1]:
            params.update({k: v for k, v in stage.precision_params.items() if k in recipe.params})
        params.update(dict(spec.params))
        return params

    @property
    def id(self) -> str:
        return "+".join(spec.id for spec, _ in self.stages)

    @property
    def transforms(self) -> tuple[tuple[VariantSpec, Recipe], ...]:
        return self.stages[:-1]

    @property
    def precision(self) -> tuple[VariantSpec, Recipe]:
        return self.stages[-1]

    @property
    def needs_calibration(self) -> bool:
        return self.precision[1].needs_calibration

    @property
    def trains(self) -> bool:
        return bool(self.transforms)

    def __str__(self) -> str:
        return self.id


def _bounded(value: Any) -> Any:
    """Reject literals no recipe parameter can mean (ints over 64 bits crash repr/float downstream)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        raise ValueError("integer too large")
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _bounded(item)
    if isinstance(value, dict):
        for item in (*value.keys(), *value.values()):
            _bounded(item)
    return value


def parse_variant(text: str) -> VariantSpec:
    """Parse ``name`` or ``name(key=value, ...)`` (values are Python literals)."""
    match = _SPEC.match(text or "")
    if not match:
        raise UsageError(f"variant {text!r} is not NAME or NAME(key=value, ...): e.g. int8 or int8(calibration_size=100)")
    name, args = match.group(1), (match.group(2) or "").strip()
    params: dict[str, Any] = {}
    if args:
        try:
            with warnings.catch_warnings():  # "invalid escape sequence" etc. in a user's literal: not our warning
                warnings.simplefilter("ignore")
                call = ast.parse(f"f({args})", mode="eval").body
            assert isinstance(call, ast.Call) and not call.args
            for kw in call.keywords:
                assert kw.arg is not None  # f(**mapping)
                params[kw.arg] = _bounded(ast.literal_eval(kw.value))
        except (SyntaxError, ValueError, AssertionError, TypeError, RecursionError, MemoryError, OverflowError):
            raise UsageError(
                f"variant {text[:80]!r}: parameters must be key=literal pairs of modest size, "
                f"e.g. {name}(calibration_size=100)"
            ) from None
    return VariantSpec(name, tuple(sorted(params.items())))


def _split_top(text: str, sep: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def split_variants(text: str) -> list[str]:
    """Split a comma list of variants, keeping commas inside parentheses."""
    return [v for v in _split_top(text, ",") if v]


class VariantRegistry:
    """Name → :class:`Recipe`."""

    def __init__(self) -> None:
        self._recipes: dict[str, Recipe] = {}

    def register(self, recipe: Recipe) -> None:
        """Add ``recipe``; a second recipe of the same name replaces the first."""
        self._recipes[recipe.name] = recipe

    def names(self) -> list[str]:
        return sorted(self._recipes)

    def stage(self, text: str | VariantSpec) -> tuple[VariantSpec, Recipe]:
        """The spec and recipe of one stage; unknown names and parameters are usage errors."""
        spec = text if isinstance(text, VariantSpec) else parse_variant(text)
        recipe = self._recipes.get(spec.name)
        if recipe is None:
            raise UsageError(f"unknown variant {spec.name!r}: valid variants are {', '.join(self.names())}")
        unknown = [k for k, _ in spec.params if k not in recipe.params]
        if unknown:
            valid = ", ".join(recipe.params) or "none"
            raise UsageError(f"variant {spec.name!r} has no parameter {unknown[0]!r}: valid parameters are {valid}")
        if recipe.validate is not None:
            try:
                recipe.validate({**recipe.params, **dict(spec.params)})
            except (TypeError, ValueError, OverflowError) as exc:  # a validator tripped on an odd value
                raise UsageError(f"variant {spec.name!r}: bad parameter value ({exc})") from None
        return spec, recipe

    def resolve(self, text: str | Plan) -> Plan:
        """The :class:`Plan` for ``text`` (``A+B+...``): transforms first, one precision last."""
        if isinstance(text, Plan):
            return text
        parts = _split_top(text or "", "+")
        if any(not p for p in parts):
            raise UsageError(f"variant {text!r} has an empty stage: write e.g. pruned(sparsity=0.8)+int8")
        stages = [self.stage(p) for p in parts]
        for spec, recipe in stages[:-1]:
            if not recipe.is_transform:
                raise UsageError(
                    f"variant {text!r}: {spec.name!r} is a precision and must come last; "
                    f"transforms are {', '.join(self.transform_names()) or 'none'}"
                )
        if stages[-1][1].is_transform:
            stages.append(self.stage(stages[-1][1].default_precision))
        return Plan(tuple(stages))

    def transform_names(self) -> list[str]:
        return sorted(n for n, r in self._recipes.items() if r.is_transform)


ENTRY_POINT_GROUP = "pytest_tfopt.variants"


def default_registry() -> VariantRegistry:
    """A registry holding the built-in recipes and those of installed packages (entry points)."""
    from . import bf16, collab, distill, graphopt, lowrank, ptq, selective, tfmot_recipes

    registry = VariantRegistry()
    ptq.register(registry)
    bf16.register(registry)  # realized by the tf and xla backends
    selective.register(registry)  # int8 with max_drop, replacing ptq's plain int8
    tfmot_recipes.register(registry)
    lowrank.register(registry)
    graphopt.register(registry)
    collab.register(registry)
    distill.register(registry)
    load_entry_points(registry, ENTRY_POINT_GROUP)
    return registry
