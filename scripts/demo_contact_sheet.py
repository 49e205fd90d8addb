"""Phantom patches beside demo-model samples for the same captions: the figure in models/demo/README.md.

    .venv/bin/python scripts/demo_contact_sheet.py [--model models/demo] [--out models/demo/contact_sheet.png]

One row per caption (background-free tissue, then "a lot of" Glomeruli, Sclerotic Glomeruli, Tubuli, Dilated
Tubuli, Arteries): three phantoms drawn with that composition, then three samples of the model for the caption
of the row's first phantom (DDIM 50 steps at the model's recommended guidance, the product's defaults; 128 px
unless --size).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from renal_ldm.captions import caption_to_levels
from renal_ldm.contact_sheet import save_contact_sheet
from renal_ldm.paths import demo_model_dir
from renal_ldm.phantom import generate_phantom
from renal_ldm.sample import Sampler, SampleRequest

ROWS = [
    ("background-free tissue", {"Tubuli": 0.3, "Glomeruli": 0.1, "Dilated Tubuli": 0.1, "Arteries": 0.05}),
    ("a lot of Glomeruli", {"Glomeruli": 0.45}),
    ("a lot of Sclerotic Glomeruli", {"Sclerotic Glomeruli": 0.45}),
    ("a lot of Tubuli", {"Tubuli": 0.45}),
    ("a lot of Dilated Tubuli", {"Dilated Tubuli": 0.45}),
    ("a lot of Arteries", {"Arteries": 0.45}),
]
PER_SIDE = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(demo_model_dir()))
    parser.add_argument("--out", default=str(demo_model_dir() / "contact_sheet.png"))
    parser.add_argument("--size", type=int, default=128, help="sample and phantom size (the demo trains at 128)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()

    sampler = Sampler.from_dir(args.model)
    rows, labels = [], []
    for row, (label, composition) in enumerate(ROWS):
        phantoms = [
            generate_phantom(args.size, seed=args.seed + 10 * row + k, composition=composition) for k in range(PER_SIDE)
        ]
        caption = phantoms[0].caption
        started = time.perf_counter()
        samples = sampler.sample(
            SampleRequest(caption=caption, n=PER_SIDE, seed=args.seed + 10 * row, steps=args.steps, size=args.size)
        )
        levels = ", ".join(f"{k} {v}" for k, v in caption_to_levels(caption).items())
        print(f"{label}: {levels} | sampled {PER_SIDE} in {time.perf_counter() - started:.1f} s")
        rows.append([p.image for p in phantoms] + [s.array for s in samples])
        labels.append(label)
    tile_labels = [["phantom"] * PER_SIDE + ["generated"] * PER_SIDE for _ in rows]
    sheet = dict(row_labels=labels, tile_labels=tile_labels, tile_size=160)
    path = save_contact_sheet(Path(args.out), rows, colors=256, **sheet)  # a palette keeps the PNG small
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
