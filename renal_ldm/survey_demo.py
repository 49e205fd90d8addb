"""The demo survey: a real-vs-synthetic quiz anyone can take a minute after installing, with no data of their own.

Two kinds, chosen by what is installed (`demo_mode`):

- "model": 20 phantom patches (renal_ldm.phantom, 256 px, random compositions) stand in for real tissue, and
  20 samples of a model are the synthetic half: the shipped demo model (renal_ldm.paths.demo_model_dir()), or
  the checkpoint given as `model`. Synthetic image i is sampled with the caption of phantom i, so both halves
  show the same mix of tissue. Sampling takes minutes on a CPU (about 12 s per 256 px image at 50 steps).
- "phantom-only": when no model is given and the demo model is not installed (or when asked for), the
  "synthetic" half is 20 more phantoms drawn from a different seed range. Both halves come from the same
  generator, so nobody can tell them apart (kappa near 0 is the expected result): the survey exists to walk the
  participant flow and the results page, and its title says so. It is created in a few seconds.

A `model` that is given but missing is an error (never silently replaced by phantoms). Every image goes through
the same normalisation as uploads (renal_ldm.survey_images). This module only builds the images; app/survey_demo.py
stores them as a survey (the database is no part of the library).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from renal_ldm import paths
from renal_ldm.models.configs import SAMPLING
from renal_ldm.models.manifest import MANIFEST, RUN_MODEL, is_checkpoint, locate_checkpoint
from renal_ldm.phantom import generate_phantom
from renal_ldm.survey_images import DEFAULT_COUNT, DEFAULT_SIZE, normalise_image

MODEL, PHANTOM_ONLY = "model", "phantom-only"
REAL_SEED_OFFSET = 0
PHANTOM_SYNTHETIC_SEED_OFFSET = 1_000_000
"""Phantom-only demos draw their 'synthetic' half from seeds this far from the real half's."""
MAX_DEMO_IMAGES = 200

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is 'phantoms', 'sampling' or 'saving'."""


@dataclass(frozen=True)
class DemoImages:
    """Both halves of a demo survey as normalised PNGs, how they were made, and the survey's title.

    `*_provenance`: one record per image (phantom seed; model, caption and sampling parameters), for the export.
    """

    real: list[bytes]
    synthetic: list[bytes]
    mode: str
    model_dir: Path | None
    title: str
    real_provenance: list[dict] = field(default_factory=list)
    synthetic_provenance: list[dict] = field(default_factory=list)


def demo_model_available() -> bool:
    return is_checkpoint(paths.demo_model_dir())


def demo_mode(model: str | Path | None = None, phantom_only: bool = False) -> tuple[str, Path | None]:
    """(mode, model dir): an explicit model must exist; without one the demo model, else phantom-only."""
    if phantom_only:
        if model is not None:
            raise ValueError("give either a model or phantom-only, not both")
        return PHANTOM_ONLY, None
    if model is not None:
        path = Path(model).expanduser()
        if not (is_checkpoint(path) or is_checkpoint(path / RUN_MODEL)):
            raise FileNotFoundError(
                f"model directory {str(path)!r} has no {MANIFEST}; expected a checkpoint "
                "written by `renal-ldm train` (its run directory or the run's model/ folder)"
            )
        return MODEL, locate_checkpoint(path)[0]
    if demo_model_available():
        return MODEL, paths.demo_model_dir()
    return PHANTOM_ONLY, None


def demo_title(mode: str, n: int, model_dir: Path | None) -> str:
    if mode == PHANTOM_ONLY:
        return f"Demo survey (phantom-only: the {n} 'synthetic' images are phantoms of another seed)"
    name = "the shipped demo model" if model_dir == paths.demo_model_dir() else f"model {Path(model_dir).name}"
    return f"Demo survey: {n} phantom patches vs {n} samples of {name}"


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_DEMO_IMAGES:
        raise ValueError(f"number of images per half must be an integer from 1 to {MAX_DEMO_IMAGES}, got {n!r}")
    return int(n)


def phantom_patches(n: int, size: int = DEFAULT_SIZE, seed: int = 0, progress: Progress | None = None):
    """n phantoms with seeds seed, seed+1, ... (random compositions)."""
    out = []
    for i in range(n):
        out.append(generate_phantom(size, seed=seed + i))
        if progress:
            progress("phantoms", i + 1, n)
    return out


def sample_model(
    model_dir: Path,
    captions: list[str],
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    *,
    steps: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> list[np.ndarray]:
    """One sample per caption (seed + i for caption i) from the checkpoint; RGB uint8 arrays. Each is denoised with
    the smallest margin for its last steps and cropped (a late margin, renal_ldm.sample), so no frame along its
    border gives it away in the quiz: frame ratio 0.99 at 256 px, where phantoms read 1.01 and a margin over every
    step 0.93 (models/demo/README.md)."""
    from renal_ldm.sample import DEFAULT_STEPS, Sampler, SampleRequest, frameless_margin  # torch only with a model

    sampler = Sampler.from_dir(model_dir, device=device)
    margin = frameless_margin(sampler.model)
    steps = steps or DEFAULT_STEPS
    total = steps * len(captions)
    arrays = []
    for i, caption in enumerate(captions):

        def step(done: int, _total: int, _base: int = i * steps) -> None:
            if progress:
                progress("sampling", _base + done, total)

        request = SampleRequest(
            caption=caption, n=1, seed=seed + i, steps=steps, size=size, batch_size=1, margin=margin, margin_late=True
        )
        arrays.append(sampler.sample(request, progress=step, cancel=cancel)[0].array)
    return arrays


def build_demo_images(
    n: int = DEFAULT_COUNT,
    *,
    model: str | Path | None = None,
    phantom_only: bool = False,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    steps: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> DemoImages:
    """The demo's normalised PNGs (see the module docstring for what each half holds)."""
    n = _check_n(n)
    mode, model_dir = demo_mode(model, phantom_only)
    real = phantom_patches(n, size, seed + REAL_SEED_OFFSET, progress)
    real_provenance = [{"source": "demo phantom", "phantom_seed": seed + REAL_SEED_OFFSET + i} for i in range(n)]
    if mode == PHANTOM_ONLY:
        synthetic = [p.image for p in phantom_patches(n, size, seed + PHANTOM_SYNTHETIC_SEED_OFFSET, progress)]
        synthetic_provenance = [
            {"source": "demo phantom", "phantom_seed": seed + PHANTOM_SYNTHETIC_SEED_OFFSET + i} for i in range(n)
        ]
    else:
        synthetic = sample_model(
            model_dir,
            [p.caption for p in real],
            size,
            seed,
            steps=steps,
            device=device,
            progress=progress,
            cancel=cancel,
        )
        synthetic_provenance = [
            {
                "source": "demo model sample",
                "model": str(model_dir),
                "caption": p.caption,
                "seed": seed + i,
                "steps": steps or SAMPLING.steps,
                "guidance": SAMPLING.guidance,
                "scheduler": SAMPLING.scheduler,
            }
            for i, p in enumerate(real)
        ]
    return DemoImages(
        real=[normalise_image(p.image, size) for p in real],
        synthetic=[normalise_image(a, size) for a in synthetic],
        mode=mode,
        model_dir=model_dir,
        title=demo_title(mode, n, model_dir),
        real_provenance=real_provenance,
        synthetic_provenance=synthetic_provenance,
    )
