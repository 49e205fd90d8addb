"""App settings from the environment: defaults, and a bad value named with what was expected."""

from __future__ import annotations

import pytest

from app.settings import load_settings


def test_defaults_when_nothing_is_set(monkeypatch):
    for name in ("RENAL_LDM_SURVEY_ONLY", "RENAL_LDM_MAX_UPLOAD_MB", "RENAL_LDM_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.survey_only, settings.max_upload_mb, settings.precision) == (False, 20, "auto")


def test_bf16_precision_is_read(monkeypatch):
    monkeypatch.setenv("RENAL_LDM_PRECISION", "BF16")
    assert load_settings().precision == "bf16"


def test_fp32_can_be_asked_for(monkeypatch):
    monkeypatch.setenv("RENAL_LDM_PRECISION", " fp32 ")
    assert load_settings().precision == "fp32"


def test_an_unknown_precision_is_named(monkeypatch):
    monkeypatch.setenv("RENAL_LDM_PRECISION", "fp8")
    with pytest.raises(ValueError, match=r"RENAL_LDM_PRECISION='fp8' must be one of fp32, bf16, auto \(default auto\)"):
        load_settings()


def test_a_bad_upload_limit_is_named(monkeypatch):
    monkeypatch.setenv("RENAL_LDM_MAX_UPLOAD_MB", "lots")
    with pytest.raises(ValueError, match="RENAL_LDM_MAX_UPLOAD_MB='lots' must be a positive whole number"):
        load_settings()
