"""`renal-ldm stitch` and `renal-ldm sample-slide`: synthetic whole-slide images as pyramidal TIFFs, from a grid of
generated patches (stitch) or sampled as one seamless canvas with per-region captions (sample-slide)."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from renal_ldm.cli._args import apply_threads, positive_int
from renal_ldm.models.configs import SAMPLING, SAMPLING_PRECISIONS
from renal_ldm.models.schedulers import SCHEDULERS
from renal_ldm.slides.pyramid import COMPRESSIONS, DEFAULT_COMPRESSION, DEFAULT_QUALITY, DEFAULT_TILE
from renal_ldm.slides.stitch import ORDER_MANIFEST, stitch_slide


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stitch",
        help="stitch a folder of samples into a pyramidal tiled TIFF that OpenSlide and QuPath read",
    )
    p.add_argument(
        "--samples",
        required=True,
        help="a `sample` output folder (taken in its manifest.csv order) or any folder of same-size images "
        "(file-name order)",
    )
    p.add_argument("--grid", required=True, help="COLSxROWS patches, e.g. 40x40; the first COLS*ROWS samples fill it")
    p.add_argument("--out", required=True, help="output slide (.tif/.tiff); its provenance goes to OUT.json")
    p.add_argument(
        "--order",
        default=ORDER_MANIFEST,
        help="manifest (the folder's own order, default) or shuffle:SEED (a seeded permutation)",
    )
    _add_pyramid_options(p)
    p.set_defaults(func=run)
    register_sample_slide(subparsers)


def _add_pyramid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mpp", type=float, default=0.5, help="microns per pixel at full resolution (default 0.5)")
    p.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default=DEFAULT_COMPRESSION,
        help=f"tile compression (default {DEFAULT_COMPRESSION}; deflate is lossless)",
    )
    p.add_argument("--quality", type=int, help=f"JPEG quality 1-100 (default {DEFAULT_QUALITY}; jpeg only)")
    p.add_argument(
        "--tile",
        type=positive_int,
        default=DEFAULT_TILE,
        help=f"TIFF tile side, a multiple of 16 (default {DEFAULT_TILE})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output slide")


def register_sample_slide(subparsers) -> None:
    p = subparsers.add_parser(
        "sample-slide",
        help="sample one seamless synthetic slide of any size (overlapping latent windows), per-region captions",
    )
    p.add_argument("--model", help="model directory (default: the shipped demo model models/demo)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--caption", help="one caption for the whole slide, \\n for line breaks")
    what.add_argument("--levels", help='class levels for the whole slide, e.g. "Glomeruli=high,Tubuli=medium"')
    what.add_argument(
        "--layout",
        help="a JSON layout mapping regions of the slide to captions (boxes, polygons or a label image; see README)",
    )
    p.add_argument(
        "--size", required=True, help="WIDTHxHEIGHT in px, multiples of the model's size step, e.g. 4096x4096"
    )
    p.add_argument("--out", required=True, help="output slide (.tif/.tiff); its provenance goes to OUT.json")
    p.add_argument("--steps", type=int, default=SAMPLING.steps, help="denoising steps (default %(default)s)")
    p.add_argument(
        "--guidance",
        type=float,
        help=f"classifier-free guidance scale (default: the model's recommended one, else {SAMPLING.guidance})",
    )
    p.add_argument(
        "--scheduler", default=SAMPLING.scheduler, help=f"one of {', '.join(SCHEDULERS)} (default %(default)s)"
    )
    p.add_argument("--eta", type=float, default=SAMPLING.eta, help="DDIM eta (default %(default)s: deterministic)")
    p.add_argument("--seed", type=int, default=SAMPLING.seed, help="seed of the slide's noise (default %(default)s)")
    p.add_argument(
        "--window-batch",
        type=positive_int,
        default=8,
        help="UNet rows per call (windows x guidance branches); bounds memory (default %(default)s)",
    )
    _add_pyramid_options(p)
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=SAMPLING_PRECISIONS,
        help="bf16: UNet under bf16 autocast where the CPU or GPU runs bf16 natively; auto: bf16 where it does, "
        "else fp32 (default %(default)s; recorded in each sidecar)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, the core count)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_sample_slide)


def run_sample_slide(args: argparse.Namespace) -> int:
    from renal_ldm.cli.sample_cmd import caption_from_args
    from renal_ldm.models.checkpoint import load_model
    from renal_ldm.sample import Sampler, default_device, resolve_model_dir
    from renal_ldm.slides.generate import generate_slide, parse_size
    from renal_ldm.slides.layout import load_layout, uniform_layout

    width, height = parse_size(args.size)
    if args.layout is not None:
        layout = load_layout(args.layout, width, height)
    else:
        layout = uniform_layout(caption_from_args(args.caption, args.levels))
    apply_threads(args.threads)
    model_dir = resolve_model_dir(args.model, note=lambda message: print(f"note: {message}", file=sys.stderr))
    device = args.device or default_device()
    sampler = Sampler(
        load_model(model_dir, device=device, require_unet=True),
        device=device,
        precision=args.precision,
        window_batch=args.window_batch,
    )
    bars: list[tqdm] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="call", desc="sample-slide", disable=args.no_progress))
        bars[0].total = total
        bars[0].update(done - bars[0].n)

    try:
        result = generate_slide(
            sampler,
            args.out,
            (width, height),
            layout,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            scheduler=args.scheduler,
            eta=args.eta,
            mpp=args.mpp,
            tile=args.tile,
            compression=args.compression,
            quality=args.quality,
            overwrite=args.overwrite,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    print(
        f"wrote {result.out}: {result.width}x{result.height} px at {args.mpp:g} mpp, {len(result.levels)} levels, "
        f"{args.compression}; {result.windows} latent windows, {len(result.captions)} caption(s), "
        f"{result.seconds:.0f} s; provenance in {result.provenance}"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    bars: list[tqdm] = []  # created at the first tile, so a refused request prints no empty bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="tile", desc="stitching", leave=False))
        bars[0].update(done - bars[0].n)

    try:
        result = stitch_slide(
            args.samples,
            args.out,
            args.grid,
            mpp=args.mpp,
            compression=args.compression,
            quality=args.quality,
            tile=args.tile,
            order=args.order,
            overwrite=args.overwrite,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    (cols, rows), (pw, ph), (w, h) = result.grid, result.patch, result.levels[0]
    print(
        f"wrote {result.out}: {cols}x{rows} patches of {pw}x{ph} px = {w}x{h} px at {args.mpp:g} mpp, "
        f"{len(result.levels)} levels, {args.compression}; {result.used} of {result.available} samples "
        f"({result.order} order, from {result.source_order}); provenance in {result.provenance}"
    )
    return 0
