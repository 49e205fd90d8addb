"""`renal-ldm sample`: draw images from a trained model for a caption (or class levels) into a folder.

Under a launcher (`accelerate launch -m renal_ldm sample ...`, torchrun) each process draws its shard of the seeds
on its own device and the main process merges one manifest (renal_ldm.sharding); `--shard R/W` and `--merge DIR`
do the same by hand.
"""

from __future__ import annotations

import argparse
import sys

from renal_ldm.cli._args import apply_threads
from renal_ldm.models.configs import SAMPLING, SAMPLING_PRECISIONS, WINDOW_MODES
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
    p.add_argument("--out", help="output folder: PNGs, JSON sidecars, manifest.csv (required unless --merge)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=SAMPLING_PRECISIONS,
        help="bf16: UNet under bf16 autocast where the CPU or GPU runs bf16 natively; auto: bf16 where it does, "
        "else fp32 (default %(default)s; recorded in each sidecar)",
    )
    p.add_argument(
        "--windows",
        default="auto",
        choices=WINDOW_MODES,
        help="above the training size: auto = the whole latent up to twice the training size, overlapping windows "
        "(MultiDiffusion) beyond; always = windows for every size above it, as sample-slide (default %(default)s)",
    )
    p.add_argument(
        "--margin",
        type=int,
        default=0,
        metavar="PX",
        help="denoise PX more on every side and crop them off: no faint frame along the border, at the cost of the "
        "larger area (16 for the demo model: 1.56x the UNet work at 128 px, 1.27x at 256 px; default %(default)s)",
    )
    p.add_argument(
        "--late-margin",
        action="store_true",
        help="with --margin: add the margin only for the last steps (where the frame forms), mirrored from the "
        "latent: the same picture as without a margin, less its frame, in 1.04-1.08x the time (--margin alone: "
        "1.25x)",
    )
    p.add_argument(
        "--exact-batches",
        action="store_true",
        help="byte-identical images whatever the batch (pads UNet calls to 4 rows; default: within 1 grey level)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, the core count)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--shard",
        metavar="R/W",
        help="draw only shard R of W (from 0) of the seeds, without a launcher; then `--merge DIR` "
        "(under accelerate launch each process finds its shard without it)",
    )
    p.add_argument(
        "--merge", metavar="DIR", help="merge the shard files of `--shard R/W` runs in DIR into its manifest.csv"
    )
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
    from renal_ldm.cli import UserError
    from renal_ldm.sharding import ShardError

    try:
        if args.merge is not None:
            return merge(args)
        return sample(args)
    except ShardError as exc:
        raise UserError(str(exc)) from exc


def merge(args: argparse.Namespace) -> int:
    from renal_ldm.cli import UserError
    from renal_ldm.sharding import merge_shards

    if args.shard is not None or args.out is not None:
        raise UserError("--merge DIR takes no --shard or --out: it merges the shard files already in DIR")
    paths = merge_shards(args.merge)
    print(f"merged {len(paths)} images into {args.merge}/manifest.csv", file=sys.stderr)
    for path in paths:
        print(path)
    return 0


def sample(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from renal_ldm.cli import UserError
    from renal_ldm.models.checkpoint import load_model
    from renal_ldm.sample import Sampler, SampleRequest, resolve_model_dir, write_samples
    from renal_ldm.sharding import describe_shard, detect_shard, draw_shard, launched_world, parse_shard, shard_device

    if args.out is None:
        raise UserError("--out DIR is required (the folder the images go to), or --merge DIR")
    caption = caption_from_args(args.caption, args.levels)
    if args.shard is not None and launched_world() > 1:
        raise UserError(
            "--shard R/W is for runs without a launcher; under accelerate launch or torchrun every "
            "process finds its shard by itself"
        )
    shard = parse_shard(args.shard) if args.shard is not None else detect_shard(args.device)
    apply_threads(args.threads)
    model_dir = resolve_model_dir(args.model, note=lambda message: print(f"note: {message}", file=sys.stderr))
    device = shard_device(args.device, shard.local_rank)
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
        windows=args.windows,
        margin=args.margin,
        margin_late=args.late_margin,
    ).validated(model)  # before building the sampler: bad values fail fast
    sampler = Sampler(model, device=device, precision=args.precision, exact_batches=args.exact_batches)
    # One bar per machine's terminal: under a launcher only the main process draws one (for its own shard).
    quiet = args.no_progress or (shard.launched and shard.rank != 0)

    def draw(part: SampleRequest) -> list:
        batches = -(-part.n // part.batch_size)
        desc = "sample" if shard.world == 1 else f"sample {shard.label}"
        with tqdm(total=part.steps * batches, desc=desc, unit="step", disable=quiet) as bar:
            return sampler.sample(part, progress=lambda done, total: bar.update(done - bar.n))

    if shard.world == 1:
        paths = write_samples(draw(request), args.out)
        print(f"wrote {len(paths)} images to {args.out}", file=sys.stderr)
    else:
        print(describe_shard(shard, request, device), file=sys.stderr, flush=True)
        settings = {
            "model_fingerprint": model.fingerprint,
            "precision": sampler.precision,
            "exact_batches": args.exact_batches,
        }
        paths = draw_shard(shard, request, args.out, draw, settings)
        if shard.merges:
            print(f"wrote {len(paths)} images to {args.out} from {shard.world} processes", file=sys.stderr)
        elif shard.launched:
            return 0  # the main process lists the merged run
        else:
            print(
                f"wrote shard {shard.label}: {len(paths)} images to {args.out}; once every shard's images and "
                f".shard-*-of-{shard.world:05d}.json files are in one folder, run `renal-ldm sample --merge DIR`",
                file=sys.stderr,
            )
    for path in paths:
        print(path)
    return 0
