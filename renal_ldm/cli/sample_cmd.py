"""`renal-ldm sample`: draw images from a trained model for a caption (or class levels) into a folder."""

from __future__ import annotations

import argparse
import sys

from renal_ldm.cli._args import apply_threads
from renal_ldm.models.configs import SAMPLING, SAMPLING_PRECISIONS
from renal_ldm.models.schedulers import SCHEDULERS


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate tissue patches from a caption or class levels")
    p.add_argument("--model", help="model directory (default: the shipped demo model models/demo)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--caption", help="caption text, \\n for line breaks (default: the study's generating caption)")
    what.add_argument("--levels", help='class levels, e.g. "Glomeruli=high,Tubuli=medium" (none|low|medium|high)')
    p.add_argument("--n", type=int, default=SAMPLING.images, help="number of images (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=SAMPLING.batch_size, help="images per batch (default %(default)s)")
    p.add_argument("--steps", type=int, default=SAMPLING.steps, help="denoising steps (default %(default)s)")
    p.add_argument(
        "--guidance",
        type=float,
        help=f"classifier-free guidance scale (default: the model's recommended one, else {SAMPLING.guidance})",
    )
    p.add_argument(
        "--scheduler", default=SAMPLING.scheduler, help=f"one of {', '.join(SCHEDULERS)} (default %(default)s)"
    )
    eta_takers = "/".join(e.label for e in SCHEDULERS.values() if e.takes_eta)
    p.add_argument(
        "--eta", type=float, default=SAMPLING.eta, help=f"{eta_takers} eta (default %(default)s: deterministic)"
    )
    p.add_argument("--seed", type=int, default=SAMPLING.seed, help="image i uses seed + i (default %(default)s)")
    p.add_argument("--size", type=int, help="image side in pixels (default: the model's training size)")
    p.add_argument("--out", required=True, help="output folder: PNGs, JSON sidecars, manifest.csv")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=SAMPLING_PRECISIONS,
        help="bf16: UNet under bf16 autocast where the CPU or GPU runs bf16 natively (default %(default)s)",
    )
    p.add_argument(
        "--exact-batches",
        action="store_true",
        help="byte-identical images whatever the batch (pads UNet calls to 4 rows; default: within 1 grey level)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, the core count)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def caption_from_args(caption: str | None, levels: str | None) -> str:
    from renal_ldm.captions import GENERATING_CAPTION, levels_to_caption, parse_levels_spec

    if caption is not None and levels is not None:
        raise ValueError("give either --caption or --levels, not both")
    if levels is not None:
        parsed = parse_levels_spec(levels)
        if not parsed:
            raise ValueError(f"--levels {levels!r} names no class; expected e.g. Glomeruli=high,Tubuli=medium")
        return levels_to_caption(parsed)
    if caption is not None:
        return caption.replace("\\n", "\n")
    return GENERATING_CAPTION


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from renal_ldm.models.checkpoint import load_model
    from renal_ldm.sample import Sampler, SampleRequest, default_device, resolve_model_dir, write_samples

    caption = caption_from_args(args.caption, args.levels)
    apply_threads(args.threads)
    model_dir = resolve_model_dir(args.model, note=lambda message: print(f"note: {message}", file=sys.stderr))
    device = args.device or default_device()
    model = load_model(model_dir, device=device, require_unet=True)
    request = SampleRequest(
        caption=caption,
        n=args.n,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        scheduler=args.scheduler,
        eta=args.eta,
        size=args.size,
        batch_size=args.batch_size,
    ).validated(model)  # before building the sampler: bad values fail fast
    sampler = Sampler(model, device=device, precision=args.precision, exact_batches=args.exact_batches)
    bar = tqdm(
        total=request.steps * -(-request.n // request.batch_size), desc="sample", unit="step", disable=args.no_progress
    )

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        results = sampler.sample(request, progress=progress)
    finally:
        bar.close()
    paths = write_samples(results, args.out)
    print(f"wrote {len(paths)} images to {args.out}", file=sys.stderr)
    for path in paths:
        print(path)
    return 0
