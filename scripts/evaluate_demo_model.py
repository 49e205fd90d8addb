"""The quality figures of models/demo/README.md, measured with the product's evaluation code.

    .venv/bin/python scripts/evaluate_demo_model.py [--model models/demo] [--out runs/demo-eval] [--n 200]

1. Generating caption (the reference study's): --n samples judged by the shipped phantom segmenter, Table 5.1
   layout (renal_ldm.evaluate; OUT/generating/caption_accuracy.md); beside them up to 64 phantoms with a lot of
   glomeruli through the model's autoencoder and blurred to the samples' sharpness: the same judge's reading of a
   model that drew a lot of glomeruli but as soft as these samples (the judge reads soft structures smaller).
2. Level sweep: --per-caption samples for every captioned class at low, medium and high alone ("Class=level",
   the other classes absent so requested "none"): per-class exact-level accuracy over every class at every
   level, and the share of samples the segmenter finds glomeruli in when the caption names none
   (OUT/sweep/caption_accuracy.md). One-class captions ask for tissue no phantom shows: every phantom has
   interstitium ("other kidney tissue") and at least one more class, so none of the training captions has
   fewer than two class sentences and "none" of interstitium is out of reach for any model of this data.
2b. Composition sweep: the full captions of held-out phantoms (seeds outside the training set), --per-cell for
   every class at every level (a phantom whose own mask puts that class at that level), one sample each; the
   same judge on those phantoms themselves gives the ceiling the judge allows, and on them made as soft as the
   samples (as in 1) the ceiling at the samples' softness (OUT/compositions/).
3. Artefacts (renal_ldm.artifacts): latent-grid and window-grid edge ratios, the frame ratio and sharpness of
   samples at 128 and 256 px (whole latent, windows, with a 16 px margin over every step and for the last steps
   only), beside fresh phantoms (of the caption, and cut from a wider field).
4. Realism: `renal-ldm realism` of every sample judged above against as many fresh phantoms (seeds outside the
   training set), at 128 px.
--parts picks a subset; --guidance overrides the model's recommended guidance; --late-margin draws the judged
samples (1, 2, 2b) with the app's default late margin; --precision auto samples as the app does (bf16 where native).
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
import torch
from PIL import Image

from renal_ldm.artifacts import edge_ratio, frame_ratio_interval, sharpness, soften_to_sharpness
from renal_ldm.captions import GENERATING_CAPTION, HIGH, LEVELS, NONE, caption_to_levels, levels_to_caption
from renal_ldm.classes import CAPTIONED_CLASSES
from renal_ldm.evaluate import (
    PHANTOM_JUDGE_SPECKS,
    PHANTOM_SPECK_SIZES,
    evaluate_captions,
    load_judge,
    parse_speck_sizes,
    write_caption_report,
)
from renal_ldm.models.configs import SAMPLING_PRECISIONS
from renal_ldm.paths import SHIPPED_PHANTOM_SEGMENTER, demo_model_dir
from renal_ldm.phantom import FIELD_CONTEXT, generate_dataset, generate_phantom
from renal_ldm.sample import Sampler, SampleRequest, frameless_margin, to_uint8, write_samples
from renal_ldm.training.autoencoder import reconstruct

GLOMERULI = "Glomeruli"
PHANTOM_SEED = 900_000  # far from the demo data sets' seeds (1000..12999)
PARTS = ("generating", "sweep", "compositions", "artefacts", "realism")


def level_summary(result) -> dict:
    """Per-class exact-level accuracy, its mean, and how often glomeruli are found unasked / asked for a lot."""
    exact = {c.name: result.exact_level_accuracy(c.name) for c in CAPTIONED_CLASSES}
    unasked = [r for r in result.rows if r.requested[GLOMERULI] == NONE]
    high = [r for r in result.rows if r.requested[GLOMERULI] == HIGH]

    def found_share(rows) -> float | None:  # None where no sample asked so (the generating caption: none unasked)
        return float(np.mean([r.predicted[GLOMERULI] != NONE for r in rows])) if rows else None

    return {
        "n": len(result.rows),
        "exact_level_accuracy": exact,
        "mean_exact_level_accuracy": float(np.mean(list(exact.values()))),
        "glomeruli_found_when_not_asked": found_share(unasked),
        "n_not_asked": len(unasked),
        "glomeruli_found_when_asked_high": found_share(high),
    }


def planned_judged_samples(parts: set[str], n: int, per_caption: int, per_cell: int) -> int:
    """How many samples the judged parts (generating, sweep, compositions) write: the realism part's input."""
    cells = len(CAPTIONED_CLASSES) * len(LEVELS)
    counts = {"generating": n, "sweep": cells * per_caption, "compositions": cells * per_cell}
    return sum(count for part, count in counts.items() if part in parts)


def held_out_phantoms_per_cell(per_cell: int, pool: int = 3000) -> list[tuple[int, object]]:
    """(seed, phantom) pairs: for every captioned class and level, the first `per_cell` held-out phantoms (in seed
    order, each used once) whose own caption puts that class at that level."""
    phantoms = [(PHANTOM_SEED + k, generate_phantom(128, seed=PHANTOM_SEED + k)) for k in range(pool)]
    levels = [(seed, p, caption_to_levels(p.caption)) for seed, p in phantoms]
    chosen, used = [], set()
    for cls in CAPTIONED_CLASSES:
        for level in LEVELS:
            cell = [(s, p) for s, p, lv in levels if lv.get(cls.name, NONE) == level and s not in used][:per_cell]
            used.update(s for s, _ in cell)
            chosen += cell
    return chosen


def seeded_phantoms_of_levels(
    levels: dict[str, str], n: int, size: int, seed: int = PHANTOM_SEED, context: int = 0
) -> list[tuple[int, object]]:
    """(seed, phantom) pairs: n fresh phantoms (seeds outside the training set) whose own caption has these levels,
    the reference for samples of that caption (tissue full of glomeruli has a slightly busier border than the
    average tile, unless cut from a wider field: context, renal_ldm.phantom.FIELD_CONTEXT)."""
    lead = [name for name, level in levels.items() if level != NONE]
    found = []
    for k in range(200 * n):
        phantom = generate_phantom(size, seed=seed + k, lead=lead or None, context=context)
        have = caption_to_levels(phantom.caption)
        if all(have.get(name, NONE) == level for name, level in levels.items()):  # a caption omits "none"
            found.append((seed + k, phantom))
            if len(found) == n:
                return found
    raise RuntimeError(f"only {len(found)} of {200 * n} phantoms of {size} px have {levels}; expected {n}")


def phantoms_of_levels(levels: dict[str, str], n: int, size: int, seed: int = PHANTOM_SEED, context: int = 0) -> list:
    """The phantoms of seeded_phantoms_of_levels, without their seeds."""
    return [phantom for _, phantom in seeded_phantoms_of_levels(levels, n, size, seed, context)]


def autoencoded(sampler: Sampler, images: list[np.ndarray], batch: int = 16) -> list[np.ndarray]:
    """The images encoded, quantized and decoded by the model's autoencoder (training.autoencoder.reconstruct): the
    best a perfect UNet could give, so the autoencoder's own border is told from the UNet's."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.stack(images[start : start + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.extend(to_uint8(reconstruct(sampler.model.vae, x.to(sampler.device))))
    return out


def write_phantom_as_sample(folder: Path, seed: int, phantom, image: np.ndarray | None = None) -> None:
    """A phantom (or `image`, a copy of it changed) as a `renal-ldm sample`-style file pair (PNG + sidecar with the
    phantom's own caption), for the judge."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(phantom.image if image is None else image).save(folder / f"phantom_{seed}.png")
    sidecar = {"caption": phantom.caption, "size": phantom.image.shape[0], "phantom_seed": seed}
    (folder / f"phantom_{seed}.json").write_text(json.dumps(sidecar))


def soft_phantom_reference(sampler: Sampler, seeded: list[tuple[int, object]], samples: Path, dest: Path) -> dict:
    """Write the (seed, phantom) pairs to `dest` as the judge's reference at the samples' softness: through the
    model's autoencoder, then blurred by the one Gaussian that brings them to the sharpness of the samples in
    `samples`. The judge reads soft structures as smaller (a lot of glomeruli as a low or medium amount: the
    segmenter's README), so samples are compared with phantoms it reads the same way. Returns sigma and sharpness."""
    drawn = [np.asarray(Image.open(png).convert("RGB")) for png in sorted(samples.glob("*.png"))]
    images = [np.asarray(phantom.image) for _, phantom in seeded]
    through = autoencoded(sampler, images)
    softened, sigma = soften_to_sharpness(through, sharpness(drawn))
    for (seed, phantom), image in zip(seeded, softened, strict=True):
        write_phantom_as_sample(dest, seed, phantom, image)
    return {
        "sigma_px": round(sigma, 3),
        "sharpness": {
            "samples": sharpness(drawn),
            "phantoms": sharpness(images),
            "phantoms_through_autoencoder": sharpness(through),
            "phantoms_softened": sharpness(softened),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(demo_model_dir()))
    parser.add_argument("--segmenter", default=str(SHIPPED_PHANTOM_SEGMENTER))
    parser.add_argument("--out", default="runs/demo-eval")
    parser.add_argument("--n", type=int, default=200, help="samples for the generating caption")
    parser.add_argument("--per-caption", type=int, default=8, help="samples per caption of the level sweep")
    parser.add_argument("--per-cell", type=int, default=6, help="phantom captions per class and level (2b)")
    parser.add_argument(
        "--artefact-n",
        type=int,
        default=64,
        help="samples (and phantoms) per size for artefacts (16 give a frame ratio noisy by +-0.05)",
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, help="default: the model's recommended guidance")
    parser.add_argument(
        "--min-component",
        default=PHANTOM_JUDGE_SPECKS,
        help="judge with predicted specks under this many px dropped (renal_ldm.evaluate.remove_specks), or "
        f"{PHANTOM_JUDGE_SPECKS!r} (default) for the shipped judge's sizes per class {PHANTOM_SPECK_SIZES}; every "
        "figure is also given with every pixel counted (the reference's rule), under *_every_pixel",
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument(
        "--late-margin",
        action="store_true",
        help="draw the judged samples with the smallest margin for the last steps (the app's No frame default)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=SAMPLING_PRECISIONS,
        help="the UNet's precision for every sample (auto: bf16 where native, the app's default; default fp32)",
    )
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if parts - set(PARTS):
        print(f"unknown --parts {sorted(parts - set(PARTS))}; expected some of {', '.join(PARTS)}", file=sys.stderr)
        return 2
    try:
        specks = parse_speck_sizes(args.min_component)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"{out} is not empty; choose another --out", file=sys.stderr)
        return 2
    judge = load_judge(args.segmenter)
    if "realism" in parts:  # refuse before sampling for minutes: the Frechet distance needs 2 x its width
        planned = planned_judged_samples(parts, args.n, args.per_caption, args.per_cell)
        if planned < 2 * judge.feature_dim:
            print(
                f"--parts {','.join(sorted(parts))} judges {planned} samples, but the realism part needs at least "
                f"{2 * judge.feature_dim} (2 x the judge's {judge.feature_dim} features); add sweep or "
                "compositions, raise --n, or leave realism out",
                file=sys.stderr,
            )
            return 2
    out.mkdir(parents=True, exist_ok=True)  # every part writes its summary here, artefacts alone too
    sampler = Sampler.from_dir(args.model, precision=args.precision)
    summary: dict = {"model": args.model, "fingerprint": sampler.model.fingerprint, "steps": args.steps}
    summary["precision"] = sampler.precision
    summary["min_component_px"] = specks
    summary["late_margin"] = args.late_margin
    summary["guidance"] = SampleRequest(caption="", guidance=args.guidance).validated(sampler.model).guidance

    def sample_into(folder: Path, caption: str, n: int, seed: int, size: int) -> float:
        started = time.perf_counter()
        margin = frameless_margin(sampler.model) if args.late_margin else 0
        request = SampleRequest(
            caption=caption,
            n=n,
            seed=seed,
            steps=args.steps,
            size=size,
            guidance=args.guidance,
            margin=margin,
            margin_late=args.late_margin,
        )
        write_samples(sampler.sample(request), folder)
        return time.perf_counter() - started

    judged_folders = []

    def judge_folder(folder: Path, report: Path):
        """(specks dropped, every pixel counted) results; the first one's report goes to `report`."""
        clean = evaluate_captions(folder, judge, min_component_px=specks)
        write_caption_report(clean, report)
        return clean, evaluate_captions(folder, judge)

    # 1. The generating caption.
    if "generating" in parts:
        # the reference: phantoms with a lot of glomeruli, the level Table 5.1 judges (phantoms that also have
        # the caption's medium tubuli are too rare to draw: 25 in 12800 tiles led by glomeruli)
        reference_phantoms = seeded_phantoms_of_levels({GLOMERULI: HIGH}, min(args.n, 64), 128)
        took = sample_into(out / "generating" / "samples", GENERATING_CAPTION, args.n, 0, 128)
        generating, every_pixel = judge_folder(out / "generating" / "samples", out / "generating")
        judged_folders.append(out / "generating" / "samples")
        summary["generating"] = {
            "n": args.n,
            "sampling_s": round(took, 1),
            "mentions_glomeruli": generating.mentions_glomeruli,
            "table_5_1": generating.table_5_1(),
            "exact_level_accuracy": level_summary(generating)["exact_level_accuracy"],
        }
        summary["generating_every_pixel"] = {
            "mentions_glomeruli": every_pixel.mentions_glomeruli,
            "table_5_1": every_pixel.table_5_1(),
            "exact_level_accuracy": level_summary(every_pixel)["exact_level_accuracy"],
        }
        # those phantoms as soft as these samples: what this judge reads of a model that drew a lot of glomeruli
        soft_dir = out / "generating" / "phantoms_softened"
        softening = soft_phantom_reference(sampler, reference_phantoms, out / "generating" / "samples", soft_dir)
        reference, _ = judge_folder(soft_dir, out / "generating" / "report_phantoms_softened")
        summary["generating"]["phantoms_softened"] = {
            "n": len(reference_phantoms),
            "caption_levels": {GLOMERULI: HIGH},
            **softening,
            "mentions_glomeruli": reference.mentions_glomeruli,
            "table_5_1": reference.table_5_1(),
        }

    # 2. Every class at every level, one-class captions.
    if "sweep" in parts:
        sweep_dir = out / "sweep" / "samples"
        seed = 10_000
        for cls in CAPTIONED_CLASSES:
            for level in LEVELS:
                sample_into(sweep_dir, levels_to_caption({cls.name: level}), args.per_caption, seed, 128)
                seed += args.per_caption
        sweep, every_pixel = judge_folder(sweep_dir, out / "sweep")
        judged_folders.append(sweep_dir)
        summary["sweep"] = level_summary(sweep)
        summary["sweep_every_pixel"] = level_summary(every_pixel)

    # 2b. Every class at every level, in compositions phantoms really have; the judge's ceiling on the phantoms.
    if "compositions" in parts:
        chosen = held_out_phantoms_per_cell(args.per_cell)
        comp_dir = out / "compositions"
        for k, (seed_k, phantom) in enumerate(chosen):
            sample_into(comp_dir / "samples", phantom.caption, 1, 20_000 + k, 128)
            write_phantom_as_sample(comp_dir / "phantoms", seed_k, phantom)
        softening = soft_phantom_reference(sampler, chosen, comp_dir / "samples", comp_dir / "phantoms_softened")
        summary["compositions"] = {"n": len(chosen), "softening": softening}
        summary["compositions_every_pixel"] = {"n": len(chosen)}
        for name in ("samples", "phantoms", "phantoms_softened"):
            result, every_pixel = judge_folder(comp_dir / name, comp_dir / f"report_{name}")
            summary["compositions"][name] = level_summary(result)
            summary["compositions_every_pixel"][name] = level_summary(every_pixel)
        judged_folders.append(comp_dir / "samples")

    # 3. Block pattern and frame, samples against phantoms of their caption and those phantoms decoded back.
    if "artefacts" in parts:
        artefacts = {}
        levels = {GLOMERULI: HIGH}
        caption = levels_to_caption(levels)
        margin_px = frameless_margin(sampler.model)  # the smallest `sample --margin` (16 px for the demo model)
        for size in (128, 256):
            sets = {}
            for name, windows, margin, late in (
                ("samples", "auto", 0, False),
                ("samples_windowed", "always", 0, False),
                (f"samples_margin_{margin_px}px", "auto", margin_px, False),
                (f"samples_late_margin_{margin_px}px", "auto", margin_px, True),  # the app's "No frame"
            ):
                if windows == "always" and size <= 128:
                    continue
                request = SampleRequest(
                    caption=caption, n=args.artefact_n, size=size, windows=windows, margin=margin, margin_late=late
                )
                sets[name] = [r.array for r in sampler.sample(request)]
            phantoms = [np.asarray(p.image) for p in phantoms_of_levels(levels, args.artefact_n, size)]
            sets["phantoms"] = phantoms
            sets["phantoms_through_autoencoder"] = autoencoded(sampler, phantoms)
            wider = phantoms_of_levels(levels, args.artefact_n, size, context=FIELD_CONTEXT)  # no packing border
            sets[f"phantoms_context_{FIELD_CONTEXT}px"] = [np.asarray(p.image) for p in wider]
            row = {}
            for name, images in sets.items():
                frame, low, high = frame_ratio_interval(images, 4)
                row[name] = {
                    "latent_grid_4px": edge_ratio(images, 4),
                    "frame_4px": frame,
                    "frame_4px_95ci": [low, high],
                    "sharpness": sharpness(images),
                }
                if size > 128:
                    row[name]["window_grid_64px"] = edge_ratio(images, 64)
            artefacts[size] = row
        summary["artefacts"] = artefacts
        summary["artefacts_caption"] = caption

    # 4. Realism of every judged sample against as many fresh phantoms (the figures so far are kept first).
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if "realism" in parts and judged_folders:
        synthetic = out / "synthetic"
        synthetic.mkdir()
        for folder in judged_folders:
            for png in folder.glob("*.png"):
                (synthetic / f"{folder.parent.name}_{png.name}").symlink_to(png.resolve())
        n_real = len(list(synthetic.iterdir()))
        generate_dataset(out / "phantoms", n_real, size=128, seed=PHANTOM_SEED + 100_000, workers=2)
        command = [sys.executable, "-m", "renal_ldm", "realism", "--real", str(out / "phantoms")]
        command += ["--synthetic", str(synthetic), "--out", str(out / "realism"), "--size", "128", "--no-progress"]
        subprocess.run(command, check=True)
        summary["realism"] = json.loads((out / "realism" / "realism.json").read_text())

    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "realism"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
