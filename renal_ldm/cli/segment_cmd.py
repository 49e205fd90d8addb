"""`renal-ldm train-segmenter` and `renal-ldm segment`: the tissue segmenters (renal_ldm.segment), thin wrappers."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from renal_ldm.cli._args import apply_threads, positive_int
from renal_ldm.cli.caption_cmd import add_mask_arguments
from renal_ldm.data.layout import IMAGE_SUFFIXES
from renal_ldm.segmentation.config import (
    CLASS_MODES,
    DEFAULT_TILE,
    LR_SCHEDULES,
    SEGMENTER_CONFIGS,
    SegmenterTrainSettings,
)

TRAIN = SegmenterTrainSettings()  # the defaults of every option below


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-segmenter", help="train a valid-padding UNet segmenter (all eight classes, or glomeruli vs the rest)"
    )
    p.add_argument("--data", required=True, help="patch data set with masks: a folder with images/ + masks/, or JSONL")
    p.add_argument(
        "--val-data", help="a separate validation data set (e.g. held-out slides); default: --val-fraction of --data"
    )
    p.add_argument("--classes", choices=CLASS_MODES, help="all (eight labels, softmax) or glomeruli (one logit)")
    p.add_argument("--out", required=True, help="run folder: segmenter.json + .safetensors, metrics.jsonl, state")
    p.add_argument("--config", choices=list(SEGMENTER_CONFIGS), help="network size (default small; tiny for tests)")
    p.add_argument(
        "--downsample",
        type=positive_int,
        help="segment at 1/N of the images' resolution (area averaging; masks come back full size): a receptive "
        "field N times larger, N*N times cheaper (default 1; a new run only)",
    )
    p.add_argument("--epochs", type=positive_int, default=TRAIN.epochs, help="at most (default %(default)s)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=TRAIN.val_fraction,
        help="share of --data held out for validation, by patch name (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=TRAIN.seed, help="init, split, crops and flips (default %(default)s)")
    p.add_argument(
        "--batch-size", type=positive_int, default=TRAIN.batch_size, help="crops per step (default %(default)s)"
    )
    p.add_argument("--lr", type=float, default=TRAIN.lr, help="AdamW learning rate (default %(default)s)")
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=TRAIN.lr_schedule,
        help="cosine: decay --lr to 0 over --epochs, per step (default %(default)s)",
    )
    p.add_argument(
        "--rotations", action="store_true", help="also rotate crops by random multiples of 90 degrees (with flips)"
    )
    p.add_argument(
        "--stain-jitter",
        type=float,
        default=TRAIN.stain_jitter,
        help="per crop, scale contrast and channel intensity by 1 +- S, shift brightness by +- S/2 (default "
        "%(default)s: off; 0.1 is mild)",
    )
    p.add_argument(
        "--scale-jitter",
        type=float,
        default=TRAIN.scale_jitter,
        help="magnify every crop by a factor drawn log-uniformly from [1/(1+S), 1+S] (default %(default)s: off)",
    )
    p.add_argument(
        "--blur",
        type=float,
        default=TRAIN.blur,
        metavar="SIGMA",
        help="blur half of the crops with a Gaussian of sigma U(0, SIGMA) px, so that soft (generated) images are "
        "segmented like sharp ones (default %(default)s: off; on phantoms 1.5 also took tubuli for glomeruli: "
        "models/segmenter-phantom/README.md)",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=TRAIN.ema,
        help="decay of an exponential moving average of the weights, per step; validation and the checkpoint use "
        "the average (default %(default)s: off; 0.995 averages over about 200 steps)",
    )
    p.add_argument(
        "--crop",
        type=positive_int,
        default=TRAIN.crop,
        help="output px of each random crop, at the network's resolution (default %(default)s)",
    )
    p.add_argument(
        "--crops-per-image",
        type=positive_int,
        default=TRAIN.crops_per_image,
        help="random crops of every patch per epoch (default %(default)s)",
    )
    p.add_argument(
        "--patience",
        type=positive_int,
        default=TRAIN.patience,
        help="early stopping: epochs without a better validation loss (default %(default)s)",
    )
    p.add_argument(
        "--monitor",
        choices=("val_loss", "val_dice"),
        default=TRAIN.monitor,
        help="what picks the saved epoch and stops early (default %(default)s)",
    )
    add_mask_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("segment", help="segment images into label masks (PNG, mode L, product class ids)")
    p.add_argument("--segmenter", required=True, help="segmenter folder (train-segmenter output, models/segmenter-*)")
    p.add_argument("--input", required=True, help="an image, or a folder of images (or a data set with images/)")
    p.add_argument("--out", required=True, help="mask PNG for one image, or a folder for many (one <stem>.png each)")
    p.add_argument(
        "--tile", type=positive_int, default=DEFAULT_TILE, help="output tile side; bounds memory (default %(default)s)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace masks that already exist")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_segment)

    p = subparsers.add_parser(
        "ensemble-segmenters",
        help="combine trained segmenters (and magnifications) into one: averaged probabilities",
    )
    p.add_argument("--members", nargs="+", required=True, help="segmenter folders (train-segmenter output)")
    p.add_argument(
        "--scales",
        default="1",
        help="comma-separated magnifications each member also segments the image at, e.g. 0.8,1,1.25 (default 1)",
    )
    p.add_argument("--out", required=True, help="new ensemble folder (segmenter_ensemble.json + members/)")
    p.add_argument("--val-data", help="a masked data set to report the ensemble's and each member's Dice on")
    add_mask_arguments(p)
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=run_ensemble)


def _open_masked(path: str, args: argparse.Namespace):
    from renal_ldm.data.patches import PatchDataset

    dataset = PatchDataset(
        path,
        return_mask=True,
        flips=False,  # the training loop flips its crops (its generator is checkpointed)
        binary_class=args.binary_class,
        zero_is_background=args.zero_is_background,
    )
    unmasked = [r for r in dataset.records if r.mask is None]
    if unmasked:
        raise ValueError(
            f"{path}: {len(unmasked)} of {len(dataset)} patches have no mask (e.g. {unmasked[0].name}); a segmenter "
            "trains on images with masks"
        )
    return dataset


def _saved_config(out: Path):
    """The config of the run in `out` (for --resume without --config/--classes)."""
    import json

    from renal_ldm.segment import SEGMENTER_MANIFEST, TRAIN_STATE, SegmenterConfig

    if (out / SEGMENTER_MANIFEST).is_file():
        return SegmenterConfig.from_dict(json.loads((out / SEGMENTER_MANIFEST).read_text())["config"])
    if (out / TRAIN_STATE).is_file():
        import torch

        state = torch.load(out / TRAIN_STATE, map_location="cpu", weights_only=False)
        return SegmenterConfig.from_dict(state["config"])
    raise FileNotFoundError(f"nothing to resume in {out}: no {TRAIN_STATE}; run without --resume first")


def run_train(args: argparse.Namespace) -> int:

    from renal_ldm.data.patches import split_dataset
    from renal_ldm.segment import named_config, train_segmenter

    apply_threads(args.threads)
    out = Path(args.out)
    if args.resume:
        config = _saved_config(out)
        if args.config:
            config = named_config(args.config, config.classes, config.downsample)
        if args.downsample and args.downsample != config.downsample:
            raise ValueError(
                f"{out} segments at --downsample {config.downsample}; --downsample {args.downsample} cannot resume it"
            )
        if args.classes and args.classes != config.classes:
            raise ValueError(f"{out} trains a {config.classes!r} segmenter; --classes {args.classes} cannot resume it")
    else:
        if not args.classes:
            raise ValueError("--classes is required: all (eight labels) or glomeruli (glomeruli vs the rest)")
        config = named_config(args.config or "small", args.classes, args.downsample)
    settings = SegmenterTrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        rotations=args.rotations,
        stain_jitter=args.stain_jitter,
        ema=args.ema,
        scale_jitter=args.scale_jitter,
        blur=args.blur,
        crop=args.crop,
        crops_per_image=args.crops_per_image,
        val_fraction=args.val_fraction,
        seed=args.seed,
        patience=args.patience,
        monitor=args.monitor,
        resume=args.resume,
        progress=not args.no_progress,
    )
    dataset = _open_masked(args.data, args)
    if args.val_data:
        train_set, val_set = dataset, _open_masked(args.val_data, args)
    else:
        if len(dataset) < 2:
            raise ValueError(f"{args.data} holds {len(dataset)} patch; at least 2 are needed (one is held out)")
        if args.val_fraction <= 0:
            raise ValueError("--val-fraction 0 leaves no validation patch; give a fraction in (0, 1) or --val-data")
        train_set, val_set = split_dataset(dataset, args.val_fraction, seed=args.seed)
    print(
        f"train-segmenter: {config.classes} classes, {len(train_set)} training and {len(val_set)} validation patches; "
        f"{config.padding_per_side} px mirrored per side"
        + (f" at 1/{config.downsample} resolution" if config.downsample > 1 else ""),
        file=sys.stderr,
    )
    result = train_segmenter(
        train_set, val_set, out, config=config, settings=settings, log=lambda m: print(m, file=sys.stderr)
    )
    best = result.history[result.best_epoch - 1] if result.best_epoch else result.history[-1]
    print(
        f"{result.out_dir}: best epoch {result.best_epoch} of {len(result.history)}, val_loss {best.val_loss:.4f}, "
        f"val_dice {best.val_dice:.4f}"
    )
    return 0


def _images_in(folder: Path) -> list[Path]:
    if (folder / "images").is_dir():
        folder = folder / "images"
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def run_segment(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from renal_ldm.data.patches import read_rgb
    from renal_ldm.segment import load_segmenter

    apply_threads(args.threads)
    source, out = Path(args.input), Path(args.out)
    if source.is_dir():
        images = _images_in(source)
        if not images:
            raise ValueError(f"no images in {source}; expected files ending in {', '.join(IMAGE_SUFFIXES)}")
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"--out {out} is a file; expected a folder for the masks of {source}")
        targets = [out / f"{p.stem}.png" for p in images]
    elif source.is_file():
        images = [source]
        targets = [out / f"{source.stem}.png" if out.is_dir() else out]
        if targets[0].suffix.lower() != ".png":
            raise ValueError(f"--out {out}: masks are written as PNG; expected a path ending in .png or a folder")
    else:
        raise FileNotFoundError(f"--input not found: {source}; expected an image or a folder of images")
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} exists ({len(existing)} of {len(targets)} masks); pass --overwrite")
    segmenter = load_segmenter(args.segmenter)
    targets[0].parent.mkdir(parents=True, exist_ok=True)
    for image_path, target in tqdm(
        list(zip(images, targets, strict=True)), desc="segment", unit="image", disable=args.no_progress
    ):
        labels = segmenter.predict(read_rgb(image_path), tile=args.tile)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.png")
        try:
            Image.fromarray(np.asarray(labels, np.uint8), mode="L").save(tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    where = targets[0] if len(targets) == 1 else out
    print(f"wrote {len(targets)} label mask(s) to {where} ({segmenter.config.classes} classes)")
    return 0


def _parse_scales(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--scales {text!r}: expected comma-separated numbers, e.g. 0.8,1,1.25") from None


def _by_patch(dataset, values: list[float]) -> dict[str, float]:
    return {record.name: round(v, 4) for record, v in zip(dataset.records, values, strict=True)}


def run_ensemble(args: argparse.Namespace) -> int:
    import json

    from renal_ldm.fsutil import write_file_atomically
    from renal_ldm.segment import segmenter_dice
    from renal_ldm.segmentation.ensemble import ENSEMBLE_MANIFEST, check_scales, write_ensemble

    apply_threads(args.threads)
    scales = check_scales(_parse_scales(args.scales))
    val = _open_masked(args.val_data, args) if args.val_data else None  # a bad folder fails before writing
    ensemble = write_ensemble(args.members, scales, args.out)
    if val is not None:
        manifest = ensemble.manifest
        manifest["val_data"], manifest["member_val"] = str(args.val_data), {}
        for name, member in zip(manifest["members"], ensemble.members, strict=True):
            dice, per = segmenter_dice(member, val)
            manifest["member_val"][name] = {"dice": round(dice, 4), "per_patch": _by_patch(val, per)}
            print(f"member {name}: pooled Dice {dice:.3f} ({' '.join(f'{d:.3f}' for d in per)})")
        dice, per = segmenter_dice(ensemble, val)
        manifest["metrics"] = {"val_dice": round(dice, 4), "val_dice_per_patch": _by_patch(val, per)}
        write_file_atomically(Path(args.out) / ENSEMBLE_MANIFEST, json.dumps(manifest, indent=2) + "\n")
        print(f"ensemble: pooled Dice {dice:.3f} ({' '.join(f'{d:.3f}' for d in per)})")
    print(f"wrote {args.out}: {len(args.members)} member(s) x scales {', '.join(map(str, scales))}")
    return 0
