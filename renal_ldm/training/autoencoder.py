"""First-stage training: the VQ-f4 autoencoder (diffusers VQModel) on image patches.

Loss per batch = L1 + L2 reconstruction + codebook + beta * commitment (beta = 0.25), computed here from the
pre-quantization latent h and its nearest codebook vectors e (VQModel's own loss applies beta to the wrong
term for backward compatibility):
    codebook   = mean((e - sg(h))^2)      moves the codes towards the encoder outputs
    commitment = mean((sg(e) - h)^2)      keeps the encoder close to its codes
The decoder gets the straight-through quantized latent h + sg(e - h). The reference also used a perceptual
(LPIPS) and an adversarial loss; they need downloaded weights or many more steps than a CPU allows, so they
are left out. The codebook starts from encoder outputs of the first batch, so few codes are dead.

The result is an autoencoder-only checkpoint directory (manifest kind "autoencoder"), with the
held-out reconstruction PSNR in its extra and the per-step log in OUT/metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from renal_ldm.models.build import build_vae
from renal_ldm.models.checkpoint import MANIFEST, LatentDiffusionModel, save_model
from renal_ldm.models.configs import AutoencoderTrainSettings, ModelConfig, get_config
from renal_ldm.training.common import (
    MetricsLog,
    TrainingDiverged,
    check_image_size,
    check_mixed_precision,
    collate,
    derive_seed,
    encode_interior,
    first_image_size,
    random_flips,
    stream_loader,
)

COMMIT_BETA = 0.25


@dataclass
class AutoencoderTrainResult:
    model_dir: Path
    steps: int
    psnr: float
    psnr_before: float
    codebook_usage: float
    losses: list[float]


class VQLoss(torch.nn.Module):
    """The VQ model with its training loss as forward(), so DistributedDataParallel sees one forward call."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return vq_losses(self.vae, images)


def vq_losses(vae, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reconstruction, codebook and commitment losses of one batch (see the module docstring)."""
    h = vae.encode(images).latents
    quantizer = vae.quantize
    _, _, (_, _, indices) = quantizer(h)
    e = quantizer.embedding(indices.view(-1)).view(h.shape[0], h.shape[2], h.shape[3], h.shape[1])
    e = e.permute(0, 3, 1, 2)
    codebook = F.mse_loss(e, h.detach())
    commitment = F.mse_loss(h, e.detach())
    quantized = h + (e - h).detach()
    recon = vae.decode(quantized, force_not_quantize=True).sample
    l1, l2 = reconstruction_losses(recon, images)
    total = l1 + l2 + codebook + COMMIT_BETA * commitment
    return {"loss": total, "l1": l1, "l2": l2, "codebook": codebook, "commitment": commitment, "indices": indices}


def reconstruction_losses(recon: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1, L2) between a decoded batch and its images: the reconstruction part of the autoencoder's loss."""
    return (recon - images).abs().mean(), ((recon - images) ** 2).mean()


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor) -> torch.Tensor:
    """Encode, quantize, decode: what the diffusion model's samples go through at the end."""
    return vae.decode(vae.encode(images).latents).sample


@torch.no_grad()
def evaluate_reconstruction(
    vae, dataset: Dataset, *, batch_size: int = 8, device=None, margin: int = 0
) -> dict[str, float]:
    """Mean PSNR (dB, images in [0, 1]) and codebook usage (fraction of codes hit) over a data set; margin: encode
    each image as encode_interior does (the latents a UNet trained with that margin learnt)."""
    device = device or next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    psnrs: list[float] = []
    used = torch.zeros(vae.quantize.n_e, dtype=torch.bool)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in loader:
        images = batch["image"].to(device)
        h = encode_interior(vae, images, margin)
        _, _, (_, _, indices) = vae.quantize(h)
        used[indices.view(-1).cpu()] = True
        recon = vae.decode(h).sample
        mse = (((recon.clamp(-1, 1) - images) / 2) ** 2).flatten(1).mean(1)  # on the [0, 1] scale
        psnrs += (-10 * torch.log10(mse.clamp_min(1e-10))).tolist()
    vae.train(was_training)
    if not psnrs:
        raise ValueError("the held-out set is empty; use a larger data set or a larger --held-out fraction")
    return {"psnr": float(sum(psnrs) / len(psnrs)), "codebook_usage": float(used.float().mean())}


@torch.no_grad()
def init_codebook_from_latents(vae, images: torch.Tensor, generator: torch.Generator) -> None:
    """Codes = random encoder outputs of one batch (+ small noise): avoids a codebook of mostly dead entries."""
    h = vae.encode(images).latents
    vectors = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).cpu()
    n = vae.quantize.n_e
    picks = torch.randint(0, vectors.shape[0], (n,), generator=generator)
    noise = torch.randn((n, vectors.shape[1]), generator=generator) * (vectors.std() * 0.05 + 1e-6)
    vae.quantize.embedding.weight.copy_((vectors[picks] + noise).to(vae.quantize.embedding.weight))


def train_autoencoder(
    train_dataset: Dataset,
    eval_dataset: Dataset,
    out_dir: str | Path,
    *,
    config: ModelConfig | str = "demo",
    settings: AutoencoderTrainSettings | None = None,
    data_fingerprint: str | None = None,
    overwrite: bool = False,
    log=print,
) -> AutoencoderTrainResult:
    """Train the VQ first stage; write an autoencoder-only checkpoint to out_dir (and out_dir/metrics.jsonl)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    settings = settings or AutoencoderTrainSettings()
    config = get_config(config) if isinstance(config, str) else config
    out_dir = Path(out_dir)
    if settings.max_steps < 1:
        raise ValueError(f"max steps must be >= 1; got {settings.max_steps}")
    if settings.batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {settings.batch_size}")
    if (out_dir / MANIFEST).exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a checkpoint; choose another --out (nothing was changed)")
    mixed_precision = check_mixed_precision(settings.mixed_precision)
    size = first_image_size(train_dataset)
    # The autoencoder alone needs only its own factor (LDM training checks the stricter ModelConfig.size_multiple).
    check_image_size(size, config.autoencoder.downsampling_factor, "autoencoder training")
    if size != config.image_size:
        config = dataclasses.replace(config, image_size=size)

    accelerator = Accelerator(mixed_precision=mixed_precision)
    main = accelerator.is_main_process
    torch.manual_seed(settings.seed)
    vae = build_vae(config)
    generator = torch.Generator().manual_seed(derive_seed(settings.seed, accelerator.process_index, 0xAE))
    optimizer = torch.optim.Adam(vae.parameters(), lr=settings.lr, betas=(0.5, 0.9))
    loader = stream_loader(
        train_dataset, seed=settings.seed, batch_size=settings.batch_size, num_workers=settings.num_workers
    )
    trainer, optimizer, loader = accelerator.prepare(VQLoss(vae), optimizer, loader)
    raw_vae = accelerator.unwrap_model(trainer).vae

    metrics = MetricsLog(out_dir / "metrics.jsonl", enabled=main)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics.reset()
    records: list[dict[str, Any]] = []
    before = evaluate_reconstruction(raw_vae, eval_dataset, batch_size=settings.eval_batch_size)
    losses: list[float] = []
    bar = tqdm(total=settings.max_steps, desc="train-vae", disable=not (main and settings.progress), unit="step")
    data = iter(loader)
    try:
        for step in range(1, settings.max_steps + 1):
            t0 = time.perf_counter()
            batch = next(data)
            images = batch["image"]
            if settings.flip:
                images = random_flips(images, generator)
            if step == 1:
                init_codebook_from_latents(raw_vae, images, generator)
                if accelerator.num_processes > 1:
                    from accelerate.utils import broadcast

                    broadcast(raw_vae.quantize.embedding.weight.data, from_process=0)
            with accelerator.autocast():
                parts = trainer(images)
            loss = parts["loss"]
            loss_value = float(accelerator.reduce(loss.detach(), "mean"))
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"autoencoder loss became {loss_value} at step {step}; stopped without writing {out_dir} "
                    "(try a lower --lr)"
                )
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainer.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            sps = images.shape[0] * accelerator.num_processes / dt
            losses.append(loss_value)
            record = {
                "step": step,
                "loss": loss_value,
                "l1": float(parts["l1"].detach()),
                "l2": float(parts["l2"].detach()),
                "codebook": float(parts["codebook"].detach()),
                "commitment": float(parts["commitment"].detach()),
                "lr": optimizer.param_groups[0]["lr"],
                "samples_per_s": sps,
            }
            if settings.eval_every and step % settings.eval_every == 0 and step < settings.max_steps:
                record.update({f"eval_{k}": v for k, v in evaluate_reconstruction(raw_vae, eval_dataset).items()})
            records.append(record)
            metrics.write(record)
            bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{sps:.1f}")
            bar.update(1)
    finally:
        bar.close()
        metrics.close()

    final = evaluate_reconstruction(raw_vae, eval_dataset, batch_size=settings.eval_batch_size)
    final_record = {
        "step": settings.max_steps,
        "event": "eval",
        "held_out_psnr": final["psnr"],
        "codebook_usage": final["codebook_usage"],
        "held_out_psnr_before": before["psnr"],
    }
    records.append(final_record)
    if main:
        extra = {
            "trained": "autoencoder",
            "steps": settings.max_steps,
            "held_out_psnr": final["psnr"],
            "held_out_psnr_before": before["psnr"],
            "codebook_usage": final["codebook_usage"],
            "held_out_items": len(eval_dataset),  # type: ignore[arg-type]
            "train_items": len(train_dataset),  # type: ignore[arg-type]
            "settings": dataclasses.asdict(settings),
        }
        model = LatentDiffusionModel(config=config, vae=raw_vae.eval(), data_fingerprint=data_fingerprint)
        save_model(out_dir, model, extra=extra)
        # save_model swapped the directory in whole: put the per-step log back beside the weights.
        metrics = MetricsLog(out_dir / "metrics.jsonl")
        for record in records:
            metrics.write(record)
        metrics.close()
        log(
            f"held-out reconstruction PSNR {final['psnr']:.2f} dB (before training {before['psnr']:.2f} dB), "
            f"codebook usage {final['codebook_usage']:.1%}; autoencoder written to {out_dir}"
        )
    accelerator.wait_for_everyone()
    return AutoencoderTrainResult(
        model_dir=out_dir,
        steps=settings.max_steps,
        psnr=final["psnr"],
        psnr_before=before["psnr"],
        codebook_usage=final["codebook_usage"],
        losses=losses,
    )
