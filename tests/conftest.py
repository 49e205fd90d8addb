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


TINY_SEGMENTER_PATCHES = dict(n=8, size=64, seed=0, composition={"Glomeruli": 0.3, "Tubuli": 0.3})
"""The fixed phantom set the tiny segmenter learns (renal_ldm.phantom.generate_dataset arguments)."""


@pytest.fixture(scope="session")
def tiny_segmenter_dir(tmp_path_factory) -> Path:
    """A tiny eight-class segmenter ("tiny" config) that has learnt 8 fixed 64 px phantom patches (Dice > 0.9 on
    them), trained once per session with train_segmenter on one thread. Its training patches are in
    `tiny_segmenter_dir.parent / "data"` (TINY_SEGMENTER_PATCHES). Shared: treat it as read-only."""
    import torch

    from renal_ldm.data.patches import PatchDataset
    from renal_ldm.phantom import generate_dataset
    from renal_ldm.segment import SEGMENTER_CONFIGS, SegmenterTrainSettings, train_segmenter

    root = tmp_path_factory.mktemp("tiny-segmenter")
    generate_dataset(root / "data", **TINY_SEGMENTER_PATCHES)
    patches = PatchDataset(root / "data", return_mask=True, flips=False)
    settings = SegmenterTrainSettings(
        epochs=14, batch_size=4, lr=3e-3, crop=64, crops_per_image=4, patience=14, monitor="val_dice", progress=False
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_segmenter(
            patches,
            patches,
            root / "segmenter",
            config=SEGMENTER_CONFIGS["tiny"],
            settings=settings,
            log=lambda m: None,
        )
    finally:
        torch.set_num_threads(previous)
    return root / "segmenter"
