"""`renal-ldm survey-demo`: create a demo real-vs-synthetic survey and print its participant link."""

from __future__ import annotations

import argparse

from renal_ldm.survey_images import DEFAULT_COUNT, DEFAULT_SIZE


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "survey-demo",
        help="create a demo survey (phantom tissue vs model samples, or phantom-only) and print its link",
        description=(
            "Creates an open demo survey: N phantom patches stand in for real tissue; the synthetic half is N "
            "samples of --model, else of the shipped demo model, else (when that is not installed, or with "
            "--phantom-only) N phantoms of another seed, labelled as such in the title."
        ),
    )
    p.add_argument("--model", help="checkpoint directory for the synthetic half (default: the shipped demo model)")
    p.add_argument(
        "--phantom-only",
        action="store_true",
        help="both halves from the phantom generator (fast; for walking the flow)",
    )
    p.add_argument("--n", type=int, default=DEFAULT_COUNT, help=f"images per half (default {DEFAULT_COUNT})")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"image side in pixels (default {DEFAULT_SIZE})")
    p.add_argument("--seed", type=int, default=0, help="phantom and sampling seed (default 0)")
    p.add_argument("--steps", type=int, help="denoising steps when sampling (default 50)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from app.survey_demo import create_demo_survey
    from db.migrate import init_db
    from renal_ldm.survey_demo import PHANTOM_ONLY, demo_mode

    mode, model_dir = demo_mode(args.model, args.phantom_only)
    if mode == PHANTOM_ONLY and not args.phantom_only:
        print(
            "note: no --model given and the shipped demo model is not installed (models/demo); creating a "
            "phantom-only demo (both halves are phantoms). Pass --model with a training run or a checkpoint "
            "directory to sample one."
        )
    init_db()
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if args.no_progress:
            return
        bar = bars.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="step" if stage == "sampling" else "img")
        bar.update(done - bar.n)

    try:
        demo = create_demo_survey(
            args.n,
            model=model_dir if mode != PHANTOM_ONLY else None,
            phantom_only=mode == PHANTOM_ONLY,
            size=args.size,
            seed=args.seed,
            steps=args.steps,
            device=args.device,
            progress=progress,
        )
    finally:
        for bar in bars.values():
            bar.close()
    print(f"created: {demo.title}")
    print(f"participant link: {demo.link}")
    print(f"  e.g. http://localhost:8501/{demo.link} (after `make run`); results: the app's Survey > Results page")
    return 0
