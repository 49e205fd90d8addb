"""The one tiny latent diffusion model every test builds (diffusers' `get_dummy_components` habit).

A random-weight 32 px "tiny" config checkpoint with the offline MiniLM text encoder; it samples in about a second
on the CPU. Every weight gets a small seeded spread on top of diffusers' initialisation (which zero-initialises
some output convolutions), so a sample depends on every input and on every weight. The same seed gives the same
weights on any machine and at any torch thread count, which is what the golden-value test of sampling relies on
(tests/renal_ldm/test_sample_golden.py): change the recipe here and those pinned values must be re-derived.

Importable as `tiny_models` from any test (tests/conftest.py puts tests/ on sys.path); the session fixture
`tiny_model_dir` in tests/conftest.py is the shared, read-only checkpoint built from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and diffusers take seconds to import: only when a test builds a model
    from renal_ldm.models.checkpoint import LatentDiffusionModel

TINY_CONFIG = "tiny"
TINY_TEXT_ENCODER = "minilm"
TINY_IMAGE_SIZE = 32  # the tiny config's training size, so the default sample size
WEIGHT_SPREAD = 0.02  # std of the seeded noise added to every weight


def _spread(module: Any, seed: int) -> Any:
    """Add seeded Gaussian noise to every parameter (its own generator: independent of the global RNG)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * WEIGHT_SPREAD)
    return module


def build_tiny_model(
    *,
    seed: int = 0,
    text_encoder: str = TINY_TEXT_ENCODER,
    context_dim: int | None = None,
    data_fingerprint: str | None = None,
) -> LatentDiffusionModel:
    """The tiny model in memory. `context_dim` defaults to the text encoder's width (override it only for tests
    of the UNet and checkpoint alone, which never encode a caption)."""
    import torch

    from renal_ldm.models.build import build_noise_scheduler, build_unet, build_vae
    from renal_ldm.models.checkpoint import LatentDiffusionModel
    from renal_ldm.models.configs import get_config
    from renal_ldm.text import text_encoder_dim

    config = get_config(TINY_CONFIG)
    if context_dim is None:
        context_dim = text_encoder_dim(text_encoder)
    torch.manual_seed(seed)  # diffusers' own initialisation draws from the global generator
    vae = _spread(build_vae(config), seed + 1)
    unet = _spread(build_unet(config, context_dim), seed + 2)
    return LatentDiffusionModel(
        config=config,
        vae=vae,
        unet=unet,
        noise_scheduler=build_noise_scheduler(config),
        text_encoder=text_encoder,
        context_dim=context_dim,
        data_fingerprint=data_fingerprint,
    )


def build_tiny_checkpoint(
    path: str | Path,
    *,
    seed: int = 0,
    text_encoder: str = TINY_TEXT_ENCODER,
    context_dim: int | None = None,
    data_fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save the tiny model as a checkpoint directory at `path` (replaced if present); returns the directory."""
    from renal_ldm.models.checkpoint import save_model

    model = build_tiny_model(
        seed=seed, text_encoder=text_encoder, context_dim=context_dim, data_fingerprint=data_fingerprint
    )
    return save_model(Path(path), model, extra=extra)


def build_tiny_autoencoder_checkpoint(path: str | Path, *, seed: int = 0) -> Path:
    """An autoencoder-only checkpoint of the tiny config (what `train-vae` writes), the starting point of LDM
    training tests. Plain diffusers initialisation, no spread: training tests need a sane first stage, not one
    whose every weight matters."""
    import torch

    from renal_ldm.models.build import build_vae
    from renal_ldm.models.checkpoint import LatentDiffusionModel, save_model
    from renal_ldm.models.configs import get_config

    torch.manual_seed(seed)
    config = get_config(TINY_CONFIG)
    return save_model(Path(path), LatentDiffusionModel(config=config, vae=build_vae(config)))


def write_tiny_plip(folder) -> None:
    """A 32-wide CLIP text model with a byte-level tokenizer (one token per character), laid out like vinid/plip."""
    import json

    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in bs] + [chr(256 + n) for n in range(256 - len(bs))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(folder)
