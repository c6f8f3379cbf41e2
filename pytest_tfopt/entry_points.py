"""Installed packages' extensions: entry points that register backends or variants.

Below both registries, so ``backends`` and ``variants`` load third-party entries without importing each other.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .errors import UsageError


def load_entry_points(registry: Any, group: str) -> None:
    """Call ``register(registry)`` of every installed package's entry point in ``group``."""
    for ep in entry_points(group=group):
        try:
            register = ep.load()
            register(registry)
        except Exception as exc:  # a broken third-party package must not break every run
            raise UsageError(
                f"entry point {ep.name!r} ({ep.value}) in group {group!r} failed: {type(exc).__name__}: {exc}; "
                "fix or uninstall that package"
            ) from None
