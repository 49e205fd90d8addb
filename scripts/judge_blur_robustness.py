"""How a phantom segmenter (the caption judge) holds up on soft images: pooled Dice on unseen phantoms as they
are, blurred, and through a model's autoencoder; the glomerulus level it reads on phantoms whose own caption
says "a lot of Glomeruli"; and how often it finds glomeruli in phantoms whose caption has none. Generated images
are softer than phantoms, so a judge that reads softness as absence under-reports what a model draws, and one
that finds glomeruli where there are none over-reports it (models/segmenter-phantom/README.md).

    .venv/bin/python scripts/judge_blur_robustness.py [--segmenter DIR ...] [--model models/demo]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_demo_model import autoencoded, phantoms_of_levels  # noqa: E402

from renal_ldm.artifacts import soften  # noqa: E402
from renal_ldm.captions import HIGH, LEVELS, NONE, level_for_fraction  # noqa: E402
from renal_ldm.classes import by_name  # noqa: E402
from renal_ldm.evaluate import PHANTOM_SPECK_SIZES, load_judge, remove_specks  # noqa: E402
from renal_ldm.paths import SHIPPED_PHANTOM_SEGMENTER, demo_model_dir  # noqa: E402
from renal_ldm.phantom import generate_phantom  # noqa: E402
from renal_ldm.sample import Sampler  # noqa: E402
from renal_ldm.segment import dice_score  # noqa: E402

GLOMERULI = by_name("Glomeruli").id
BLURS = (0.7, 1.0, 1.5)


def glomerulus_levels(judge, images: list[np.ndarray]) -> dict[str, float]:
    """Share of images whose judged glomerulus level (specks dropped, as evaluate-captions) is each level."""
    levels = []
    for image in images:
        mask, _ = remove_specks(judge.predict(image), PHANTOM_SPECK_SIZES)
        share = float((mask == GLOMERULI).mean())
        levels.append(level_for_fraction(share) if share > 0 else NONE)
    return {level: levels.count(level) / len(levels) for level in (NONE, *LEVELS)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", nargs="+", default=[str(SHIPPED_PHANTOM_SEGMENTER)])
    parser.add_argument("--model", default=str(demo_model_dir()), help="the autoencoder's checkpoint")
    parser.add_argument("--n", type=int, default=24, help="unseen 256 px phantoms for the Dice table")
    parser.add_argument("--n-high", type=int, default=48, help="128 px phantoms with a lot of glomeruli")
    parser.add_argument("--n-none", type=int, default=48, help="128 px phantoms without glomeruli")
    args = parser.parse_args()
    sampler = Sampler.from_dir(args.model)
    phantoms = [generate_phantom(256, seed=987_000 + k) for k in range(args.n)]
    images = [p.image for p in phantoms]
    truth = np.concatenate([p.mask.ravel() for p in phantoms])
    variants = {"as they are": images, **{f"blurred {s} px": soften(images, s) for s in BLURS}}
    variants["through the autoencoder"] = autoencoded(sampler, images)
    high = [p.image for p in phantoms_of_levels({"Glomeruli": HIGH}, args.n_high, 128, seed=930_000)]
    high_variants = {"as they are": high, "blurred 1.0 px": soften(high, 1.0)}
    high_variants["through the autoencoder"] = autoencoded(sampler, high)
    none = [p.image for p in phantoms_of_levels({"Glomeruli": NONE}, args.n_none, 128, seed=900_000)]
    none_variants = {"as they are": none, "blurred 1.0 px": soften(none, 1.0)}
    none_variants["through the autoencoder"] = autoencoded(sampler, none)
    for path in args.segmenter:
        judge = load_judge(path)
        print(f"\n{path}: pooled mean Dice on {args.n} unseen phantoms of 256 px")
        for name, variant in variants.items():
            predicted = np.concatenate([judge.predict(v).ravel() for v in variant])
            print(f"  {name:26s} {dice_score(predicted, truth, 'all'):.3f}")
        print(f"{path}: glomerulus level judged on {args.n_high} phantoms of 128 px captioned a lot of Glomeruli")
        for name, variant in high_variants.items():
            shares = glomerulus_levels(judge, variant)
            print(f"  {name:26s} " + " / ".join(f"{level} {100 * v:.0f}%" for level, v in shares.items()))
        print(f"{path}: glomeruli found on {args.n_none} phantoms of 128 px whose caption has none")
        for name, variant in none_variants.items():
            print(f"  {name:26s} {100 * (1 - glomerulus_levels(judge, variant)[NONE]):.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
