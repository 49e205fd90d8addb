"""What taking the frame away costs: a lone image with no margin, a late margin and a margin over every step.

    .venv/bin/python benchmarks/margin_cost.py [--model models/demo] [--rounds 3]

The product's Sampler draws the generating caption (seed 0, n = 1) three ways per setting: no margin; the smallest
margin for the last steps only (margin_late, mirrored from the latent; what the app's "No frame along the border"
does); the smallest margin over every step (`sample --margin`). Rounds alternate the three so load from other work
hits them alike; the fastest run of each counts. Prints seconds and the ratio to no margin.
"""

from __future__ import annotations

import argparse
import time


def main() -> int:
    from renal_ldm.captions import GENERATING_CAPTION
    from renal_ldm.paths import demo_model_dir
    from renal_ldm.sample import Sampler, SampleRequest, frameless_margin

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(demo_model_dir()))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sampler = Sampler.from_dir(args.model, device="cpu")
    margin = frameless_margin(sampler.model)
    trained = sampler.model.config.image_size
    for size, scheduler, steps in ((2 * trained, "ddim", 50), (trained, "ddim", 50), (2 * trained, "dpmpp", 20)):
        base = dict(caption=GENERATING_CAPTION, size=size, scheduler=scheduler, steps=steps)
        requests = {
            "no margin": SampleRequest(**base),
            "late margin": SampleRequest(**base, margin=margin, margin_late=True),
            "margin over every step": SampleRequest(**base, margin=margin),
        }
        sampler.sample(requests["no margin"])  # warm-up
        times: dict[str, list[float]] = {name: [] for name in requests}
        for _ in range(args.rounds):
            for name, request in requests.items():
                started = time.perf_counter()
                sampler.sample(request)
                times[name].append(time.perf_counter() - started)
        plain = min(times["no margin"])
        cells = ", ".join(f"{name} {min(t):.2f} s ({min(t) / plain:.2f}x)" for name, t in times.items())
        print(f"{size} px, {scheduler} {steps} steps, margin {margin} px: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
