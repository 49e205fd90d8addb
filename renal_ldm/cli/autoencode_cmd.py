"""`renal-ldm autoencode`: a patch data set as a model's autoencoder gives it back (renal_ldm.autoencode)."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "autoencode",
        help="write a patch data set encoded, quantized and decoded by a model's autoencoder (its ceiling; "
        "training data for a judge of generated images)",
    )
    p.add_argument("--model", help="a checkpoint with an autoencoder, or a training run (default: the demo model)")
    p.add_argument("--data", required=True, help="patch data set: a folder with images/ + masks/, or a JSONL manifest")
    p.add_argument("--out", required=True, help="output data set folder (images/, masks/, captions.jsonl)")
    p.add_argument(
        "--batch-size", type=int, default=1, help="images per autoencoder call (default %(default)s: fastest on a CPU)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace a data set already in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from renal_ldm.autoencode import autoencode_dataset  # torch and diffusers: only when the command runs
    from renal_ldm.sample import resolve_model_dir

    model_dir = resolve_model_dir(args.model, note=lambda message: print(message, file=sys.stderr))
    with tqdm(desc="autoencode", unit="image", disable=args.no_progress) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = autoencode_dataset(
            model_dir,
            args.data,
            args.out,
            batch_size=args.batch_size,
            device=args.device,
            overwrite=args.overwrite,
            progress=progress,
        )
    print(
        f"wrote {report.images} images to {report.out} through the autoencoder of {model_dir}: mean PSNR "
        f"{report.psnr_db:.2f} dB, {report.seconds:.1f} s"
    )
    return 0
