"""Extension points of pytest-tfopt, added to pytest with ``pytest_addhooks``.

Implement them in a ``conftest.py`` or a plugin. The built-in variants and
backends register through the same ``registry.register`` calls.
"""

from __future__ import annotations

import pytest


@pytest.hookspec(historic=True)
def tfopt_register_variants(registry):  # type: ignore[no-untyped-def]
    """Add variant recipes: ``registry.register(pytest_tfopt.variants.Recipe(name, build, ...))``.

    ``build(source, calibration, params)`` returns a ``pytest_tfopt.artifact.Artifact``.
    Called once per session in ``pytest_configure``.
    """


@pytest.hookspec(historic=True)
def tfopt_register_backends(registry):  # type: ignore[no-untyped-def]
    """Add backends: ``registry.register(name, factory)`` where ``factory()`` returns a
    ``pytest_tfopt.backends.Backend``. Called once per session in ``pytest_configure``.
    """
