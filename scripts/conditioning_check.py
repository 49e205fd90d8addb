"""Caption reaches the UNet? Loss with own vs another patch's vs the empty caption on held-out phantoms.

    .venv/bin/python scripts/conditioning_check.py [--model models/demo] [--n 64] [--seed 900000]

Held-out phantoms: random compositions from seeds outside the demo data set (1000..6999), at the model's size.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from renal_ldm.conditioning_check import conditioning_check
from renal_ldm.models.checkpoint import load_model
from renal_ldm.models.manifest import locate_checkpoint
from renal_ldm.paths import demo_model_dir
from renal_ldm.phantom import generate_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(demo_model_dir()))
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=900_000)
    args = parser.parse_args()
    model = load_model(locate_checkpoint(args.model)[0])
    size = model.config.image_size
    phantoms = [generate_phantom(size, seed=args.seed + k) for k in range(args.n)]
    images = torch.from_numpy(np.stack([np.asarray(p.image) for p in phantoms]).astype(np.float32) / 127.5 - 1)
    result = conditioning_check(model, images.permute(0, 3, 1, 2), [p.caption for p in phantoms])
    print(f"{args.model}: {args.n} held-out phantoms of {size} px")
    print(result.table())


if __name__ == "__main__":
    main()
