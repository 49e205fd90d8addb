"""Seamless synthetic slides: one latent the size of the whole slide, denoised as overlapping windows and
streamed into a pyramidal TIFF.

Where `stitch` lays independent patches side by side (each patch border a seam), `generate_slide` samples the
slide as one canvas: the windowed sampler (renal_ldm.sample.WindowedPredictor, MultiDiffusion) denoises every
window of the training size every half window and blends them at every step, so neighbouring regions agree;
the VQ decoder then decodes overlapping tiles (Sampler.decode_strips) and each finished strip goes straight
into the pyramid writer (renal_ldm.slides.pyramid). Guarantees (tests/renal_ldm/test_sample_slide.py):

- Memory is bounded by the latent (3 x H/4 x W/4 floats, 48 MiB at 8192 px, plus its blend buffers), one window
  batch and one row of decoder tiles; never by the slide's pixels (benchmarks/slide_memory.py).
- The same model, layout, size, seed, steps and guidance give the same slide.
- A layout (renal_ldm.slides.layout) gives each window the caption of its region.
- Everything is checked before sampling starts: size, output path, tile, mpp, compression, layout. The TIFF is
  written under a temporary name and renamed at the end, so a refused, failed or cancelled run leaves nothing
  at the output path; the provenance record (`slide.tif.json`) is written after the slide.
- progress(done, total) is monotonic over sampling (UNet calls over all steps) and writing (tiles over all
  levels) together; cancel (a threading.Event) is checked before every UNet call and raises SamplingCancelled.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from renal_ldm import __version__
from renal_ldm.fsutil import write_file_atomically
from renal_ldm.sample import Sampler, SampleRequest, SamplingCancelled
from renal_ldm.slides.info import GENERATED_FORMAT
from renal_ldm.slides.layout import SlideLayout
from renal_ldm.slides.pyramid import (
    DEFAULT_COMPRESSION,
    DEFAULT_TILE,
    Progress,
    check_compression,
    check_mpp,
    check_tile,
    tile_count,
    write_pyramid,
)
from renal_ldm.slides.stitch import SLIDE_SUFFIXES, provenance_path
from renal_ldm.windows import overlapping

MAX_SIDE = 65536
"""Largest slide side accepted (px); a typo such as 40960x40960 is still allowed, 409600 is not."""
_SIZE = re.compile(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*")


@dataclass(frozen=True)
class GeneratedSlide:
    out: Path
    provenance: Path
    width: int
    height: int
    levels: list[tuple[int, int]]
    captions: tuple[str, ...]
    windows: int
    seconds: float


def parse_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """(width, height) from "WIDTHxHEIGHT" or one number for a square; a ValueError shows the expected form."""
    if isinstance(size, tuple):
        width, height = size
    else:
        match = _SIZE.fullmatch(str(size))
        if not match:
            raise ValueError(f"slide size {size!r} is not WIDTHxHEIGHT in pixels, e.g. 4096x4096")
        width = int(match.group(1))
        height = int(match.group(2) or match.group(1))
    for name, value in (("width", width), ("height", height)):
        if not 1 <= value <= MAX_SIDE:
            raise ValueError(f"slide {name} must be 1..{MAX_SIDE} px; got {value}")
    return width, height


def generate_slide(
    sampler: Sampler,
    out: str | Path,
    size: str | tuple[int, int],
    layout: SlideLayout,
    *,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
    eta: float | None = None,
    mpp: float = 0.5,
    tile: int = DEFAULT_TILE,
    compression: str = DEFAULT_COMPRESSION,
    quality: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> GeneratedSlide:
    """Sample one slide of `size` px with `sampler`'s model, each window following its region of `layout`, and
    write it to `out` as a pyramidal TIFF at `mpp` with its provenance record beside it."""
    out = Path(out)
    width, height = parse_size(size)
    check_tile(tile)
    mpp = check_mpp(mpp)
    compression, quality = check_compression(compression, quality)
    if out.suffix.lower() not in SLIDE_SUFFIXES:
        raise ValueError(f"output slide must end in {' or '.join(SLIDE_SUFFIXES)}; got {out.name}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"no folder {out.parent} to write {out.name} in")
    config = sampler.model.config
    multiple = config.size_multiple
    if width % multiple or height % multiple:
        raise ValueError(
            f"slide size {width}x{height} px is not a multiple of {multiple} px on both sides (this model's "
            f"autoencoder factor x UNet downsamplings); try {_round_up(width, multiple)}x{_round_up(height, multiple)}"
        )
    request_fields = {"steps": steps, "guidance": guidance, "scheduler": scheduler, "eta": eta}
    request = SampleRequest(
        caption=layout.captions[0], seed=seed, **{k: v for k, v in request_fields.items() if v is not None}
    ).validated(sampler.model)
    f = config.autoencoder.downsampling_factor
    window_caption = layout.window_caption(height // f, width // f)  # checks the layout covers the slide
    tiles_total = tile_count(width, height, tile)
    sampling_total = [0]

    def sampling_progress(done: int, total: int) -> None:
        sampling_total[0] = total
        if progress is not None:
            progress(done, total + tiles_total)

    def writing_progress(done: int, _total: int) -> None:
        if progress is not None:
            progress(sampling_total[0] + done, sampling_total[0] + tiles_total)

    started = time.perf_counter()
    latents = sampler.sample_canvas(
        request, height, width, list(layout.captions), window_caption, sampling_progress, cancel
    )
    windows = _window_counts(sampler, latents.shape[-2], latents.shape[-1], window_caption, len(layout.captions))

    def strips():
        for strip in sampler.decode_strips(latents):
            if cancel is not None and cancel.is_set():
                raise SamplingCancelled("cancelled while writing the slide")
            yield strip[0]

    levels = write_pyramid(
        out,
        strips(),
        width,
        height,
        tile=tile,
        mpp=mpp,
        compression=compression,
        quality=quality,
        overwrite=overwrite,
        description=f"renal-ldm synthetic slide: generated {width}x{height} px",
        progress=writing_progress,
    )
    seconds = time.perf_counter() - started
    record = {
        "format": GENERATED_FORMAT,
        "renal_ldm_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "slide": out.name,
        "model": str(sampler.model.path) if sampler.model.path is not None else None,
        "model_fingerprint": sampler.model.fingerprint,
        "captions": list(layout.captions),
        "layout": layout.to_dict(),
        "windows_per_caption": windows,
        "seed": request.seed,
        "steps": request.steps,
        "guidance": request.guidance,
        "scheduler": request.scheduler,
        "eta": request.eta,
        "window_batch": sampler.window_batch,
        "precision": sampler.precision,
        "size": {"width": width, "height": height},
        "levels": [{"width": w, "height": h} for w, h in levels],
        "mpp": mpp,
        "tile": tile,
        "compression": compression,
        "quality": quality,
        "seconds": round(seconds, 1),
    }
    provenance = provenance_path(out)
    write_file_atomically(provenance, json.dumps(record, indent=2) + "\n")
    return GeneratedSlide(out, provenance, width, height, levels, layout.captions, sum(windows), seconds)


def _window_counts(sampler: Sampler, height: int, width: int, window_caption, n: int) -> list[int]:
    """How many latent windows each caption conditioned (the provenance shows a layout took effect)."""
    counts = [0] * n
    for window in overlapping(height, width, sampler.model.config.latent_size)[0]:
        counts[window_caption(window)] += 1
    return counts


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
