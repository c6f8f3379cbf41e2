"""Extension points of pytest-tfopt, added to pytest with ``pytest_addhooks``.

Three ways to add variant recipes or backends, all calling the same
``registry.register`` the built-ins use:

1. In a ``conftest.py`` or plugin, a plain function (pytest discovers only hooks named
   ``pytest_*``, so pytest-tfopt looks these up itself, in every plugin and conftest)::

       def tfopt_register_variants(registry):
           registry.register(Recipe("scaled", params={"factor": 1.0}, apply=scale))

2. The pluggy hooks below, ``pytest_tfopt_register_variants`` / ``pytest_tfopt_register_backends``.
3. An installed package's entry point in the group ``pytest_tfopt.variants`` (or
   ``pytest_tfopt.backends``) naming a ``register(registry)`` function; this also works
   without pytest (``Workbench`` loads them).
"""

from __future__ import annotations

import pytest


@pytest.hookspec(historic=True)
def pytest_tfopt_register_variants(registry):  # type: ignore[no-untyped-def]
    """Add variant recipes: ``registry.register(pytest_tfopt.variants.Recipe(...))``.

    A precision recipe has ``build(source, calibration, params) -> Artifact``; a transform
    has ``apply(model, train, params, log) -> (model, stats)``. Called once per session.
    """


@pytest.hookspec(historic=True)
def pytest_tfopt_register_backends(registry):  # type: ignore[no-untyped-def]
    """Add backends: ``registry.register(name, factory)``, ``factory()`` returning a
    ``pytest_tfopt.backends.Backend``. Called once per session.
    """
