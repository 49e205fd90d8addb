"""Latent diffusion training: frozen VQ autoencoder and text encoder, a UNet learning epsilon, resumable.

Method (reference study; docs/architecture.md): AdamW lr 2.5e-5 with 1000 linear warm-up steps, epsilon MSE with
t uniform over the 1000 training steps, captions dropped to "" with p = 0.1 (so the unconditional branch
that sampling uses is trained), random horizontal / vertical flips, gradient norm clipped to 1.0, fp32 (fp16
is refused, bf16 is opt-in on CUDA), optional EMA of the weights. The VQ encoder and the text encoder are
frozen; caption states are cached per caption and latents per distinct flipped image (LatentCache). Everything
goes through accelerate's Accelerator, so `accelerate launch -m renal_ldm train ...` trains on several GPUs unchanged.

Run directory:

    RUN/
      run.json            settings of the run (checked on --resume)
      metrics.jsonl       one line per step: step, loss, lr, samples_per_s
      checkpoint/         the latest resumable state, replaced atomically every --checkpoint-every steps
        model/            a checkpoint directory (load_model works on it) with the raw (non-EMA) weights
        training_state.pt optimizer, LR schedule, step, samples consumed, EMA
        rng_state_<rank>.pt  python, numpy, torch(+CUDA) and the loop's generator state, per process
      model/              the final model (EMA weights when --ema), written when the run finishes

A run may start from another model's weights (init_from, `--init-from`): its UNet, autoencoder, latent scaling
factor and text encoder are taken as they are, with a fresh optimizer and warm-up, to train a model further on
new data or with other settings. The final model records where it started (extra.init_from, extra.init_step).

A resumed run gives the same per-step losses as an uninterrupted one with the same seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from renal_ldm.models.build import build_noise_scheduler, build_unet, set_padding_mode
from renal_ldm.models.caption_inputs import UNetInputs, caption_inputs
from renal_ldm.models.checkpoint import LatentDiffusionModel, load_model, save_model
from renal_ldm.models.configs import PREDICTION_TYPES, LDMTrainSettings, ModelConfig, get_config
from renal_ldm.models.manifest import RUN_CHECKPOINT_MODEL, RUN_MODEL
from renal_ldm.text import UNCONDITIONAL_CAPTION, get_text_encoder
from renal_ldm.training.common import (
    MetricsLog,
    TrainingDiverged,
    capture_rng_state,
    check_encode_margin,
    check_image_size,
    check_mixed_precision,
    derive_seed,
    encode_interior,
    first_image_size,
    random_flips,
    read_jsonl,
    recover_dir,
    replace_dir,
    restore_rng_state,
    stream_loader,
    write_json,
)

CHECKPOINT = RUN_CHECKPOINT_MODEL[0]
FINAL_MODEL = RUN_MODEL
RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
TRAINING_STATE = "training_state.pt"
# Settings that must not change when a run is resumed (the losses would no longer match the first run).
RESUME_KEYS = (
    "config",
    "text_encoder",
    "seed",
    "batch_size",
    "data_fingerprint",
    "vae_fingerprint",
    "caption_dropout",
    "flip",
    "warmup_steps",
    "lr",
    "num_processes",
    "ema",
    "latent_cache",
    "latent_prefill",
)


@dataclass
class LDMTrainResult:
    run_dir: Path
    model_dir: Path
    step: int
    resumed_from: int
    losses: list[float]  # the steps run in this call


def diffusion_loss(
    unet,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    inputs: UNetInputs,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE between the UNet's output and `target` (the noise, or v: see diffusion_target), per-sample weighted when
    weights (B,) are given (a module-level function so tests can inject a NaN). inputs: the captions' UNet inputs."""
    pred = unet(noisy, timesteps, **inputs.kwargs()).sample
    if weights is None:
        return F.mse_loss(pred.float(), target.float())
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weights).mean()


def diffusion_target(
    prediction_type: str, latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod_t: torch.Tensor
) -> torch.Tensor:
    """What the UNet learns to output for noisy = sqrt(a) latents + sqrt(1 - a) noise: the noise ("epsilon") or
    v = sqrt(a) noise - sqrt(1 - a) latents ("v_prediction", Salimans & Ho 2022; diffusers' get_velocity)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a = alphas_cumprod_t
        return a.sqrt() * noise - (1 - a).sqrt() * latents
    raise ValueError(f"unknown prediction type {prediction_type!r}; expected one of {', '.join(PREDICTION_TYPES)}")


def snr_loss_weights(
    alphas_cumprod_t: torch.Tensor, gamma: float | None, prediction_type: str = "epsilon", floor: float | None = None
) -> torch.Tensor:
    """Loss weights that put clamp(SNR, floor, gamma) on the clean image's error, per sample.

    gamma alone is min-SNR (Hang et al. 2023): min(SNR, gamma) / SNR for epsilon prediction, / (SNR + 1) for v
    prediction: the many nearly noise-free timesteps, whose target is hard to see and easy to overfit, stop
    dominating. It also weights the clean-image error at high noise by SNR, next to nothing where the layout is
    decided; floor (Salimans & Ho 2022's truncated SNR, max(SNR, 1)) keeps that weight at least `floor`.
    """
    snr = alphas_cumprod_t / (1 - alphas_cumprod_t)
    return snr.clamp(min=floor, max=gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)


class LatentCache:
    """Latents of the frozen VQ encoder, keyed by the content of the (already flipped) image.

    The encoder is the most expensive part of a step for small UNets (a 128 px image is encoded at full
    resolution), and a data set shows the same few thousand images, times four flips, over and over. Keying
    by content (blake2b of the pixels) needs no assumption about the data set: an image that changed is a new
    key. Each image is encoded alone, so its latent never depends on the batch it first came in, which keeps
    resumed runs exact. Stops adding entries at max_bytes; latents live on the training device.
    """

    def __init__(self, vae, scaling_factor: float, max_bytes: int, margin: int = 0) -> None:
        self.vae = vae
        self.scaling_factor = scaling_factor
        self.margin = margin  # px mirrored around each image before encoding (encode_interior)
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._store: dict[bytes, torch.Tensor] = {}

    @staticmethod
    def _key(pixels) -> bytes:
        return hashlib.blake2b(pixels.tobytes(), digest_size=20, person=str(pixels.shape).encode()[:16]).digest()

    @torch.no_grad()
    def prefill(self, dataset: Dataset, flips: bool, batch_size: int = 64, device=None) -> int:
        """Encode the data set's images (and, with flips, their three flipped copies) up front, in batches of
        batch_size in index order, until max_bytes is reached; returns the latents added.

        Batched encoding is several times faster than the one-at-a-time misses of `encode`, and the latents
        depend only on the data set (the same batches every time), so a resumed run prefills the same values.
        """
        if self.max_bytes <= 0:
            return 0
        added = 0
        variants = [(), (-1,), (-2,), (-1, -2)] if flips else [()]
        for start in range(0, len(dataset), batch_size):
            images = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch_size, len(dataset)))])
            if device is not None:
                images = images.to(device)
            for dims in variants:
                flipped = images.flip(dims) if dims else images
                latents = encode_interior(self.vae, flipped, self.margin) * self.scaling_factor
                for pixels, latent in zip(flipped.float().cpu().contiguous().numpy(), latents, strict=True):
                    size = latent.numel() * latent.element_size()
                    if self.bytes + size > self.max_bytes:
                        return added
                    key = self._key(pixels)
                    if key not in self._store:
                        self._store[key] = latent.clone()
                        self.bytes += size
                        added += 1
        return added

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.max_bytes <= 0:
            return encode_interior(self.vae, images, self.margin) * self.scaling_factor
        host = images.detach().float().cpu().contiguous().numpy()
        out = []
        for i, pixels in enumerate(host):
            key = self._key(pixels)
            latent = self._store.get(key)
            if latent is None:
                self.misses += 1
                latent = encode_interior(self.vae, images[i : i + 1], self.margin)[0] * self.scaling_factor
                size = latent.numel() * latent.element_size()
                if self.bytes + size <= self.max_bytes:
                    self._store[key] = latent
                    self.bytes += size
            else:
                self.hits += 1
            out.append(latent)
        return torch.stack(out)


LATENT_STD_IMAGES = 256
"""Images whose latents set the scaling factor (the data set's first ones, unflipped): enough for 3 significant
digits of a standard deviation over millions of latent values."""


@torch.no_grad()
def measure_latent_std(vae, dataset: Dataset, batch_size: int = 32, margin: int = 0) -> float:
    """Standard deviation of the (unscaled) VQ latents of the data set's first LATENT_STD_IMAGES images."""
    n = min(len(dataset), LATENT_STD_IMAGES)
    device = next(vae.parameters()).device
    latents = []
    for start in range(0, n, batch_size):
        images = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch_size, n))]).to(device)
        latents.append(encode_interior(vae, images, margin).float().cpu())
    std = float(torch.cat(latents).std())
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"the autoencoder's latents have standard deviation {std}; cannot scale them to unit variance")
    return std


def _load_vae(vae: str | Path | LatentDiffusionModel) -> LatentDiffusionModel:
    if isinstance(vae, LatentDiffusionModel):
        return vae
    return load_model(vae, require_unet=False)


def _compatible_config(config: ModelConfig, vae_model: LatentDiffusionModel) -> ModelConfig:
    """config, refused when its autoencoder differs from the VAE's in anything but the latent scaling factor
    (a property of the LDM trained on the latents, not of the autoencoder's weights)."""
    mine, theirs = dataclasses.asdict(config.autoencoder), dataclasses.asdict(vae_model.config.autoencoder)
    mine.pop("scaling_factor"), theirs.pop("scaling_factor")
    if mine != theirs:
        diff = ", ".join(f"{k}: config {mine[k]} vs autoencoder {theirs[k]}" for k in mine if mine[k] != theirs[k])
        raise ValueError(
            f"the autoencoder in {vae_model.path} does not match model config {config.name!r} ({diff}); "
            "train the autoencoder with the same --config"
        )
    return config


INIT_KEYS = ("init_from", "init_fingerprint", "init_step")
"""run.json (and model extra) entries of a run started from another model's weights."""


def run_settings_on_disk(run_dir: Path) -> dict[str, Any]:
    """run.json of run_dir, or {} before the run has written it."""
    import json

    path = run_dir / RUN_JSON
    return json.loads(path.read_text()) if path.is_file() else {}


def _load_init(
    init_from: str | Path | LatentDiffusionModel, config: ModelConfig | str | None, text_encoder: str | None
) -> LatentDiffusionModel:
    """The model a new run starts from, refused where the requested config or text encoder could not use it."""
    model = init_from if isinstance(init_from, LatentDiffusionModel) else load_model(init_from, require_unet=True)
    if config is not None:
        wanted = get_config(config) if isinstance(config, str) else config
        if wanted.unet != model.config.unet or wanted.noise != model.config.noise:
            raise ValueError(
                f"--init-from {model.path} has model config {model.config.name!r}, whose UNet or noise schedule "
                f"differs from --config {wanted.name!r}; omit --config to keep the model's own"
            )
    if text_encoder is not None and text_encoder != model.text_encoder:
        raise ValueError(
            f"--init-from {model.path} was trained with text encoder {model.text_encoder!r}, not {text_encoder!r}: "
            "its cross-attention expects that encoder's states; omit --text-encoder"
        )
    return model


def _init_record(init: LatentDiffusionModel | None) -> dict[str, Any]:
    """run.json entries naming the model a new run starts from ({} for a run from scratch or a resume)."""
    if init is None:
        return {}
    return {
        "init_from": str(init.path) if init.path else None,
        "init_fingerprint": init.fingerprint,
        "init_step": int(init.extra.get("init_step", 0)) + int(init.extra.get("step", 0)),
    }


def _run_settings(
    config: ModelConfig,
    encoder_spec: str,
    context_dim: int,
    settings: LDMTrainSettings,
    data_fingerprint: str | None,
    vae_model: LatentDiffusionModel,
    num_processes: int,
) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "text_encoder": encoder_spec,
        "context_dim": context_dim,
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "warmup_steps": settings.warmup_steps,
        "caption_dropout": settings.caption_dropout,
        "flip": settings.flip,
        "ema": settings.ema,
        "latent_cache": settings.latent_cache_mb > 0,  # per-image vs batched encoding: float rounding differs
        "latent_prefill": settings.latent_cache_mb > 0,
        "data_fingerprint": data_fingerprint,
        "vae": str(vae_model.path) if vae_model.path else None,
        "vae_fingerprint": vae_model.fingerprint,
        "num_processes": num_processes,
        "settings": dataclasses.asdict(settings),
    }


def train_ldm(
    dataset: Dataset,
    run_dir: str | Path,
    *,
    vae: str | Path | LatentDiffusionModel | None = None,
    config: ModelConfig | str | None = None,
    text_encoder: str | None = None,
    settings: LDMTrainSettings | None = None,
    resume: bool = False,
    init_from: str | Path | LatentDiffusionModel | None = None,
    data_fingerprint: str | None = None,
    log: Callable[[str], None] = print,
) -> LDMTrainResult:
    """Train (or with resume=True continue) the LDM of run_dir up to settings.max_steps in total.

    dataset: any torch Dataset of dict(image=float32 (3, H, W) in [-1, 1], caption=str).
    vae: an autoencoder (or LDM) checkpoint directory or a loaded model; on resume it may be omitted.
    config: named config or ModelConfig whose autoencoder must equal the VAE's (default: the VAE's config).
    text_encoder: "minilm" or "plip:PATH" (default: the config's).
    init_from: a trained LDM checkpoint whose weights a new run starts from (it carries its own autoencoder,
        so vae must be omitted); ignored when the run already has a checkpoint to resume.
    """
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    settings = settings or LDMTrainSettings()
    run_dir = Path(run_dir)
    _check_settings(settings)
    mixed_precision = check_mixed_precision(settings.mixed_precision)
    checkpoint_dir = run_dir / CHECKPOINT
    recover_dir(checkpoint_dir)
    has_checkpoint = (checkpoint_dir / TRAINING_STATE).is_file()
    step_done = 0
    if has_checkpoint:
        step_done = int(torch.load(checkpoint_dir / TRAINING_STATE, weights_only=True, mmap=True)["step"])
    if has_checkpoint and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a training run (checkpoint at step {step_done}); pass --resume to continue "
            "it, or choose another --out (nothing was changed)"
        )
    if resume and not has_checkpoint:
        log(f"no checkpoint in {run_dir}; starting a new run")

    if has_checkpoint:
        resumed = load_model(checkpoint_dir / FINAL_MODEL, require_unet=True)
        vae_model = resumed
        if vae is not None:
            given = _load_vae(vae)
            if given.fingerprint != resumed.extra.get("vae_fingerprint"):
                raise ValueError(
                    f"--vae {given.path} is not the autoencoder this run was started with "
                    f"({resumed.extra.get('vae')}); omit --vae to resume with the run's own copy"
                )
        vae_fingerprint = resumed.extra.get("vae_fingerprint")
        vae_path = resumed.extra.get("vae")
    elif init_from is not None:
        if vae is not None:
            raise ValueError("--init-from starts from a model that carries its own autoencoder; omit --vae")
        resumed = _load_init(init_from, config, text_encoder)
        vae_model = resumed
        vae_fingerprint = resumed.extra.get("vae_fingerprint") or resumed.fingerprint
        vae_path = resumed.extra.get("vae") or (str(resumed.path) if resumed.path else None)
    else:
        if vae is None:
            raise ValueError(
                "training a new run needs an autoencoder: pass --vae DIR (written by `renal-ldm train-vae`)"
            )
        vae_model = _load_vae(vae)
        resumed = None
        vae_fingerprint = vae_model.fingerprint
        vae_path = str(vae_model.path) if vae_model.path else None
    init_extra = _init_record(resumed if init_from is not None and not has_checkpoint else None)

    if config is None:
        config = resumed.config if resumed is not None else vae_model.config
    config = get_config(config) if isinstance(config, str) else config
    spec = text_encoder or (resumed.text_encoder if resumed is not None else config.text_encoder)
    size = first_image_size(dataset)
    check_image_size(size, config.size_multiple, "LDM training")
    check_encode_margin(settings.encode_margin, size, config.autoencoder.downsampling_factor)
    config = dataclasses.replace(config, image_size=size, text_encoder=spec)
    _compatible_config(config, vae_model)
    config = _with_prediction(config, settings.prediction, resumed, starts_from_init=bool(init_extra))
    prediction = config.noise.prediction_type
    if settings.caption_mask is not None:  # weights that attended to padding learn to do without it: a fine-tune
        config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, caption_mask=settings.caption_mask))
    if settings.padding_mode is not None:  # also a fine-tune: the weights stay, the border they see changes
        config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, padding_mode=settings.padding_mode))
    if resumed is not None and (settings.scale_latents or init_extra):
        # measured when the run (or the model it starts from) started: its UNet was trained on latents so scaled
        scale = resumed.config.autoencoder.scaling_factor
        config = dataclasses.replace(config, autoencoder=dataclasses.replace(config.autoencoder, scaling_factor=scale))
    elif settings.scale_latents:
        if resumed is not None:
            scale = resumed.config.autoencoder.scaling_factor  # measured when the run started
        else:
            std = measure_latent_std(vae_model.vae, dataset, margin=settings.encode_margin)
            scale = float(f"{1.0 / std:.4g}")
            log(f"latent std {std:.4f} over {min(len(dataset), LATENT_STD_IMAGES)} images: scaling factor {scale}")
        config = dataclasses.replace(config, autoencoder=dataclasses.replace(config.autoencoder, scaling_factor=scale))

    accelerator = Accelerator(mixed_precision=mixed_precision)
    main = accelerator.is_main_process
    device = accelerator.device
    encoder = get_text_encoder(spec, device="cpu")
    context_dim = encoder.dim

    run = _run_settings(config, spec, context_dim, settings, data_fingerprint, vae_model, accelerator.num_processes)
    run["vae"], run["vae_fingerprint"] = vae_path, vae_fingerprint
    run.update(init_extra)
    if has_checkpoint:
        _check_resume(run_dir, run)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / RUN_JSON, run)

    # Modules ------------------------------------------------------------------------------------------------
    torch.manual_seed(settings.seed)
    if resumed is not None:
        unet = set_padding_mode(resumed.unet.train(), config.unet.padding_mode)
    else:
        unet = build_unet(config, context_dim)
    unet.requires_grad_(True)
    # Measured on the 2-core CPU (benchmarks/training_speed.py): oneDNN convolutions train faster in NHWC.
    unet.to(memory_format=torch.channels_last)
    vae_module = vae_model.vae.eval().requires_grad_(False).to(device)
    vae_module.register_to_config(scaling_factor=config.autoencoder.scaling_factor)
    latent_cache = LatentCache(
        vae_module, config.autoencoder.scaling_factor, settings.latent_cache_mb * 2**20, settings.encode_margin
    )
    if settings.latent_cache_mb > 0 and step_done < settings.max_steps:  # a run only finished needs no latents
        t_fill = time.perf_counter()
        filled = latent_cache.prefill(dataset, settings.flip, device=device)
        took = time.perf_counter() - t_fill
        log(f"latent cache: {filled} latents ({latent_cache.bytes / 2**20:.0f} MB) encoded in {took:.0f} s")
    noise_scheduler = build_noise_scheduler(config)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    num_train_timesteps = config.noise.num_train_timesteps

    # foreach: a few batched kernels per step instead of a Python loop over every tensor.
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, foreach=True)
    # accelerate steps a prepared scheduler once per process per optimizer step, hence the factor.
    lr_scheduler = get_scheduler(
        "constant_with_warmup", optimizer, num_warmup_steps=settings.warmup_steps * accelerator.num_processes
    )
    ema = None
    if settings.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(unet.parameters(), decay=settings.ema_decay)

    start_step, consumed = 0, 0
    generator = torch.Generator().manual_seed(derive_seed(settings.seed, accelerator.process_index, 0x1D))
    if has_checkpoint:
        state = torch.load(checkpoint_dir / TRAINING_STATE, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        start_step, consumed = int(state["step"]), int(state["consumed"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        rng_path = checkpoint_dir / f"rng_state_{accelerator.process_index}.pt"
        restore_rng_state(torch.load(rng_path, weights_only=True), generator)

    loader = stream_loader(
        dataset, seed=settings.seed, batch_size=settings.batch_size, num_workers=settings.num_workers, start=consumed
    )
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    if ema is not None:
        ema.to(device)

    # Where the weights started, kept through resumes (run.json holds it from the first call).
    saved_run = run_settings_on_disk(run_dir) if main else {}
    lineage = {k: saved_run[k] for k in INIT_KEYS if saved_run.get(k) is not None}

    metrics = MetricsLog(run_dir / METRICS, enabled=main)
    if main:
        if has_checkpoint:
            metrics.truncate_after(start_step)  # steps after the checkpoint are run again
        else:
            metrics.reset()

    def save_checkpoint(step: int) -> None:
        accelerator.wait_for_everyone()
        partial = run_dir / f".{CHECKPOINT}.partial"
        if main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        accelerator.wait_for_everyone()
        if main:
            _save_ldm(
                partial / FINAL_MODEL,
                accelerator.unwrap_model(unet),
                vae_module,
                config,
                spec,
                context_dim,
                data_fingerprint,
                noise_scheduler,
                extra={"step": step, "ema": False, "vae": vae_path, "vae_fingerprint": vae_fingerprint, **lineage},
            )
            torch.save(
                {
                    "step": step,
                    "consumed": step * settings.batch_size * accelerator.num_processes,
                    "optimizer": optimizer.state_dict(),
                    "lr_scheduler": lr_scheduler.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                },
                partial / TRAINING_STATE,
            )
        torch.save(capture_rng_state(generator), partial / f"rng_state_{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if main:
            replace_dir(partial, checkpoint_dir)
        accelerator.wait_for_everyone()

    bar = tqdm(
        total=settings.max_steps,
        initial=start_step,
        desc="train",
        unit="step",
        disable=not (main and settings.progress),
    )
    losses: list[float] = []
    step = start_step
    last_saved = start_step if has_checkpoint else None
    data = iter(loader)
    try:
        while step < settings.max_steps:
            t0 = time.perf_counter()
            batch = next(data)
            images = batch["image"].to(device)
            captions = list(batch["caption"])
            b = images.shape[0]
            if settings.flip:
                images = random_flips(images, generator)
            drop = torch.rand(b, generator=generator) < settings.caption_dropout
            captions = [UNCONDITIONAL_CAPTION if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
            inputs = caption_inputs(encoder, captions, unet, config.unet.caption_mask).map(lambda x: x.to(device))
            latents = latent_cache.encode(images)
            noise = torch.randn(latents.shape, generator=generator).to(device)
            timesteps = torch.randint(0, num_train_timesteps, (b,), generator=generator).to(device)
            a = alphas_cumprod[timesteps].view(b, 1, 1, 1)
            noisy = (a.sqrt() * latents + (1 - a).sqrt() * noise).contiguous(memory_format=torch.channels_last)
            weights = (
                snr_loss_weights(a.view(b), settings.snr_gamma, prediction, settings.snr_floor)
                if settings.snr_gamma or settings.snr_floor
                else None
            )
            target = diffusion_target(prediction, latents, noise, a)
            with accelerator.autocast():
                loss = diffusion_loss(unet, noisy, timesteps, inputs, target, weights)
            loss_value = float(accelerator.reduce(loss.detach().float(), "mean"))
            if not math.isfinite(loss_value):
                raise TrainingDiverged(_diverged_message("loss", loss_value, step + 1, run_dir, last_saved))
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(unet.parameters(), settings.grad_clip)
            if grad_norm is not None and not math.isfinite(float(grad_norm)):
                raise TrainingDiverged(
                    _diverged_message("gradient norm", float(grad_norm), step + 1, run_dir, last_saved)
                )
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(accelerator.unwrap_model(unet).parameters())
            step += 1
            dt = time.perf_counter() - t0
            sps = b * accelerator.num_processes / dt
            losses.append(loss_value)
            metrics.write({"step": step, "loss": loss_value, "lr": lr, "samples_per_s": sps})
            bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{sps:.1f}")
            bar.update(1)
            if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < settings.max_steps:
                save_checkpoint(step)
                last_saved = step
    finally:
        bar.close()
        metrics.close()

    if last_saved != step:
        save_checkpoint(step)
    model_dir = run_dir / FINAL_MODEL
    if main:
        final_unet = accelerator.unwrap_model(unet)
        if ema is not None:
            final_unet = build_unet(config, context_dim)
            final_unet.load_state_dict(accelerator.unwrap_model(unet).state_dict())
            ema.copy_to(final_unet.parameters())
        history = read_jsonl(run_dir / METRICS) if (run_dir / METRICS).exists() else []
        _save_ldm(
            model_dir,
            final_unet,
            vae_module,
            config,
            spec,
            context_dim,
            data_fingerprint,
            noise_scheduler,
            extra={
                "step": step,
                "ema": settings.ema,
                "vae": vae_path,
                "vae_fingerprint": vae_fingerprint,
                "final_loss": history[-1]["loss"] if history else None,
                "settings": dataclasses.asdict(settings),
                **lineage,
            },
            guidance=settings.guidance,
        )
        log(f"trained to step {step}; model written to {model_dir}")
    accelerator.wait_for_everyone()
    return LDMTrainResult(run_dir=run_dir, model_dir=model_dir, step=step, resumed_from=start_step, losses=losses)


def _save_ldm(
    path: Path,
    unet,
    vae,
    config: ModelConfig,
    spec: str,
    context_dim: int,
    data_fingerprint,
    noise_scheduler,
    extra: dict[str, Any],
    guidance: float | None = None,
) -> None:
    model = LatentDiffusionModel(
        config=config,
        vae=vae,
        unet=unet,
        noise_scheduler=noise_scheduler,
        text_encoder=spec,
        context_dim=context_dim,
        data_fingerprint=data_fingerprint,
        recommended_guidance=guidance,
    )
    save_model(path, model, extra=extra)


def _diverged_message(what: str, value: float, step: int, run_dir: Path, last_saved: int | None) -> str:
    kept = (
        f"the last good checkpoint ({run_dir / CHECKPOINT}, step {last_saved}) is intact; resume from it with "
        "--resume, e.g. with a lower --lr"
        if last_saved is not None
        else "no checkpoint had been written yet"
    )
    return f"training stopped: the {what} became {value} at step {step}; {kept}"


def _with_prediction(
    config: ModelConfig, asked: str | None, resumed: LatentDiffusionModel | None, *, starts_from_init: bool
) -> ModelConfig:
    """The config with the prediction type the run trains: the one asked for, else the resumed (or initial)
    model's, else the config's. A model's weights learnt one parameterization, so --init-from keeps it."""
    had = resumed.config.noise.prediction_type if resumed is not None else config.noise.prediction_type
    wanted = asked or had
    if starts_from_init and wanted != had:
        raise ValueError(f"--prediction {wanted} differs from the --init-from model's {had}; its weights predict {had}")
    return dataclasses.replace(config, noise=dataclasses.replace(config.noise, prediction_type=wanted))


def _check_settings(settings: LDMTrainSettings) -> None:
    if settings.max_steps < 1:
        raise ValueError(f"max steps must be >= 1; got {settings.max_steps}")
    if settings.batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {settings.batch_size}")
    if settings.checkpoint_every < 0:
        raise ValueError(f"checkpoint-every must be >= 0 (0: only at the end); got {settings.checkpoint_every}")
    if not 0.0 <= settings.caption_dropout <= 1.0:
        raise ValueError(f"caption dropout must be in [0, 1]; got {settings.caption_dropout}")
    if not settings.lr > 0:
        raise ValueError(f"learning rate must be > 0; got {settings.lr}")
    if settings.warmup_steps < 0:
        raise ValueError(f"warm-up steps must be >= 0; got {settings.warmup_steps}")
    if settings.snr_gamma is not None and not (math.isfinite(settings.snr_gamma) and settings.snr_gamma > 0):
        raise ValueError(f"min-SNR gamma must be a finite number > 0; got {settings.snr_gamma}")
    if settings.snr_floor is not None and not (math.isfinite(settings.snr_floor) and settings.snr_floor > 0):
        raise ValueError(f"SNR floor must be a finite number > 0; got {settings.snr_floor}")
    if settings.snr_floor is not None and settings.snr_gamma is not None and settings.snr_floor > settings.snr_gamma:
        raise ValueError(
            f"SNR floor {settings.snr_floor} is above the min-SNR gamma {settings.snr_gamma}; expected floor <= gamma"
        )
    if settings.prediction is not None and settings.prediction not in PREDICTION_TYPES:
        raise ValueError(f"prediction must be one of {', '.join(PREDICTION_TYPES)}; got {settings.prediction!r}")
    if settings.guidance is not None and not (math.isfinite(settings.guidance) and settings.guidance >= 0):
        raise ValueError(f"recommended guidance must be a finite number >= 0; got {settings.guidance}")


def _check_resume(run_dir: Path, run: dict[str, Any]) -> None:
    import json

    saved = run_settings_on_disk(run_dir)
    if not saved:
        return
    # JSON turns tuples into lists; compare through a JSON round trip.
    now = json.loads(json.dumps(run, default=str))
    diffs = [k for k in RESUME_KEYS if k in saved and saved.get(k) != now.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: run {saved.get(k)!r} vs now {now.get(k)!r}" for k in diffs if k != "config")
        if "config" in diffs:
            detail = "model config differs" + (f"; {detail}" if detail else "")
        raise ValueError(
            f"cannot resume {run_dir}: {detail}. Resume with the run's original settings, or start a new --out"
        )
