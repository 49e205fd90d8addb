"""Which smallest component a phantom judge should trust: the --min-component that best reads phantoms' own
captions. A segmenter's stray specks are not structures, but the caption rule mentions a class for any pixel, so
`evaluate-captions` drops predicted components under a size before captioning (renal_ldm.evaluate.remove_specks).
This script measures that size on phantoms the judge never saw (seeds 960000 on), as they are and through a
model's autoencoder (generated images are as soft or softer), against their ground-truth captions: mean
exact-level accuracy over the seven classes, and how often glomeruli are found where the caption has none.
It never looks at generated samples, so the threshold it picks cannot be tuned to flatter a model.

    .venv/bin/python scripts/calibrate_speck_threshold.py [--segmenter DIR] [--model models/demo] [--n 400]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_demo_model import autoencoded, level_summary  # noqa: E402

from renal_ldm.captions import caption_to_levels  # noqa: E402
from renal_ldm.evaluate import CaptionAccuracy, SpeckSizes, judge_mask, load_judge, remove_specks  # noqa: E402
from renal_ldm.paths import SHIPPED_PHANTOM_SEGMENTER, demo_model_dir  # noqa: E402
from renal_ldm.phantom import generate_phantom  # noqa: E402
from renal_ldm.sample import Sampler  # noqa: E402

SIZES = (0, 16, 24, 32, 48, 64, 96, 128, 192, 256)
FIRST_SEED = 960_000
TIE = 0.01
"""Accuracies within one point of the best count as tied (400 phantoms tell about +-1.5 points); the smallest
tied size wins, so no more is dropped than the data ask for."""


def judged(masks: list[np.ndarray], captions: list[str], min_px: SpeckSizes) -> CaptionAccuracy:
    """The judge's caption accuracy on predicted masks against the phantoms' own captions, specks dropped."""
    rows = [
        judge_mask(f"{k}.png", caption, caption_to_levels(caption), remove_specks(mask, min_px)[0])
        for k, (mask, caption) in enumerate(zip(masks, captions, strict=True))
    ]
    return CaptionAccuracy(rows=tuple(rows), min_component_px=min_px)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", default=str(SHIPPED_PHANTOM_SEGMENTER))
    parser.add_argument("--model", default=str(demo_model_dir()), help="the autoencoder's checkpoint")
    parser.add_argument("--n", type=int, default=400, help="unseen phantoms")
    parser.add_argument("--size", type=int, default=128, help="phantom side in px (the judged samples' size)")
    args = parser.parse_args()
    if args.n < 1 or args.size < 32:
        print(f"--n must be >= 1 and --size >= 32; got {args.n} and {args.size}", file=sys.stderr)
        return 2
    judge = load_judge(args.segmenter)
    phantoms = [generate_phantom(args.size, seed=FIRST_SEED + k) for k in range(args.n)]
    captions = [p.caption for p in phantoms]
    images = {"as they are": [p.image for p in phantoms]}
    images["through the autoencoder"] = autoencoded(Sampler.from_dir(args.model), images["as they are"])
    masks = {name: [np.asarray(judge.predict(image)) for image in variant] for name, variant in images.items()}
    table = {size: {name: judged(m, captions, size) for name, m in masks.items()} for size in SIZES}
    classes = table[0]["as they are"].judged
    none_asked = sum("Glomeruli" not in caption_to_levels(c) for c in captions)
    print(f"{args.segmenter} on {args.n} unseen {args.size} px phantoms (seeds {FIRST_SEED}-{FIRST_SEED + args.n - 1})")
    print(f"exact-level accuracy per class, {' / '.join(masks)}")
    print("min px | " + " | ".join(f"{c[:11]:>11s}" for c in classes))
    for size, by_set in table.items():
        cells = [" / ".join(f"{r.exact_level_accuracy(c):.2f}" for r in by_set.values()) for c in classes]
        print(f"{size:6d} | " + " | ".join(f"{cell:>11s}" for cell in cells))
    chosen = {}
    for c in classes:
        both = {size: np.mean([r.exact_level_accuracy(c) for r in by_set.values()]) for size, by_set in table.items()}
        chosen[c] = min(size for size, value in both.items() if value >= max(both.values()) - TIE)
    print(f"per class, the smallest size within {TIE} of its best accuracy (mean of both sets):\n  {chosen}")
    rows = {str(size): by_set for size, by_set in table.items()}
    rows["per class"] = {name: judged(m, captions, chosen) for name, m in masks.items()}
    print(f"mean exact-level accuracy / glomeruli found where the caption has none ({none_asked} phantoms)")
    print(f"{'min px':>9s} | " + " | ".join(masks))
    for label, by_set in rows.items():
        summaries = [level_summary(r) for r in by_set.values()]
        cells = [
            f"{s['mean_exact_level_accuracy']:.3f} / {100 * (s['glomeruli_found_when_not_asked'] or 0):.1f}%"
            for s in summaries
        ]
        print(f"{label:>9s} | " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
