"""The quality figures of models/demo/README.md, measured with the product's evaluation code.

    .venv/bin/python scripts/evaluate_demo_model.py [--model models/demo] [--out runs/demo-eval] [--n 200]

1. Generating caption (the reference study's): --n samples judged by the shipped phantom segmenter, Table 5.1
   layout (renal_ldm.evaluate; OUT/generating/caption_accuracy.md).
2. Level sweep: --per-caption samples for every captioned class at low, medium and high alone ("Class=level",
   the other classes absent so requested "none"): per-class exact-level accuracy over every class at every
   level, and the share of samples the segmenter finds glomeruli in when the caption names none
   (OUT/sweep/caption_accuracy.md).
3. Artefacts (renal_ldm.artifacts): latent-grid and window-grid edge ratios and the frame ratio of samples at
   128 and 256 px, beside fresh phantoms of the same sizes.
4. Realism: `renal-ldm realism` of the generating and sweep samples against as many fresh phantoms (seeds
   outside the training set), at 128 px.
Writes OUT/summary.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from renal_ldm.artifacts import edge_ratio, frame_ratio
from renal_ldm.captions import GENERATING_CAPTION, HIGH, LEVELS, NONE, levels_to_caption
from renal_ldm.classes import CAPTIONED_CLASSES
from renal_ldm.evaluate import evaluate_captions, load_judge, write_caption_report
from renal_ldm.paths import SHIPPED_PHANTOM_SEGMENTER, demo_model_dir
from renal_ldm.phantom import generate_dataset, generate_phantom
from renal_ldm.sample import Sampler, SampleRequest, write_samples

GLOMERULI = "Glomeruli"
PHANTOM_SEED = 900_000  # far from the demo data set's seeds 1000..6999


def sample_into(sampler: Sampler, folder: Path, caption: str, n: int, seed: int, size: int, steps: int) -> float:
    started = time.perf_counter()
    write_samples(sampler.sample(SampleRequest(caption=caption, n=n, seed=seed, steps=steps, size=size)), folder)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(demo_model_dir()))
    parser.add_argument("--segmenter", default=str(SHIPPED_PHANTOM_SEGMENTER))
    parser.add_argument("--out", default="runs/demo-eval")
    parser.add_argument("--n", type=int, default=200, help="samples for the generating caption")
    parser.add_argument("--per-caption", type=int, default=8, help="samples per caption of the level sweep")
    parser.add_argument("--artefact-n", type=int, default=16, help="samples (and phantoms) per size for artefacts")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"{out} is not empty; choose another --out", file=sys.stderr)
        return 2
    sampler = Sampler.from_dir(args.model)
    judge = load_judge(args.segmenter)
    summary: dict = {"model": args.model, "fingerprint": sampler.model.fingerprint, "steps": args.steps}
    summary["guidance"] = SampleRequest(caption="").validated(sampler.model).guidance

    # 1. The generating caption.
    took = sample_into(sampler, out / "generating" / "samples", GENERATING_CAPTION, args.n, 0, 128, args.steps)
    generating = evaluate_captions(out / "generating" / "samples", judge)
    write_caption_report(generating, out / "generating")
    summary["generating"] = {
        "n": args.n,
        "sampling_s": round(took, 1),
        "mentions_glomeruli": generating.mentions_glomeruli,
        "table_5_1": generating.table_5_1(),
    }

    # 2. Every class at every level.
    sweep_dir = out / "sweep" / "samples"
    seed = 10_000
    for cls in CAPTIONED_CLASSES:
        for level in LEVELS:
            sample_into(
                sampler, sweep_dir, levels_to_caption({cls.name: level}), args.per_caption, seed, 128, args.steps
            )
            seed += args.per_caption
    sweep = evaluate_captions(sweep_dir, judge)
    write_caption_report(sweep, out / "sweep")
    exact = {c.name: sweep.exact_level_accuracy(c.name) for c in CAPTIONED_CLASSES}
    unasked = [r for r in sweep.rows if r.requested[GLOMERULI] == NONE]
    summary["sweep"] = {
        "n": len(sweep.rows),
        "exact_level_accuracy": exact,
        "mean_exact_level_accuracy": float(np.mean(list(exact.values()))),
        "glomeruli_found_when_not_asked": float(np.mean([r.predicted[GLOMERULI] != NONE for r in unasked])),
        "glomeruli_found_when_asked_high": float(
            np.mean([r.predicted[GLOMERULI] != NONE for r in sweep.rows if r.requested[GLOMERULI] == HIGH])
        ),
    }

    # 3. Block pattern and frame, samples against phantoms.
    artefacts = {}
    for size in (128, 256):
        caption = levels_to_caption({GLOMERULI: HIGH})
        samples = [r.array for r in sampler.sample(SampleRequest(caption=caption, n=args.artefact_n, size=size))]
        phantoms = [np.asarray(generate_phantom(size, seed=PHANTOM_SEED + k).image) for k in range(args.artefact_n)]
        row = {}
        for name, images in (("samples", samples), ("phantoms", phantoms)):
            row[name] = {
                "latent_grid_4px": edge_ratio(images, 4),
                "frame_4px": frame_ratio(images, 4),
            }
            if size > 128:
                row[name]["window_grid_64px"] = edge_ratio(images, 64)
        artefacts[size] = row
    summary["artefacts"] = artefacts

    # 4. Realism against fresh phantoms.
    n_real = len(generating.rows) + len(sweep.rows)
    generate_dataset(out / "phantoms", n_real, size=128, seed=PHANTOM_SEED, workers=2)
    synthetic = out / "synthetic"
    synthetic.mkdir()
    for folder in (out / "generating" / "samples", sweep_dir):
        for png in folder.glob("*.png"):
            (synthetic / f"{folder.parent.name}_{png.name}").symlink_to(png.resolve())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "renal_ldm",
            "realism",
            "--real",
            str(out / "phantoms"),
            "--synthetic",
            str(synthetic),
            "--out",
            str(out / "realism"),
            "--size",
            "128",
            "--no-progress",
        ],
        check=True,
    )
    summary["realism"] = json.loads((out / "realism" / "realism.json").read_text())

    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "realism"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
