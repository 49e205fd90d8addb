"""`renal-ldm evaluate-captions`: does the caption steer the content? Segment every sample, caption it again and
compare with the caption it was generated from (the reference's Table 5.1, per-class level accuracy)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from renal_ldm.cli._args import apply_threads
from renal_ldm.models.configs import SAMPLING
from renal_ldm.models.schedulers import SCHEDULERS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-captions",
        help="caption accuracy: segment samples, caption them again, compare with their generating captions",
        description="Judge a `renal-ldm sample` folder (--samples DIR), or sample a model first (--model DIR "
        "--n N [--caption TEXT | --levels SPEC]) into OUT/samples and judge that. Writes caption_accuracy.json, "
        "caption_accuracy.md, table_5_1.png and level_accuracy.png into --out.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", help="a `renal-ldm sample` output folder: PNGs with JSON sidecars")
    source.add_argument("--model", help="a model checkpoint to sample from first (into OUT/samples)")
    p.add_argument("--segmenter", required=True, help="a segmenter folder (`renal-ldm train-segmenter` output)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    p.add_argument("--save-masks", action="store_true", help="also write the predicted label masks to OUT/masks/")
    p.add_argument("--min-samples", type=int, default=None, help="refuse folders with fewer samples (default: 5)")
    p.add_argument(
        "--min-component",
        default="0",
        metavar="PX|phantom",
        help="drop predicted specks (components) under PX pixels before captioning, or 'phantom' for the sizes "
        "per class measured for the shipped phantom segmenter (scripts/calibrate_speck_threshold.py) "
        "(default 0: every pixel counts, the reference's rule)",
    )
    g = p.add_argument_group("sampling first (with --model)")
    what = g.add_mutually_exclusive_group()
    what.add_argument("--caption", help="caption text, \\n for line breaks (default: the study's generating caption)")
    what.add_argument("--levels", help='class levels, e.g. "Glomeruli=high,Tubuli=medium" (none|low|medium|high)')
    g.add_argument("--n", type=int, help="number of images to draw (required with --model)")
    g.add_argument("--steps", type=int, default=SAMPLING.steps, help="denoising steps (default %(default)s)")
    g.add_argument(
        "--scheduler", default=SAMPLING.scheduler, help=f"one of {', '.join(SCHEDULERS)} (default %(default)s)"
    )
    g.add_argument(
        "--guidance",
        type=float,
        help=f"guidance scale (default: the model's recommended one, else {SAMPLING.guidance})",
    )
    g.add_argument("--seed", type=int, default=SAMPLING.seed, help="image i uses seed + i (default %(default)s)")
    g.add_argument("--size", type=int, help="image side in pixels (default: the model's training size)")
    g.add_argument("--batch-size", type=int, default=SAMPLING.batch_size, help="images per batch (default %(default)s)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from renal_ldm import evaluate
    from renal_ldm.cli.sample_cmd import caption_from_args

    specks = evaluate.parse_speck_sizes(args.min_component)  # before any sampling, not after it
    min_samples = evaluate.MIN_SAMPLES if args.min_samples is None else args.min_samples
    if min_samples < 1:
        raise ValueError(f"--min-samples must be >= 1; got {min_samples}")
    if args.model is None:
        given = [f"--{name}" for name in ("caption", "levels", "n", "size") if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --model (sampling first); --samples is judged as is")
    elif args.n is None:
        raise ValueError(f"--model needs --n N, the number of images to draw (at least {min_samples})")
    elif args.n < min_samples:
        raise ValueError(f"--n {args.n} is too few: caption accuracy needs at least {min_samples} samples")
    apply_threads(args.threads)
    out = evaluate.check_report_dir(args.out, evaluate.REPORT_FILES, overwrite=args.overwrite)
    samples_dir = Path(args.samples) if args.samples is not None else out / evaluate.SAMPLES_DIR
    if args.model is not None:
        evaluate.check_no_samples(samples_dir)
    segmenter = evaluate.load_judge(args.segmenter, device=args.device)  # before sampling: fails in seconds
    if segmenter.config.classes != "all":
        print(
            f"note: {args.segmenter} is a {segmenter.config.classes!r} segmenter: only Glomeruli is judged",
            file=sys.stderr,
        )
    if args.model is not None:
        _sample_first(args, samples_dir, caption_from_args(args.caption, args.levels), tqdm)
    else:
        evaluate.read_sample_folder(samples_dir, min_samples=min_samples)  # fail before the bar starts
    bar = tqdm(desc="judge", unit="image", disable=args.no_progress)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        result = evaluate.evaluate_captions(
            samples_dir,
            segmenter,
            min_samples=min_samples,
            min_component_px=specks,
            masks_dir=out / evaluate.MASKS_DIR if args.save_masks else None,
            progress=progress,
        )
    finally:
        bar.close()
    result = _with_paths(result, samples_dir, args.segmenter)
    paths = evaluate.write_caption_report(result, out, overwrite=args.overwrite)
    _print_summary(result, evaluate)
    for path in paths:
        print(path)
    return 0


def _sample_first(args: argparse.Namespace, samples_dir: Path, caption: str, tqdm) -> None:
    from renal_ldm import evaluate
    from renal_ldm.sample import SampleRequest

    request = SampleRequest(
        caption=caption,
        n=args.n,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        scheduler=args.scheduler,
        size=args.size,
        batch_size=args.batch_size,
    )
    bar = tqdm(desc="sample", unit="step", disable=args.no_progress)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        paths = evaluate.sample_for_evaluation(args.model, request, samples_dir, device=args.device, progress=progress)
    finally:
        bar.close()
    print(f"wrote {len(paths)} samples to {samples_dir}", file=sys.stderr)


def _with_paths(result, samples_dir: Path, segmenter: str):
    import dataclasses

    return dataclasses.replace(result, samples_dir=str(samples_dir), segmenter=str(segmenter))


def _print_summary(result, evaluate) -> None:
    table = result.table_5_1()
    print(
        f"{result.n} samples; predicted caption mentions glomeruli: {result.mentions_glomeruli:.1f}%", file=sys.stderr
    )
    for name in result.table_columns:
        cells = ", ".join(f"{evaluate.LEVEL_LABELS[k]} {table[name][k]:.1f}%" for k in evaluate.LEVEL_KEYS)
        print(f"  {name}: {cells}", file=sys.stderr)
    accuracy = ", ".join(f"{c} {100 * result.exact_level_accuracy(c):.0f}%" for c in result.judged)
    print(f"exact-level accuracy: {accuracy}", file=sys.stderr)
