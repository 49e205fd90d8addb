"""Helpers for the AppTest tests (a module of its own: every conftest.py is named conftest)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIN = str(REPO_ROOT / "app" / "main.py")
RUN_TIMEOUT = 60.0  # the first run in a process imports torch and diffusers


def build_tiny_checkpoint(model_dir: Path) -> Path:
    """A random-weight 32 px latent diffusion checkpoint with the MiniLM text encoder (samples in ~1 s)."""
    import torch

    from renal_ldm.models.build import build_noise_scheduler, build_unet, build_vae
    from renal_ldm.models.checkpoint import LatentDiffusionModel, save_model
    from renal_ldm.models.configs import get_config
    from renal_ldm.text import text_encoder_dim

    torch.manual_seed(0)
    config = get_config("tiny")
    context_dim = text_encoder_dim("minilm")
    model = LatentDiffusionModel(
        config=config,
        vae=build_vae(config),
        unet=build_unet(config, context_dim=context_dim),
        noise_scheduler=build_noise_scheduler(config),
        text_encoder="minilm",
        context_dim=context_dim,
    )
    return save_model(model_dir, model)


def page_path(filename: str) -> str:
    """A pages/ file as AppTest.switch_page wants it: relative to app/main.py's folder."""
    return os.path.relpath(REPO_ROOT / "pages" / filename, REPO_ROOT / "app")
