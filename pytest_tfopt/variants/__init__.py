"""Variant recipes: how a source model becomes an optimized artifact.

A variant is named by a spec string such as ``int8`` or ``int8(calibration_size=100)``.
Recipes live in a :class:`VariantRegistry`; the built-ins register through the same
:meth:`VariantRegistry.register` a third party uses (see ``hookspecs.py``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    """A named way to build an artifact.

    ``build(source, calibration, params) -> Artifact``; ``params`` lists the accepted
    keyword parameters and their defaults; ``needs_calibration`` says whether
    ``calibration`` data is used (it is then part of the cache key).
    """

    name: str
    build: Callable[..., Any]
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    needs_calibration: bool = False


def parse_variant(text: str) -> VariantSpec:
    """Parse ``name`` or ``name(key=value, ...)`` (values are Python literals)."""
    match = _SPEC.match(text or "")
    if not match:
        raise UsageError(f"variant {text!r} is not NAME or NAME(key=value, ...): e.g. int8 or int8(calibration_size=100)")
    name, args = match.group(1), (match.group(2) or "").strip()
    params: dict[str, Any] = {}
    if args:
        try:
            call = ast.parse(f"f({args})", mode="eval").body
            assert isinstance(call, ast.Call) and not call.args
            for kw in call.keywords:
                params[kw.arg] = ast.literal_eval(kw.value)
        except (SyntaxError, ValueError, AssertionError, TypeError):
            raise UsageError(
                f"variant {text!r}: parameters must be key=literal pairs, e.g. {name}(calibration_size=100)"
            ) from None
    return VariantSpec(name, tuple(sorted(params.items())))


def split_variants(text: str) -> list[str]:
    """Split a comma list of variants, keeping commas inside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


class VariantRegistry:
    """Name → :class:`Recipe`."""

    def __init__(self) -> None:
        self._recipes: dict[str, Recipe] = {}

    def register(self, recipe: Recipe) -> None:
        """Add ``recipe``; a second recipe of the same name replaces the first."""
        self._recipes[recipe.name] = recipe

    def names(self) -> list[str]:
        return sorted(self._recipes)

    def resolve(self, text: str | VariantSpec) -> tuple[VariantSpec, Recipe]:
        """The spec and recipe for ``text``; unknown names and parameters are usage errors."""
        spec = text if isinstance(text, VariantSpec) else parse_variant(text)
        recipe = self._recipes.get(spec.name)
        if recipe is None:
            raise UsageError(f"unknown variant {spec.name!r}: valid variants are {', '.join(self.names())}")
        unknown = [k for k, _ in spec.params if k not in recipe.params]
        if unknown:
            valid = ", ".join(recipe.params) or "none"
            raise UsageError(f"variant {spec.name!r} has no parameter {unknown[0]!r}: valid parameters are {valid}")
        return spec, recipe


def default_registry() -> VariantRegistry:
    """A registry holding the built-in recipes."""
    from . import ptq

    registry = VariantRegistry()
    ptq.register(registry)
    return registry
