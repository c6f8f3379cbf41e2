"""OpenVINO int8's NNCF overflow fix: chosen from the CPU (VNNI or not), overridable, recorded, in the cache key."""

from __future__ import annotations

import pytest

from pytest_tfopt.backends import openvino as ov_backend
from pytest_tfopt.errors import UsageError

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.mark.parametrize(("flags", "expected"), [(["avx2"], "enable"), (["avx2", "avx512_vnni"], "first_layer"),
                                                 (["avx_vnni"], "first_layer")])
def test_default_follows_vnni(monkeypatch, flags, expected):
    import pytest_tfopt.hardware as hardware

    monkeypatch.delenv(ov_backend.OVERFLOW_FIX_ENV, raising=False)
    monkeypatch.setattr(hardware, "hardware", lambda: {"cpu_flags": flags})
    assert ov_backend.overflow_fix() == expected


@pytest.mark.parametrize("mode", ["first_layer", "enable", "disable", " Enable "])
def test_environment_overrides(monkeypatch, mode):
    monkeypatch.setenv(ov_backend.OVERFLOW_FIX_ENV, mode)
    assert ov_backend.overflow_fix() == mode.strip().lower()


def test_bad_environment_value_is_one_line(monkeypatch):
    monkeypatch.setenv(ov_backend.OVERFLOW_FIX_ENV, "all")
    with pytest.raises(UsageError) as excinfo:
        ov_backend.overflow_fix()
    text = str(excinfo.value)
    assert "\n" not in text and "TFOPT_OPENVINO_OVERFLOW_FIX='all'" in text and "first_layer, enable, disable" in text


def test_recorded_and_keyed(monkeypatch, tmp_path, model_path, data_path, preloaded_runtimes):
    """Each mode is its own artifact (the cache key holds it) and says which it was in info['settings']."""
    from pytest_tfopt import Workbench

    keys, settings = set(), []
    for mode in ("first_layer", "enable"):
        monkeypatch.setenv(ov_backend.OVERFLOW_FIX_ENV, mode)
        wb = Workbench(model_path, data_path, cache_dir=tmp_path, threads=1, calibration_size=32)
        model = wb.runnable("int8", "openvino")
        keys.add(model.artifact.metadata["cache_key"])
        settings.append(model.info["settings"]["overflow_fix"])
    assert settings == ["first_layer", "enable"]
    assert len(keys) == 2
