"""Sampling speed: the product's Sampler against the loop a diffusers user writes, on the same weights and seeds.

    .venv/bin/python benchmarks/sampling_speed.py [--size 256] [--steps 50] [--batch 1] [--modes diffusers,product]

diffusers = the fair baseline: torch.no_grad, one fused CFG UNet call per step, DDIMScheduler.step, the whole
latent in one call at any size, NCHW, fp32. naive = a first implementation: two UNet calls per step, autograd
on (opt-in with --modes naive; at 256 px batch 4 its graph needs tens of GB). product = renal_ldm.sample.Sampler
(inference_mode, channels_last, cached caption K/V, no padding rows; up to twice the training size it denoises
the whole latent, as diffusers does, so its images match the baseline's to rounding). product-bf16 = the same
under bf16 autocast (where the CPU has native bf16); its images are compared with product's (PSNR, same seeds).
product-windowed = windows="always": overlapping training-size windows (MultiDiffusion, 2.25x the UNet work of
one whole-latent call at twice the training size), what `auto` does above twice the training size.

Both use the same checkpoint (models/demo when present, else randomly initialised weights of --config, said
in the output) and the same seeds. Timing runs all variants in this process, alternating over --rounds (the
fastest run of each counts), so load from other work on a shared CPU hits them alike; peak RSS comes from
one run of each variant alone in a fresh subprocess. Prints images/s, the ratio, the max absolute pixel
difference, peak RSS, and a torch.profiler table of the product sampler's top ops. --ablation also times the
product without channels_last and without the cross-attention K/V cache.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def naive_sample(model, encoder, caption: str, n: int, seed: int, steps: int, guidance: float, size: int):
    """The baseline: two UNet calls per step, grad enabled, default memory format."""
    import torch

    from renal_ldm.models.schedulers import build_sampling_scheduler
    from renal_ldm.sample import to_uint8

    cond, uncond = (_inputs(model, encoder, [text], n) for text in (caption, ""))
    side = size // model.config.autoencoder.downsampling_factor
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    latents = torch.cat(
        [torch.randn((1, model.config.autoencoder.latent_channels, side, side), generator=g) for g in gens]
    )
    sched = build_sampling_scheduler("ddim", model.noise_scheduler.config)
    sched.set_timesteps(steps)
    latents = latents * sched.init_noise_sigma
    with torch.enable_grad():
        for t in sched.timesteps:
            eps_c = model.unet(latents, t, **cond.kwargs()).sample
            eps_u = model.unet(latents, t, **uncond.kwargs()).sample
            eps = eps_u + guidance * (eps_c - eps_u)
            latents = sched.step(eps, t, latents, eta=0.0, generator=gens).prev_sample
        images = model.vae.decode(latents / model.config.autoencoder.scaling_factor).sample
    return to_uint8(images.detach())


def _inputs(model, encoder, captions: list[str], n: int):
    """The captions' UNet inputs (states, and the pooled embedding and token mask where the model takes them),
    n rows each, as any caller of the UNet must build them."""
    from renal_ldm.models.caption_inputs import UNetInputs, caption_inputs

    one = [caption_inputs(encoder, [c], model.unet, model.config.unet.caption_mask) for c in captions]
    return UNetInputs.stack(one, n).map(lambda x: x.clone())


def diffusers_sample(model, encoder, caption: str, n: int, seed: int, steps: int, guidance: float, size: int):
    """The loop of diffusers' own pipelines: no_grad, one fused CFG call per step, DDIMScheduler.step."""
    import torch
    from diffusers import DDIMScheduler

    from renal_ldm.sample import to_uint8

    inputs = _inputs(model, encoder, ["", caption], n)
    side = size // model.config.autoencoder.downsampling_factor
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    latents = torch.cat(
        [torch.randn((1, model.config.autoencoder.latent_channels, side, side), generator=g) for g in gens]
    )
    sched = DDIMScheduler.from_config(model.noise_scheduler.config)
    sched.set_timesteps(steps)
    latents = latents * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents, latents]), t)
            eps_u, eps_c = model.unet(x, t, **inputs.kwargs()).sample.chunk(2)
            latents = sched.step(eps_u + guidance * (eps_c - eps_u), t, latents, eta=0.0).prev_sample
        images = model.vae.decode(latents / model.config.autoencoder.scaling_factor).sample
    return to_uint8(images)


def _runner(mode: str, model_dir: Path, args):
    """A callable steps -> (n, H, W, 3) uint8 for one variant, on its own copy of the model."""
    import torch  # noqa: F401

    from renal_ldm.captions import GENERATING_CAPTION
    from renal_ldm.models.checkpoint import load_model
    from renal_ldm.sample import Sampler, SampleRequest
    from renal_ldm.text import get_text_encoder

    model = load_model(model_dir, device="cpu")
    encoder = get_text_encoder(model.text_encoder)
    encoder.encode([GENERATING_CAPTION])
    encoder.encode([""])
    n = args.batch
    if mode in ("naive", "diffusers"):
        loop = naive_sample if mode == "naive" else diffusers_sample
        return lambda steps: loop(model, encoder, GENERATING_CAPTION, n, args.seed, steps, args.guidance, args.size)
    sampler = Sampler(
        model,
        device="cpu",
        channels_last=mode != "product-nchw",
        cache_context=mode != "product-nocache",
        precision="bf16" if mode.startswith("product-bf16") else "fp32",
    )
    windows = "always" if mode.endswith("-windowed") else "auto"

    def run(steps):
        request = SampleRequest(
            caption=GENERATING_CAPTION,
            n=n,
            seed=args.seed,
            steps=steps,
            guidance=args.guidance,
            size=args.size,
            batch_size=n,
            windows=windows,
        )
        return np.stack([r.array for r in sampler.sample(request)])

    return run


def memory_worker(args) -> None:
    """One variant alone in this process: its peak RSS for one full run, and its images."""
    run = _runner(args.mode, Path(args.model_dir), args)
    rss_loaded = _current_rss_mb()
    images = run(args.steps)
    np.save(Path(args.out) / f"{args.mode}.npy", images)
    (Path(args.out) / f"{args.mode}.json").write_text(
        json.dumps({"rss_loaded_mb": rss_loaded, "peak_rss_mb": _peak_rss_mb()})
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo")
    parser.add_argument("--model", help="checkpoint directory (default: models/demo, else random --config weights)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--modes",
        default="diffusers,product,product-bf16",
        help="variants to time, the first is the baseline (also: naive, product-windowed, product-bf16-windowed, "
        "product-nchw, product-nocache)",
    )
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="timed rounds; variants alternate within a round and the fastest run of each counts "
        "(fair on a CPU shared with other work)",
    )
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--profile-rows", type=int, default=12)
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also time the product without channels_last and without the text K/V cache",
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for every variant (default: torch's)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode:
        memory_worker(args)
        return 0

    from renal_ldm.models.manifest import is_checkpoint
    from renal_ldm.paths import demo_model_dir

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    modes += [m for m in (["product-nchw", "product-nocache"] if args.ablation else []) if m not in modes]
    baseline = modes[0]
    if "product" not in modes:
        modes.append("product")
    with tempfile.TemporaryDirectory(prefix="renal-ldm-bench-") as tmp:
        tmp = Path(tmp)
        if args.model:
            model_dir, origin = Path(args.model), f"checkpoint {args.model}"
        elif is_checkpoint(demo_model_dir()) and args.config == "demo":
            model_dir, origin = demo_model_dir(), f"shipped demo model {demo_model_dir()}"
        else:
            model_dir = _random_checkpoint(args.config, tmp / "model")
            origin = (
                f"RANDOMLY INITIALISED {args.config}-config weights (no trained model at {demo_model_dir()}); "
                "speed and memory are representative, the images are noise"
            )
        print(f"model: {origin}")
        print(
            f"setting: {args.batch} images of {args.size} px, DDIM {args.steps} steps, guidance {args.guidance}, "
            f"CPU, {torch.get_num_threads()} torch threads"
        )

        # Peak memory: each variant alone in a fresh process.
        memory = {}
        for mode in (baseline, "product"):
            cmd = [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--model-dir",
                str(model_dir),
                "--out",
                str(tmp),
                "--size",
                str(args.size),
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--guidance",
                str(args.guidance),
                "--seed",
                str(args.seed),
            ]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
            memory[mode] = json.loads((tmp / f"{mode}.json").read_text())
        images = {mode: np.load(tmp / f"{mode}.npy") for mode in (baseline, "product")}

        # Speed: all variants in this process, alternating, so background load hits them alike.
        runners = {mode: _runner(mode, model_dir, args) for mode in modes}
        for run in runners.values():
            run(1)  # warm-up: oneDNN primitives for these shapes
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        cpu: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode in modes:
                t0, c0 = time.perf_counter(), time.process_time()
                runners[mode](args.steps)
                times[mode].append(time.perf_counter() - t0)
                cpu[mode].append(time.process_time() - c0)

        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            runners["product"](args.profile_steps)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows)

    rate = {mode: args.batch / min(ts) for mode, ts in times.items()}
    cpu_rate = {mode: args.batch / min(ts) for mode, ts in cpu.items()}
    print(f"\n{'variant':<14}{'images/s':>10}{'best s':>9}{'all runs (s)':>24}{'CPU s':>8}{'peak RSS':>11}")
    for mode in modes:
        peak = f"{memory[mode]['peak_rss_mb']:>9.0f}MB" if mode in memory else ""
        runs = ", ".join(f"{t:.2f}" for t in times[mode])
        print(f"{mode:<14}{rate[mode]:>10.3f}{min(times[mode]):>9.2f}{runs:>24}{min(cpu[mode]):>8.2f}{peak}")
    for mode in modes[1:]:
        print(
            f"\nspeed ratio {mode} / {baseline}: {rate[mode] / rate[baseline]:.2f}x wall clock, "
            f"{cpu_rate[mode] / cpu_rate[baseline]:.2f}x in CPU time"
        )
    if "product-nchw" in rate:
        print(
            f"channels_last gain (product / product-nchw): {rate['product'] / rate['product-nchw']:.2f}x wall, "
            f"{cpu_rate['product'] / cpu_rate['product-nchw']:.2f}x CPU"
        )
        print(
            f"text K/V cache gain (product / product-nocache): {rate['product'] / rate['product-nocache']:.2f}x "
            f"wall, {cpu_rate['product'] / cpu_rate['product-nocache']:.2f}x CPU"
        )
    diff = np.abs(images["product"].astype(int) - images[baseline].astype(int))
    from renal_ldm.models.configs import WHOLE_LATENT_FACTOR

    windowed = args.size > WHOLE_LATENT_FACTOR * _training_size(model_dir)
    print(
        f"max |pixel difference| product vs {baseline}: {int(diff.max())} (uint8 levels), "
        f"{(diff > 0).mean():.4%} of values differ, PSNR {_psnr(images['product'], images[baseline]):.1f} dB"
        + (
            " (different images by design: the product denoises overlapping windows above twice the training size)"
            if windowed
            else ""
        )
    )
    if "product-bf16" in runners:
        bf16, fp32 = runners["product-bf16"](args.steps), runners["product"](args.steps)
        print(f"bf16 vs fp32 images of the same seeds: PSNR {_psnr(bf16, fp32):.1f} dB (target >= 35)")
    base_mb, product_mb = memory[baseline]["peak_rss_mb"], memory["product"]["peak_rss_mb"]
    print(
        f"peak RSS: product {product_mb:.0f} MB vs {baseline} {base_mb:.0f} MB ({product_mb / base_mb:.2f}x); "
        f"after loading model + text encoder: {memory['product']['rss_loaded_mb']:.0f} MB"
    )
    print(f"\nwhere the product sampler's time goes ({args.profile_steps} steps + decode, top ops by self CPU):")
    print(table)
    return 0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def _training_size(model_dir: Path) -> int:
    from renal_ldm.models.checkpoint import read_manifest
    from renal_ldm.models.configs import ModelConfig

    return ModelConfig.from_dict(read_manifest(model_dir)["config"]).image_size


def _random_checkpoint(config_name: str, path: Path) -> Path:
    import torch

    from renal_ldm.models.build import build_noise_scheduler, build_unet, build_vae
    from renal_ldm.models.checkpoint import LatentDiffusionModel, save_model
    from renal_ldm.models.configs import get_config
    from renal_ldm.text import get_text_encoder

    config = get_config(config_name)
    dim = get_text_encoder(config.text_encoder).dim
    torch.manual_seed(0)
    model = LatentDiffusionModel(
        config=config,
        vae=build_vae(config),
        unet=build_unet(config, dim),
        noise_scheduler=build_noise_scheduler(config),
        text_encoder=config.text_encoder,
        context_dim=dim,
    )
    with torch.no_grad():  # diffusers zero-initialises output convs: give every weight some signal
        g = torch.Generator().manual_seed(1)
        for p in model.unet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return save_model(path, model)


if __name__ == "__main__":
    sys.exit(main())
