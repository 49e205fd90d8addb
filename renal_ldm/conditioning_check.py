"""Does the caption reach the UNet? The denoising loss on held-out patches with their own captions, against the
same patches with each other's captions (a fixed derangement) and with the empty caption.

A model that ignores its caption scores the three alike. One that uses it has a lower loss with the right caption
than with a wrong one; the gap, relative to the loss, is what guidance has to amplify. Measured at a few fixed
timesteps with fixed noise, so two checkpoints compare on identical inputs (scripts/conditioning_check.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from renal_ldm.models.caption_inputs import caption_inputs
from renal_ldm.models.checkpoint import LatentDiffusionModel
from renal_ldm.text import UNCONDITIONAL_CAPTION, get_text_encoder
from renal_ldm.training.ldm import diffusion_target

DEFAULT_TIMESTEPS = (100, 300, 500, 700, 900)


@dataclass(frozen=True)
class ConditioningCheck:
    timesteps: tuple[int, ...]
    right: tuple[float, ...]  # epsilon MSE per timestep with each patch's own caption
    shuffled: tuple[float, ...]  # with another patch's caption
    empty: tuple[float, ...]  # with ""

    @property
    def gap(self) -> tuple[float, ...]:
        """(shuffled - right) / right per timestep: how much worse a wrong caption is (0: caption ignored)."""
        return tuple((s - r) / r for s, r in zip(self.shuffled, self.right, strict=True))

    def table(self) -> str:
        lines = ["| t | own caption | another's | empty | gap (another - own) / own |", "|---|---|---|---|---|"]
        for t, r, s, e, g in zip(self.timesteps, self.right, self.shuffled, self.empty, self.gap, strict=True):
            lines.append(f"| {t} | {r:.4f} | {s:.4f} | {e:.4f} | {g:+.1%} |")
        return "\n".join(lines)


def derangement(n: int, generator: torch.Generator) -> list[int]:
    """A permutation of range(n) with no fixed point (each patch gets another's caption)."""
    if n < 2:
        raise ValueError(f"a shuffled-caption check needs at least 2 patches; got {n}")
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        if all(i != j for i, j in enumerate(order)):
            return order


@torch.inference_mode()
def conditioning_check(
    model: LatentDiffusionModel,
    images: torch.Tensor,
    captions: Sequence[str],
    *,
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    seed: int = 0,
    batch_size: int = 16,
) -> ConditioningCheck:
    """images: (N, 3, H, W) in [-1, 1] at the model's training size; captions: their own captions."""
    if images.shape[0] != len(captions):
        raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
    encoder = get_text_encoder(model.text_encoder)
    generator = torch.Generator().manual_seed(seed)
    others = [captions[j] for j in derangement(len(captions), generator)]
    latents = (
        torch.cat([model.vae.encode(images[i : i + batch_size]).latents for i in range(0, len(images), batch_size)])
        * model.config.autoencoder.scaling_factor
    )
    noise = torch.randn(latents.shape, generator=generator)
    alphas = model.noise_scheduler.alphas_cumprod
    prediction = model.config.noise.prediction_type

    def loss(texts: Sequence[str], t: int) -> float:
        total = 0.0
        for i in range(0, len(latents), batch_size):
            part = slice(i, i + batch_size)
            a = alphas[t]
            noisy = a.sqrt() * latents[part] + (1 - a).sqrt() * noise[part]
            chunk = list(texts[part])
            inputs = caption_inputs(encoder, chunk, model.unet, model.config.unet.caption_mask)
            steps = torch.full((len(chunk),), t, dtype=torch.long)
            out = model.unet(noisy, steps, **inputs.kwargs()).sample
            target = diffusion_target(prediction, latents[part], noise[part], a)
            total += float(((out - target) ** 2).mean()) * len(chunk)
        return total / len(latents)

    empty = [UNCONDITIONAL_CAPTION] * len(captions)
    ts = tuple(int(t) for t in timesteps)
    return ConditioningCheck(
        timesteps=ts,
        right=tuple(loss(captions, t) for t in ts),
        shuffled=tuple(loss(others, t) for t in ts),
        empty=tuple(loss(empty, t) for t in ts),
    )
