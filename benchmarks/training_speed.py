"""Training speed and memory: the product's train_ldm step against a bare PyTorch step on the same model.

    .venv/bin/python benchmarks/training_speed.py [--config demo] [--batch 8] [--size 128] [--steps 8]

product = renal_ldm.training.train_ldm on an in-memory data set (data loader, flips, caption dropout, cached
text states, cached VQ latents, accelerate, metrics line per step); samples/s is the median of its per-step
metrics after --warmup steps, so start-up, filling the caches and the final checkpoint write are not counted.
The product runs the demo recipe's settings (scripts/train_demo_model.sh): min-SNR-5 weighting, latents scaled
to unit variance, EMA, channels_last, the up-front latent cache, bf16 autocast where the CPU has native bf16.
product-fp32 = the same in fp32; product-nocache = fp32 with latent_cache_mb=0 (every batch through the VQ encoder).
bare = the plain fp32 loop a user writes: UNet forward + backward + AdamW on precomputed latents and text
states (no data loading, no VAE encode, no EMA, no accelerate, NCHW).
Each runs in its own subprocess so its peak RSS is clean; the ratio product / bare shows the loop's overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dataset(n: int, size: int):
    import torch
    from torch.utils.data import Dataset

    from renal_ldm.captions import GENERATING_CAPTION, HEADER

    captions = [
        GENERATING_CAPTION,
        HEADER + "\nThe image shows a low amount of Tubuli.",
        HEADER + "\nThere is a lot of Arteries visible in the image.",
    ]

    class Smooth(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            coarse = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
            self.images = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)

        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"image": self.images[i], "caption": captions[i % 3]}

    return Smooth()


def worker(args) -> None:
    import torch

    from renal_ldm.models.build import build_noise_scheduler, build_unet, build_vae
    from renal_ldm.models.checkpoint import LatentDiffusionModel, save_model
    from renal_ldm.models.configs import get_config
    from renal_ldm.text import get_text_encoder

    config = get_config(args.config)
    out = Path(args.out)
    total = args.warmup + args.steps
    if args.mode.startswith("product"):
        from renal_ldm.training import LDMTrainSettings, train_ldm
        from renal_ldm.training.common import cpu_has_native_bf16, read_jsonl

        torch.manual_seed(0)
        vae_dir = save_model(out / "vae", LatentDiffusionModel(config=config, vae=build_vae(config)))
        settings = LDMTrainSettings(
            max_steps=total,
            batch_size=args.batch,
            checkpoint_every=0,
            progress=False,
            latent_cache_mb=0 if args.mode == "product-nocache" else 1024,
            mixed_precision="bf16" if args.mode == "product" and cpu_has_native_bf16() else "no",
            snr_gamma=5.0,
            scale_latents=True,
            ema=True,
            ema_decay=0.999,
            lr=3e-4,
            warmup_steps=1,
        )
        run = out / args.mode
        train_ldm(
            _dataset(args.images or args.batch, args.size), run, vae=vae_dir, settings=settings, log=lambda m: None
        )
        rates = [line["samples_per_s"] for line in read_jsonl(run / "metrics.jsonl")][args.warmup :]
    else:
        encoder = get_text_encoder(config.text_encoder)
        torch.manual_seed(0)
        unet = build_unet(config, encoder.dim).train()
        sched = build_noise_scheduler(config)
        opt = torch.optim.AdamW(unet.parameters(), lr=2.5e-5)
        side = args.size // config.autoencoder.downsampling_factor
        latents = torch.randn(args.batch, config.autoencoder.latent_channels, side, side)
        context = encoder.encode(["a caption"] * args.batch).clone()  # a normal tensor, not an inference one
        pooled = encoder.pool(["a caption"] * args.batch).clone() if config.unet.caption_embedding else None
        rates = []
        for _ in range(total):
            t0 = time.perf_counter()
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (args.batch,))
            loss = torch.nn.functional.mse_loss(
                unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=context, class_labels=pooled).sample,
                noise,
            )
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            rates.append(args.batch / (time.perf_counter() - t0))
        rates = rates[args.warmup :]
    (out / f"{args.mode}.json").write_text(
        json.dumps(
            {
                "samples_per_s": statistics.median(rates),
                "all": rates,
                "peak_rss_mb": _peak_rss_mb(),
                "threads": torch.get_num_threads(),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, help="image side (default: the config's)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument(
        "--warmup", type=int, default=6, help="untimed first steps (they also fill the latent cache: images x 4 flips)"
    )
    parser.add_argument("--images", type=int, help="distinct training images (default: --batch)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads in both variants (default: torch's)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size is None:
        from renal_ldm.models.configs import get_config

        args.size = get_config(args.config).image_size
    if args.mode:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        worker(args)
        return 0
    print(
        f"setting: {args.config} config, batch {args.batch}, {args.size} px, {args.steps} timed steps after "
        f"{args.warmup} warm-up (median counts), CPU, threads {args.threads or 'default'}, "
        "randomly initialised weights"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="renal-ldm-train-bench-") as tmp:
        for mode in ("bare", "product", "product-fp32", "product-nocache"):
            cmd = (
                [
                    sys.executable,
                    __file__,
                    "--mode",
                    mode,
                    "--out",
                    tmp,
                    "--config",
                    args.config,
                    "--batch",
                    str(args.batch),
                    "--size",
                    str(args.size),
                    "--steps",
                    str(args.steps),
                    "--warmup",
                    str(args.warmup),
                ]
                + (["--threads", str(args.threads)] if args.threads else [])
                + (["--images", str(args.images)] if args.images else [])
            )
            subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
            results[mode] = json.loads((Path(tmp) / f"{mode}.json").read_text())
    print(f"\n{'variant':<16}{'samples/s':>11}{'peak RSS':>11}   per-step samples/s")
    for mode, r in results.items():
        per_step = ", ".join(f"{x:.2f}" for x in r["all"])
        print(f"{mode:<16}{r['samples_per_s']:>11.2f}{r['peak_rss_mb']:>9.0f}MB   {per_step}")
    bare, product = results["bare"], results["product"]
    print(
        f"\nproduct / bare samples/s: {product['samples_per_s'] / bare['samples_per_s']:.2f}x (1.0 = no loop overhead)"
    )
    fp32, nocache = results["product-fp32"], results["product-nocache"]
    print(f"bf16 autocast gain (product / product-fp32): {product['samples_per_s'] / fp32['samples_per_s']:.2f}x")
    print(
        f"latent cache gain (product-fp32 / product-nocache): {fp32['samples_per_s'] / nocache['samples_per_s']:.2f}x "
        "(without it every batch goes through the frozen VQ encoder)"
    )
    print(f"peak RSS product / bare: {product['peak_rss_mb'] / bare['peak_rss_mb']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
