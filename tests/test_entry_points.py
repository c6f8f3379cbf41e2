"""Third-party packages add recipes through the ``pytest_tfopt.variants`` entry-point group."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_installed_package_recipe_is_registered(tmp_path):
    (tmp_path / "tfopt_extra.py").write_text(textwrap.dedent("""
        from pytest_tfopt.variants import Recipe

        def register(registry):
            registry.register(Recipe("identity", params={}, apply=lambda m, t, p, log: (m, {"note": "extra"})))
    """))
    dist = tmp_path / "tfopt_extra-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tfopt-extra\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pytest_tfopt.variants]\nidentity = tfopt_extra:register\n")
    code = (
        "from pytest_tfopt.variants import default_registry\n"
        "plan = default_registry().resolve('identity+int8')\n"
        "print(plan.id)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "identity+int8"


def test_broken_entry_point_is_a_clear_error(tmp_path):
    dist = tmp_path / "tfopt_broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tfopt-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pytest_tfopt.variants]\nbad = no_such_module:register\n")
    code = "from pytest_tfopt.variants import default_registry\ndefault_registry()\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert "entry point 'bad' (no_such_module:register) in group 'pytest_tfopt.variants' failed: ModuleNotFoundError" in out.stderr
