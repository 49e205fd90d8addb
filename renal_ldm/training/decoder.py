"""Decoder fine-tuning: a better decoder for an autoencoder whose latents are already in use.

A latent diffusion model was trained on this encoder's quantized latents, so the encoder, quant_conv and the
codebook stay frozen and every latent stays exactly what it was; only post_quant_conv and the decoder learn, with
train-vae's L1 + L2 reconstruction loss (as Stable Diffusion's "ft-MSE" decoder was made from its first one).
The checkpoint written is of the kind read: a latent diffusion model keeps its UNet, noise schedule and sampling
defaults and gets the new decoder, so it samples from the same latents and decodes them better.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from renal_ldm.models.checkpoint import MANIFEST, load_model, save_model
from renal_ldm.models.configs import AutoencoderTrainSettings
from renal_ldm.training.autoencoder import evaluate_reconstruction, reconstruction_losses
from renal_ldm.training.common import (
    MetricsLog,
    TrainingDiverged,
    check_encode_margin,
    check_image_size,
    check_mixed_precision,
    derive_seed,
    encode_interior,
    first_image_size,
    random_flips,
    stream_loader,
)

DECODER_RECORD = "decoder_tuned"
"""The manifest's extra key that says the decoder was fine-tuned, from which checkpoint, and what it measured."""


@dataclass
class DecoderTuneResult:
    model_dir: Path
    steps: int
    psnr: float
    psnr_before: float
    losses: list[float]


DECODER_MODULES = ("post_quant_conv", "decoder")
"""What a decoder fine-tune trains: the VQModel's modules after the quantizer."""


def decoder_parameters(vae) -> list[torch.nn.Parameter]:
    return [p for name in DECODER_MODULES for p in getattr(vae, name).parameters()]


def tune_decoder(
    model_dir: str | Path,
    train_dataset: Dataset,
    eval_dataset: Dataset,
    out_dir: str | Path,
    *,
    settings: AutoencoderTrainSettings | None = None,
    encode_margin: int = 0,
    overwrite: bool = False,
    log=print,
) -> DecoderTuneResult:
    """Fine-tune the decoder of the checkpoint in model_dir (an LDM or an autoencoder) on train_dataset; write
    the same kind of checkpoint to out_dir with only the decoder changed, and the held-out PSNR before and after.
    encode_margin: encode as the UNet's training did (encode_interior), so the decoder learns the latents it gets."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    settings = settings or AutoencoderTrainSettings()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if settings.max_steps < 1:
        raise ValueError(f"max steps must be >= 1; got {settings.max_steps}")
    if settings.batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {settings.batch_size}")
    if out_dir.resolve() == model_dir.resolve():
        raise ValueError(f"--out {out_dir} is the checkpoint being tuned; write the tuned one beside it")
    if (out_dir / MANIFEST).exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a checkpoint; choose another --out (nothing was changed)")
    mixed_precision = check_mixed_precision(settings.mixed_precision)
    model = load_model(model_dir, require_unet=False)
    size, factor = first_image_size(train_dataset), model.config.autoencoder.downsampling_factor
    check_image_size(size, factor, "decoder tuning")
    check_encode_margin(encode_margin, size, factor)

    accelerator = Accelerator(mixed_precision=mixed_precision)
    main = accelerator.is_main_process
    torch.manual_seed(settings.seed)
    vae = model.vae.to(accelerator.device).requires_grad_(False)
    trainable = decoder_parameters(vae)
    for p in trainable:
        p.requires_grad_(True)
    frozen_before = {k: v.clone() for k, v in vae.state_dict().items() if not _is_decoder_key(k)}
    generator = torch.Generator().manual_seed(derive_seed(settings.seed, accelerator.process_index, 0xDEC))
    optimizer = torch.optim.Adam(trainable, lr=settings.lr, betas=(0.5, 0.9))
    loader = stream_loader(
        train_dataset, seed=settings.seed, batch_size=settings.batch_size, num_workers=settings.num_workers
    )
    optimizer, loader = accelerator.prepare(optimizer, loader)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    before = evaluate_reconstruction(vae, eval_dataset, batch_size=settings.eval_batch_size, margin=encode_margin)
    log(f"held-out reconstruction PSNR before tuning the decoder: {before['psnr']:.2f} dB")
    losses: list[float] = []
    bar = tqdm(total=settings.max_steps, desc="tune-decoder", disable=not (main and settings.progress), unit="step")
    data = iter(loader)
    try:
        for step in range(1, settings.max_steps + 1):
            t0 = time.perf_counter()
            images = next(data)["image"]
            if settings.flip:
                images = random_flips(images, generator)
            with torch.no_grad():
                latents = encode_interior(vae, images, encode_margin)  # the frozen encoder: the UNet's latents
            with accelerator.autocast():
                recon = vae.decode(latents).sample  # quantized inside, as sampling decodes
                l1, l2 = reconstruction_losses(recon.float(), images)
                loss = l1 + l2
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"decoder loss became {loss_value} at step {step}; stopped without writing {out_dir} "
                    "(try a lower --lr)"
                )
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss_value)
            record = {
                "step": step,
                "loss": loss_value,
                "l1": float(l1.detach()),
                "l2": float(l2.detach()),
                "samples_per_s": images.shape[0] / (time.perf_counter() - t0),
            }
            if settings.eval_every and step % settings.eval_every == 0 and step < settings.max_steps:
                record["eval_psnr"] = evaluate_reconstruction(vae, eval_dataset, margin=encode_margin)["psnr"]
                log(f"step {step}: held-out PSNR {record['eval_psnr']:.2f} dB, loss {loss_value:.4f}")
            records.append(record)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            bar.update(1)
    finally:
        bar.close()

    final = evaluate_reconstruction(vae, eval_dataset, batch_size=settings.eval_batch_size, margin=encode_margin)
    unchanged = all(torch.equal(vae.state_dict()[k], v) for k, v in frozen_before.items())
    if not unchanged:  # the promise this command makes: the UNet's latents are what they were
        raise RuntimeError("the encoder or codebook changed while tuning the decoder; nothing was written")
    if main:
        model.vae = vae.requires_grad_(False).eval().cpu()
        tuned = {
            "from": str(model_dir),
            "from_fingerprint": model.fingerprint,
            "steps": settings.max_steps,
            "encode_margin": encode_margin,
            "held_out_psnr_before": before["psnr"],
            "held_out_psnr": final["psnr"],
            "held_out_items": len(eval_dataset),  # type: ignore[arg-type]
            "train_items": len(train_dataset),  # type: ignore[arg-type]
            "settings": dataclasses.asdict(settings),
        }
        save_model(out_dir, model, extra={DECODER_RECORD: tuned})
        metrics = MetricsLog(out_dir / "decoder_metrics.jsonl")
        for record in records:
            metrics.write(record)
        metrics.close()
        log(
            f"held-out reconstruction PSNR {final['psnr']:.2f} dB (before {before['psnr']:.2f} dB); "
            f"decoder tuned, checkpoint written to {out_dir}"
        )
    accelerator.wait_for_everyone()
    return DecoderTuneResult(out_dir, settings.max_steps, final["psnr"], before["psnr"], losses)


def _is_decoder_key(key: str) -> bool:
    return key.split(".", 1)[0] in DECODER_MODULES
