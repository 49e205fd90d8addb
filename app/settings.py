"""App settings read from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

from renal_ldm.models.configs import SAMPLING_PRECISIONS

APP_PRECISION = "auto"
"""The Generate page samples in bf16 where the machine runs it natively: a person waits for these images, and on
the AMX CPU a batch of 4 takes about half the time of fp32 (images within 43 dB PSNR of fp32's, the caption
figures unchanged: models/demo/README.md). The CLI and the library default to fp32."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class AppSettings:
    """SURVEY_ONLY hosts the participant survey alone (nothing else reachable) on a public address."""

    survey_only: bool
    max_upload_mb: int
    precision: str  # the Generate page's UNet precision: auto (bf16 where the machine runs it natively), fp32, bf16


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"environment variable {name}={raw!r} must be a positive whole number (default {default})")
    return value


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ValueError(f"environment variable {name}={raw!r} must be one of {', '.join(choices)} (default {default})")
    return raw


def load_settings() -> AppSettings:
    return AppSettings(
        survey_only=_flag("RENAL_LDM_SURVEY_ONLY"),
        max_upload_mb=_positive_int("RENAL_LDM_MAX_UPLOAD_MB", 20),
        precision=_choice("RENAL_LDM_PRECISION", SAMPLING_PRECISIONS, APP_PRECISION),
    )
