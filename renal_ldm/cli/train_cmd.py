"""`renal-ldm train-vae` and `renal-ldm train`: the two training stages, thin wrappers over renal_ldm.training.

Several GPUs: `accelerate launch --multi_gpu -m renal_ldm train ...` (same options). The distributed code
paths were checked on CPU with `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m renal_ldm train ...`
(gloo): per-rank RNG states, one metrics line per step, and exact resume.
"""

from __future__ import annotations

import argparse
import os
import sys

from renal_ldm.cli._args import positive_int
from renal_ldm.models.configs import (
    MODEL_CONFIGS,
    PREDICTION_TYPES,
    UNET_PADDING_MODES,
    AutoencoderTrainSettings,
    LDMTrainSettings,
)

LDM, VAE = LDMTrainSettings(), AutoencoderTrainSettings()  # the defaults of every option below


def _add_data_arguments(
    p: argparse.ArgumentParser, config_default: str | None, defaults, *, with_config: bool = True
) -> None:
    p.add_argument("--data", required=True, help="patch data set: a folder with images/ + masks/, or a JSONL manifest")
    if with_config:
        default_text = config_default or "the autoencoder checkpoint's"
        p.add_argument(
            "--config",
            default=config_default,
            choices=list(MODEL_CONFIGS),
            help=f"model configuration (default: {default_text})",
        )
    p.add_argument("--max-steps", type=positive_int, help="optimizer steps in total")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help="images per step and process (default %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of the whole run: init, data order, noise (default %(default)s)",
    )
    p.add_argument(
        "--mixed-precision",
        default=defaults.mixed_precision,
        metavar="no|bf16",
        help="no (fp32, default) or bf16 autocast (a CUDA GPU, or a CPU with native bf16); fp16 is refused",
    )
    p.add_argument(
        "--workers", type=int, default=defaults.num_workers, help="data loader worker processes (default %(default)s)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_held_out_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--held-out",
        type=float,
        default=VAE.held_out,
        help="fraction of patches held out for the reconstruction PSNR (default %(default)s)",
    )
    p.add_argument(
        "--eval-every", type=int, default=VAE.eval_every, help="also evaluate every N steps (default: only at the end)"
    )


def _add_encode_margin_argument(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--encode-margin",
        type=int,
        default=0,
        metavar="PX",
        help=f"{what}: encode each image inside PX px of its own mirror image and crop the latent back, so the "
        "border cells are interior cells like the rest (a multiple of 4 for VQ-f4; default 0: a plain encoding, "
        "whose outermost cells the autoencoder's zero padding makes unlike the others)",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser("train-vae", help="train the VQ-f4 autoencoder (first stage)")
    _add_data_arguments(p, "demo", VAE)
    p.add_argument("--out", required=True, help="output checkpoint directory (autoencoder only)")
    p.add_argument("--lr", type=float, default=VAE.lr, help="Adam learning rate (default %(default)s)")
    _add_held_out_arguments(p)
    p.set_defaults(func=run_train_vae, max_steps_default=VAE.max_steps)

    p = subparsers.add_parser(
        "tune-decoder",
        help="fine-tune the decoder of a trained model (or autoencoder); its latents, and so its UNet, stay valid",
    )
    p.add_argument(
        "--model", required=True, help="checkpoint whose decoder to tune: an LDM from `train`, or a train-vae one"
    )
    _add_data_arguments(p, None, VAE, with_config=False)
    p.add_argument("--out", required=True, help="output checkpoint directory (the same kind as --model)")
    p.add_argument("--lr", type=float, default=VAE.lr, help="Adam learning rate (default %(default)s)")
    _add_held_out_arguments(p)
    _add_encode_margin_argument(p, "the latents the decoder learns to decode (use the UNet's own)")
    p.set_defaults(func=run_tune_decoder, max_steps_default=VAE.max_steps)

    p = subparsers.add_parser("train", help="train the latent diffusion UNet (resumable)")
    _add_data_arguments(p, None, LDM)
    p.add_argument("--vae", help="autoencoder checkpoint from train-vae (optional with --resume)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory; the final model goes to RUN/model")
    p.add_argument("--text-encoder", help="minilm (default for demo/tiny) or plip:PATH")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    p.add_argument(
        "--init-from",
        metavar="MODEL",
        help="start a new run from this trained model's weights (its autoencoder, latent scale and text encoder "
        "come with it, so no --vae); fresh optimizer and warm-up",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=LDM.checkpoint_every,
        help="write a resumable checkpoint every N steps (default %(default)s)",
    )
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights; RUN/model gets the EMA weights")
    p.add_argument("--ema-decay", type=float, default=LDM.ema_decay, help="EMA decay (default %(default)s)")
    p.add_argument("--lr", type=float, default=LDM.lr, help="AdamW learning rate (default %(default)s)")
    p.add_argument(
        "--warmup-steps", type=int, default=LDM.warmup_steps, help="linear warm-up steps (default %(default)s)"
    )
    p.add_argument(
        "--caption-dropout",
        type=float,
        default=LDM.caption_dropout,
        help='probability of training on "" (default %(default)s)',
    )
    p.add_argument(
        "--latent-cache-mb",
        type=int,
        default=LDM.latent_cache_mb,
        help="memory for cached VQ latents of seen (flipped) images; 0 encodes every batch (default %(default)s)",
    )
    p.add_argument(
        "--no-flip",
        action="store_true",
        help="no random flips (each image then has one latent to cache instead of four)",
    )
    p.add_argument(
        "--snr-gamma",
        type=float,
        default=LDM.snr_gamma,
        metavar="GAMMA",
        help="min-SNR loss weighting with this gamma, e.g. 5 (default: plain epsilon MSE, as the reference)",
    )
    p.add_argument(
        "--snr-floor",
        type=float,
        default=LDM.snr_floor,
        metavar="FLOOR",
        help="weight the clean image's error by at least FLOOR at high noise, where min-SNR weights it by SNR (next "
        "to nothing): truncated SNR weighting (Salimans & Ho 2022), e.g. 1; with --snr-gamma: clamp(SNR, FLOOR, "
        "GAMMA) (default: off)",
    )
    p.add_argument(
        "--prediction",
        choices=PREDICTION_TYPES,
        help="what the UNet predicts, for a new run: the noise or v (default: the config's, epsilon; a resumed or "
        "--init-from run keeps its own); recorded in the model's config, which the samplers follow",
    )
    p.add_argument(
        "--caption-mask",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cross-attention skips the caption's padding tokens (default: the config's, or the --init-from or "
        "resumed model's); recorded in the model's config, which the samplers follow",
    )
    p.add_argument(
        "--padding-mode",
        choices=UNET_PADDING_MODES,
        help="how the UNet's convolutions pad the latent's border (default: the config's, zeros, or the --init-from "
        "or resumed model's); replicate gives the border no value of its own; recorded in the model's config, which "
        "the samplers follow",
    )
    _add_encode_margin_argument(p, "the latents the UNet learns")
    p.add_argument(
        "--scale-latents",
        action="store_true",
        help="train on latents / std, the std measured on the data (LDM paper); recorded in the model's config",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=LDM.guidance,
        help="recommended guidance scale, recorded in the model's manifest: the app's and sample's default for it",
    )
    p.set_defaults(func=run_train, max_steps_default=LDM.max_steps)


def _is_main_process() -> bool:
    """Under `accelerate launch` / torchrun only rank 0 prints results."""
    return os.environ.get("RANK", "0") == "0"


def _open_data(path: str):
    from renal_ldm.data.patches import PatchDataset, data_fingerprint

    # Flips happen in the training loop (its generator is checkpointed), so the data set's own are off.
    dataset = PatchDataset(path, flips=False)
    return dataset, data_fingerprint(dataset)


def _reconstruction_split(args: argparse.Namespace):
    """(train, held-out, data fingerprint) for the autoencoder commands, refused by name when one side is empty."""
    from renal_ldm.data.patches import split_dataset

    dataset, fingerprint = _open_data(args.data)
    if len(dataset) < 2:
        raise ValueError(f"{args.data} holds {len(dataset)} patch; at least 2 are needed (one is held out)")
    train_set, held_out = split_dataset(dataset, args.held_out, seed=args.seed)
    if len(held_out) == 0:
        raise ValueError(f"--held-out {args.held_out} leaves no patch to measure the reconstruction on")
    return train_set, held_out, fingerprint


def _autoencoder_settings(args: argparse.Namespace):
    from renal_ldm.training import AutoencoderTrainSettings

    return AutoencoderTrainSettings(
        max_steps=args.max_steps or args.max_steps_default,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        held_out=args.held_out,
        eval_every=args.eval_every,
        mixed_precision=args.mixed_precision,
        num_workers=args.workers,
        progress=not args.no_progress,
    )


def run_train_vae(args: argparse.Namespace) -> int:
    from renal_ldm.training import check_mixed_precision, train_autoencoder

    check_mixed_precision(args.mixed_precision)
    train_set, held_out, fingerprint = _reconstruction_split(args)
    settings = _autoencoder_settings(args)
    print(
        f"train-vae: {len(train_set)} training and {len(held_out)} held-out patches from {args.data}", file=sys.stderr
    )
    result = train_autoencoder(
        train_set, held_out, args.out, config=args.config, settings=settings, data_fingerprint=fingerprint
    )
    if _is_main_process():
        print(f"held-out PSNR: {result.psnr:.2f} dB")
    return 0


def run_tune_decoder(args: argparse.Namespace) -> int:
    from renal_ldm.training import TrainingDiverged, check_mixed_precision
    from renal_ldm.training.decoder import tune_decoder

    check_mixed_precision(args.mixed_precision)
    train_set, held_out, _ = _reconstruction_split(args)
    print(
        f"tune-decoder: {len(train_set)} training and {len(held_out)} held-out patches from {args.data}",
        file=sys.stderr,
    )
    try:
        result = tune_decoder(
            args.model,
            train_set,
            held_out,
            args.out,
            settings=_autoencoder_settings(args),
            encode_margin=args.encode_margin,
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except TrainingDiverged as exc:
        print(f"renal-ldm tune-decoder: {exc}", file=sys.stderr)
        return 1
    if _is_main_process():
        print(f"held-out PSNR: {result.psnr_before:.2f} -> {result.psnr:.2f} dB")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from renal_ldm.training import LDMTrainSettings, TrainingDiverged, check_mixed_precision, train_ldm

    check_mixed_precision(args.mixed_precision)
    dataset, fingerprint = _open_data(args.data)
    settings = LDMTrainSettings(
        max_steps=args.max_steps or args.max_steps_default,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        caption_dropout=args.caption_dropout,
        ema=args.ema,
        ema_decay=args.ema_decay,
        checkpoint_every=args.checkpoint_every,
        latent_cache_mb=args.latent_cache_mb,
        mixed_precision=args.mixed_precision,
        flip=not args.no_flip,
        snr_gamma=args.snr_gamma,
        snr_floor=args.snr_floor,
        scale_latents=args.scale_latents,
        prediction=args.prediction,
        caption_mask=args.caption_mask,
        padding_mode=args.padding_mode,
        encode_margin=args.encode_margin,
        guidance=args.guidance,
        seed=args.seed,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    try:
        result = train_ldm(
            dataset,
            args.out,
            vae=args.vae,
            config=args.config,
            text_encoder=args.text_encoder,
            settings=settings,
            resume=args.resume,
            init_from=args.init_from,
            data_fingerprint=fingerprint,
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except TrainingDiverged as exc:
        print(f"renal-ldm train: {exc}", file=sys.stderr)
        return 1
    if _is_main_process():
        print(result.model_dir)
    return 0
