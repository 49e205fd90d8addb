"""Where the product keeps its files: one data directory (RENAL_LDM_HOME, default ./var) and the shipped model."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "RENAL_LDM_HOME"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL_ENV = "RENAL_LDM_DEMO_MODEL"
SHIPPED_DEMO_MODEL = REPO_ROOT / "models" / "demo"


def demo_model_dir() -> Path:
    """The default model of the app and the CLI: the shipped checkpoint, or another folder named by
    RENAL_LDM_DEMO_MODEL. Read when asked (not at import), so a test or a deployment sets the variable."""
    return Path(os.environ.get(DEMO_MODEL_ENV) or SHIPPED_DEMO_MODEL).expanduser()


def data_home() -> Path:
    """The data directory (created on first use): database, samples, slides, survey images, registered files."""
    home = Path(os.environ.get(HOME_ENV) or "var").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def data_subdir(name: str) -> Path:
    """A product-named folder under the data directory (never a name taken from user input)."""
    path = data_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
