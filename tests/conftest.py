"""Shared fixtures: the real renal tiles (read from ../shared/data/kidney-pas beside the repository, never copied
in) and the one tiny checkpoint every test samples from (built by tests/tiny_models.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_models import build_tiny_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _sampling_stack_imported() -> None:
    """Import torch and diffusers once, before any test runs: the app's generation worker imports them in a
    background thread, and a test importing them at that very moment would race it (diffusers' lazy modules are
    not thread-safe; see app.generation.import_sampling_stack)."""
    from app.generation import import_sampling_stack

    import_sampling_stack()


REPO_ROOT = Path(__file__).resolve().parents[1]
KIDNEY_PAS = REPO_ROOT.parent / "shared" / "data" / "kidney-pas"


@pytest.fixture(scope="session")
def kidney_pas_dir() -> Path:
    """The 16 real PAS renal tiles with binary glomerulus masks; skips where the shared folder is absent."""
    if not (KIDNEY_PAS / "images").is_dir() or not (KIDNEY_PAS / "masks").is_dir():
        pytest.skip(f"real renal tiles not found at {KIDNEY_PAS} (the shared data folder beside the repository)")
    return KIDNEY_PAS


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random-weight checkpoint (seed 0), built once per session. Shared: treat it as read-only (copy it
    with shutil.copytree first to change or delete it)."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")
