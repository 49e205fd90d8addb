"""Seamless slide generation (`renal-ldm sample-slide`) against stitching independent patches: seams, cost and
memory, in one run.

1. Seam score: the mean |luminance step| across the former patch borders (every training-size patch, 128 px
   for the demo model) over the mean step elsewhere (renal_ldm.artifacts.edge_ratio; 1.0 = no seams), for
   AREA x AREA px made (a) as independent patches laid side by side (what `stitch` does) and (b) as one seamless
   canvas (`generate_slide`), same caption, seeds and steps. Target: seamless at most 1.1.
2. Cost: the same for SPEED_AREA px (default 1024): wall time of each, and the seamless cost per pixel as a
   ratio of the patches' (overlapping windows denoise every latent cell about four times).
3. Memory: peak RSS of `generate_slide` for each of --memory-sizes in a fresh child process (one denoising step:
   the buffers do not grow with steps), beside a child that only loads the model, and the size the slide's
   pixels would take held whole as float32 (what a decoder of the whole latent would hold).

    .venv/bin/python benchmarks/slide_generation.py [--model DIR] [--area 512] [--speed-area 1024] [--steps 50]
        [--memory-sizes 4096,8192] [--skip seam,speed,memory] [--threads N]

Run it on a quiet machine: the timings share the CPU with anything else running.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEAM_TARGET = 1.1
CHILD = """
import json, resource, sys, time
import torch
model, size, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.sample import Sampler
from renal_ldm.slides.generate import generate_slide
from renal_ldm.slides.layout import uniform_layout
t = time.perf_counter()
sampler = Sampler.from_dir(model, device="cpu")
if size != "0":
    generate_slide(sampler, out, size, uniform_layout(GENERATING_CAPTION), steps=1, seed=0)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def read_slide(path: Path) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        return np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))


def independent_patches(sampler, caption: str, area: int, steps: int, seed: int) -> tuple[np.ndarray, float]:
    """AREA x AREA px of independent training-size patches (seeds seed, seed + 1, ...) laid out row by row."""
    from renal_ldm.sample import SampleRequest

    patch = sampler.model.config.image_size
    per_side = area // patch
    started = time.perf_counter()
    results = sampler.sample(
        SampleRequest(caption=caption, n=per_side**2, seed=seed, steps=steps, batch_size=4, size=patch)
    )
    seconds = time.perf_counter() - started
    rows = [
        np.concatenate([r.array for r in results[i * per_side : (i + 1) * per_side]], axis=1) for i in range(per_side)
    ]
    return np.concatenate(rows, axis=0), seconds


def seamless(sampler, caption: str, area: int, steps: int, seed: int, folder: Path) -> tuple[np.ndarray, float]:
    from renal_ldm.slides.generate import generate_slide
    from renal_ldm.slides.layout import uniform_layout

    out = folder / f"seamless-{area}.tif"
    result = generate_slide(
        sampler,
        out,
        (area, area),
        uniform_layout(caption),
        steps=steps,
        seed=seed,
        compression="deflate",
        overwrite=True,
    )
    return read_slide(out), result.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/demo")
    parser.add_argument("--area", type=int, default=512)
    parser.add_argument("--speed-area", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-sizes", default="4096,8192")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: seam, speed, memory")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    import torch

    from renal_ldm.artifacts import edge_ratio
    from renal_ldm.captions import GENERATING_CAPTION
    from renal_ldm.sample import Sampler

    torch.set_num_threads(args.threads)
    sampler = Sampler.from_dir(args.model, device="cpu")
    patch = sampler.model.config.image_size
    caption = GENERATING_CAPTION
    report: dict = {"model": args.model, "steps": args.steps, "patch": patch, "threads": args.threads}
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        if "seam" not in skip:
            naive, _ = independent_patches(sampler, caption, args.area, args.steps, args.seed)
            joined, _ = seamless(sampler, caption, args.area, args.steps, args.seed, folder)
            report["seam"] = {
                "area": args.area,
                "naive_stitching": round(edge_ratio([naive], patch), 3),
                "seamless": round(edge_ratio([joined], patch), 3),
                "seamless_half_window": round(edge_ratio([joined], patch // 2), 3),
            }
            s = report["seam"]
            print(
                f"seam score over {args.area}^2 px (steps across every {patch} px border / elsewhere; 1.0 = none): "
                f"naive stitching {s['naive_stitching']:.3f}   seamless {s['seamless']:.3f} "
                f"(target <= {SEAM_TARGET}: {'met' if s['seamless'] <= SEAM_TARGET else 'NOT met'}); "
                f"seamless at its {patch // 2} px window stride {s['seamless_half_window']:.3f}",
                flush=True,
            )
        if "speed" not in skip:
            area = args.speed_area
            _, t_patches = independent_patches(sampler, caption, area, args.steps, args.seed)
            _, t_seamless = seamless(sampler, caption, area, args.steps, args.seed, folder)
            report["speed"] = {
                "area": area,
                "independent_patches_s": round(t_patches, 1),
                "seamless_s": round(t_seamless, 1),
                "cost_per_pixel_ratio": round(t_seamless / t_patches, 2),
            }
            print(
                f"{area}^2 px, {args.steps} steps: independent {patch} px patches {t_patches:.1f} s "
                f"({(area // patch) ** 2} patches), seamless {t_seamless:.1f} s (incl. writing the TIFF): "
                f"seamless costs {t_seamless / t_patches:.2f}x per pixel",
                flush=True,
            )
    if "memory" not in skip:
        report["memory"] = []
        sizes = ["0"] + [s.strip() for s in args.memory_sizes.split(",") if s.strip()]
        for size in sizes:
            with tempfile.TemporaryDirectory() as work:
                out = Path(work) / "slide.tif"
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, args.model, size, str(out), str(args.threads)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if proc.returncode:
                print(f"memory child for {size} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            side = int(size)
            whole = side * side * 3 * 4
            row = {"size": side, "peak_rss_mib": round(result["rss"] / 2**20), "seconds": round(result["seconds"], 1)}
            report["memory"].append(row)
            what = "model loaded only (baseline)" if side == 0 else f"{side}^2 px slide, 1 step"
            extra = "" if side == 0 else f"; its pixels whole as float32 would take {whole / 2**20:.0f} MiB"
            print(f"peak RSS {what}: {row['peak_rss_mib']} MiB in {row['seconds']} s{extra}", flush=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
