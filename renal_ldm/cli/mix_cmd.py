"""`renal-ldm mix-experiment`: the reference's real/synthetic training-mix experiment (renal_ldm.mix_experiment)."""

from __future__ import annotations

import argparse
import sys

from renal_ldm.cli._args import apply_threads, positive_int
from renal_ldm.mix_experiment import BASELINE, MIXES, MixExperimentSettings
from renal_ldm.segmentation.config import CLASS_MODES, SEGMENTER_CONFIGS, SegmenterTrainSettings

DEFAULTS = MixExperimentSettings()
TRAIN = SegmenterTrainSettings()  # the segmenter's defaults, used where an option is not given


def register(subparsers) -> None:
    names = ", ".join(m.name for m in MIXES)
    p = subparsers.add_parser(
        "mix-experiment",
        help="train segmenters on real/synthetic mixes (thesis Tables 4.1, 5.2): loss, Dice, curves",
        description=(
            f"Trains one segmenter per mix ({names}) and seed with the same loop, early stopping on the "
            "validation loss of --val; writes OUT/table.md, OUT/table.json, OUT/val_loss.png, OUT/dice.png and "
            f"the mis-segmented area against {BASELINE}. Synthetic patches need masks: label samples with "
            "`renal-ldm segment` first."
        ),
    )
    p.add_argument("--real", required=True, help="real patch data set (images/ + masks/)")
    p.add_argument("--synthetic", required=True, help="synthetic patch data set (images/ + masks/), same patch size")
    p.add_argument("--val", required=True, help="real validation data set, the same for every run")
    p.add_argument("--out", required=True, help="output folder (runs/, tables, curves)")
    p.add_argument(
        "--patches",
        type=positive_int,
        default=DEFAULTS.patches,
        help="training patches per mix; 100_100 gets twice as many (default %(default)s)",
    )
    p.add_argument(
        "--seeds", type=positive_int, default=DEFAULTS.seeds, help="seeds 0..N-1 per mix (default %(default)s)"
    )
    p.add_argument(
        "--classes",
        choices=CLASS_MODES,
        default=DEFAULTS.classes,
        help="glomeruli versus the rest (the reference), or all eight classes (default %(default)s)",
    )
    p.add_argument(
        "--config",
        default=DEFAULTS.config,
        choices=list(SEGMENTER_CONFIGS),
        help="segmenter configuration (default %(default)s)",
    )
    p.add_argument("--epochs", type=positive_int, help=f"most epochs per run (default {TRAIN.epochs})")
    p.add_argument(
        "--patience",
        type=positive_int,
        help=f"epochs without a lower validation loss before a run stops (default {TRAIN.patience})",
    )
    p.add_argument("--batch-size", type=positive_int, help=f"crops per step (default {TRAIN.batch_size})")
    p.add_argument(
        "--crop", type=positive_int, help=f"output side of the random training crops in px (default {TRAIN.crop})"
    )
    p.add_argument("--lr", type=float, help=f"learning rate (default {TRAIN.lr})")
    p.add_argument("--resume", action="store_true", help="continue OUT: finished runs are kept, not trained again")
    p.add_argument("--overwrite", action="store_true", help="discard the experiment in OUT and start again")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from renal_ldm.mix_experiment import run_mix_experiment

    apply_threads(args.threads)

    settings = MixExperimentSettings(
        patches=args.patches,
        seeds=args.seeds,
        classes=args.classes,
        config=args.config,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
    )
    bar = None

    def on_run(event) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=event.total, unit="run", desc="mix experiment", disable=args.no_progress, position=0)
        label = f"run {event.index}/{event.total}: {event.mix} seed {event.seed}"
        if not event.done:
            bar.set_description(label)
            return
        if event.skipped:
            bar.set_description(f"{label} (finished before)")
        else:
            r = event.result
            bar.set_postfix_str(f"{event.mix} s{event.seed}: Dice {r['final_dice']:.3f}, {r['epochs_trained']} ep")
        bar.update(1)

    def log(message: str) -> None:
        (tqdm.write if bar is not None else print)(message, file=sys.stderr)

    try:
        report = run_mix_experiment(
            args.real,
            args.synthetic,
            args.val,
            args.out,
            settings,
            resume=args.resume,
            overwrite=args.overwrite,
            on_run=on_run,
            epoch_progress=not args.no_progress,
            log=log,
        )
    finally:
        if bar is not None:
            bar.close()
    print(report.markdown)
    print(
        f"{report.runs_trained} runs trained, {report.runs_skipped} finished before; "
        + ", ".join(str(p) for p in report.files.values())
    )
    return 0
