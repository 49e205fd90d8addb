"""`renal-ldm realism`: automated realism tests of synthetic against real images (classifier two-sample test and
Frechet distance); the library is renal_ldm/realism.py."""

from __future__ import annotations

import argparse

from renal_ldm.cli._args import apply_threads
from renal_ldm.realism import DEFAULT_SEGMENTER, FID_NOTE, REPORT_FILES, RealismSettings

DEFAULTS = RealismSettings()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "realism",
        help="realism tests: a classifier two-sample test (accuracy, 95%% CI, p, kappa) and a Frechet distance",
        description=(
            "A small CNN learns real versus synthetic on a stratified training split; its held-out accuracy (95% "
            "Wilson CI, binomial p of accuracy > 0.5) and the implied kappa 2 x accuracy - 1 (0 = chance, "
            "1 = always told apart: comparable with the survey's kappa). Then the Frechet distance between the "
            "two sets' features. Folders: PNG/JPEG/TIFF images (a `renal-ldm sample` output works) or a data "
            "set with images/."
        ),
    )
    p.add_argument("--real", required=True, metavar="DIR", help="folder of real images")
    p.add_argument("--synthetic", required=True, metavar="DIR", help="folder of synthetic images")
    p.add_argument("--out", required=True, metavar="DIR", help=f"report folder: {', '.join(REPORT_FILES)}")
    p.add_argument(
        "--features",
        metavar="SPEC",
        default="segmenter",
        help=(
            f"feature extractor for the Frechet distance: segmenter (the shipped {DEFAULT_SEGMENTER.parent.name}/"
            f"{DEFAULT_SEGMENTER.name}, default), segmenter:DIR, torchscript:FILE, inception:FILE, or none; "
            f"{FID_NOTE.replace('%', '%%')}"
        ),
    )
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="split, training and subsampling seed (default 0)")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="classifier epochs (default %(default)s)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=DEFAULTS.test_fraction,
        help="share of each set held out for scoring (default %(default)s)",
    )
    p.add_argument(
        "--size", type=int, default=DEFAULTS.size, help="images are center-cropped and resized to this (default 256)"
    )
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="classifier batch (default 32)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--overwrite", action="store_true", help="replace a realism report already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from renal_ldm.realism import check_report_folder, run_realism, verdict, write_report

    settings = RealismSettings(
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        test_fraction=args.test_fraction,
        size=args.size,
        device=args.device,
    ).validated()
    apply_threads(args.threads)
    out = check_report_folder(args.out, overwrite=args.overwrite)  # before any work
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if args.no_progress:
            return
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, delay=0.5)
        bar.update(done - bar.n)

    try:
        report = run_realism(args.real, args.synthetic, settings, features=args.features, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    paths = write_report(report, out)
    c, f = report.c2st, report.frechet
    print(
        f"classifier test: accuracy {c.accuracy:.3f} ({c.correct}/{c.test_total} held out; 95% CI {c.ci_low:.3f} "
        f"to {c.ci_high:.3f}), p = {c.p_value:.3g}, kappa {c.kappa:.3f}; trained on {c.train_real} real + "
        f"{c.train_synthetic} synthetic, tested on {c.test_real} + {c.test_synthetic}"
    )
    print(f"  {verdict(c)}")
    if f is not None:
        print(
            f"Frechet distance {f.distance:.4g} ({f.extractor}, {f.feature_dim} features; {f.n_real} real, "
            f"{f.n_synthetic} synthetic images)"
        )
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {', '.join(str(p) for p in paths)}")
    return 0
