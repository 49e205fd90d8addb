"""The Slides page's use cases, without Streamlit: list slides with the state of their files, register a slide
file, stitch samples from the data directory into a new slide as a background job, pick regions to open, and
offer the TIFF for download within a bound. The `renal-ldm slides` commands call the same functions.

Guarantees (tests/app/test_slides.py):

- A slide file is checked (renal_ldm.slides.info) before its row is written: a missing file, a file that is not
  a slide, or a file already listed is refused with one message and changes nothing. Rows store the file's
  absolute path with symbolic links resolved, so one file is listed once.
- A stitch reads only folders inside the data directory and writes under <data home>/slides/ with a name the
  product chooses. Every input is checked before the job starts; a stitch that fails or is cancelled leaves
  no file at its output path and no row, and rows saved earlier are never touched. A finished stitch is
  registered as kind "stitched" with its provenance.
- A seamless generation (renal_ldm.slides.generate) checks the model, size, caption or uploaded layout before
  its job starts, runs on the process's loaded Sampler of that model (the Generate page's), writes under
  <data home>/slides/ and registers the slide as kind "generated"; cancelled or failed, it leaves no file and
  no row. Its size is bounded on the page (MAX_GENERATE_SIDE); larger slides are for `renal-ldm sample-slide`.
- A slide whose file has gone is listed with why (`Listed.problem`), never raised.
- Downloads: a file above MAX_DOWNLOAD_BYTES is not read into memory; the page names its path instead.
- Removing a slide deletes its row, and its files only when the product wrote them (under <data home>/slides/);
  a registered file elsewhere on the server is never deleted.
- Annotators view, open regions and download; stitching, registering and removing are for researchers (and
  everyone in open mode), since they read server paths and change what everyone sees.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

from app import background
from app.background import BackgroundJob, Progress
from app.generation import SAMPLES_DIR
from app.model_choices import ModelChoice
from db import repository as repo
from renal_ldm.annotations.masks import DEFAULT_REGION_SIDE, REGION_SIDES  # noqa: F401 - the Slides page's choices
from renal_ldm.data.layout import IMAGE_SUFFIXES
from renal_ldm.models.configs import MAX_SAMPLING_STEPS, SAMPLING
from renal_ldm.paths import data_home, data_subdir, resolve_in_home
from renal_ldm.slides import info as slide_info
from renal_ldm.slides.info import SlideInfo
from renal_ldm.slides.layout import MAX_LAYOUT_BYTES, SlideLayout, parse_layout, uniform_layout
from renal_ldm.slides.pyramid import DEFAULT_TILE
from renal_ldm.slides.stitch import (
    ORDER_MANIFEST,
    list_samples,
    parse_grid,
    parse_order,
    patch_size,
    provenance_path,
    stitch_slide,
)

if TYPE_CHECKING:
    from renal_ldm.sample import Sampler

SLIDES_DIR = "slides"
"""Where stitched (and generated) slides go, under the data directory."""
MAX_DOWNLOAD_BYTES = 512 * 2**20
"""A slide above this size is not offered as a download (it would be read into the server's memory)."""
TILE_CHOICES = (64, 128, 256, 512, 1024)
DEFAULT_STITCH_TILE = DEFAULT_TILE
OVERVIEW_SIDE = 768
GRID_LINES_UP_TO = 64
"""Cells per side up to which the overview shows the region grid (beyond, lines would only blur it)."""
BOX_COLOUR = (230, 30, 30)
GRID_COLOUR = (40, 40, 40)


GENERATE_SIDES = (256, 384, 512, 768, 1024, 1536, 2048)
DEFAULT_GENERATE_SIDE = 512
MAX_GENERATE_SIDE = GENERATE_SIDES[-1]
"""The largest side the page generates (2048 px: about 15 minutes on a 2-core CPU); the CLI has no bound."""


class GenerationCancelled(RuntimeError):
    """The person who started a slide generation cancelled it; nothing was written."""


class StitchCancelled(RuntimeError):
    """The person who started a stitch cancelled it; nothing was written."""


# ------------------------------------------------------------------------------------------------ listing


@dataclass(frozen=True)
class Listed:
    """A slide row and what is wrong with its file (None: the file is there)."""

    slide: repo.Slide
    problem: str | None = None

    @property
    def missing(self) -> bool:
        return self.problem is not None


def file_problem(slide: repo.Slide) -> str | None:
    """Why the slide's file cannot be shown (cheap: no decoding), or None."""
    path = Path(slide.path)
    if not path.exists():
        return f"file missing: {slide.path} no longer exists"
    if not path.is_file():
        return f"file missing: {slide.path} is not a file any more"
    return None


def list_slides(*, url: str | None = None) -> list[Listed]:
    """Every slide row, newest first, each with the state of its file."""
    return [Listed(s, file_problem(s)) for s in repo.list_slides(url=url)]


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file, or None when it is gone: the key under which its overview is cached."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def slide_label(slide: repo.Slide) -> str:
    """One line naming a slide, for a choice list (plain text)."""
    return f"#{slide.id} {slide.name} ({slide.width}x{slide.height} px, {slide.kind})"


def table_rows(listed: list[Listed]) -> list[dict[str, Any]]:
    """The slides as table rows (plain values; the page shows them in a data frame)."""
    rows = []
    for item in listed:
        s = item.slide
        rows.append(
            {
                "id": s.id,
                "name": s.name,
                "kind": s.kind,
                "size (px)": f"{s.width} x {s.height}",
                "levels": s.levels,
                "mpp": s.mpp,
                "created (UTC)": s.created_at.strftime("%Y-%m-%d %H:%M"),
                "by": s.created_by or "",
                "file": "missing" if item.missing else "ok",
            }
        )
    return rows


def provenance_summary(provenance: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(label, value) pairs of where a slide came from: samples folder, grid, model, captions, seeds, ..."""
    if not provenance:
        return []
    p = provenance
    out: list[tuple[str, str]] = []
    if isinstance(p.get("format"), str):
        out.append(("format", p["format"]))
    if p.get("samples"):
        out.append(("samples folder", str(p["samples"])))
    grid, patch = p.get("grid"), p.get("patch")
    if isinstance(grid, dict) and isinstance(patch, dict):
        out.append(
            (
                "grid",
                f"{grid.get('cols')} x {grid.get('rows')} patches of {patch.get('width')}x{patch.get('height')} px",
            )
        )
    if isinstance(p.get("order"), str):
        source = f" (from {p['source_order']})" if p.get("source_order") else ""
        out.append(("order", p["order"] + source))
    if p.get("model"):
        out.append(("model", str(p["model"])))
    captions = _captions(p)
    if captions:
        out.append(("captions" if len(captions) > 1 else "caption", " | ".join(captions)))
    seeds = _seeds(p)
    if seeds:
        out.append(("seeds" if len(seeds) > 1 else "seed", _seed_text(seeds)))
    for key in ("steps", "guidance", "scheduler", "compression", "quality", "mpp", "renal_ldm_version", "created_at"):
        value = p.get(key)
        if value is not None and not isinstance(value, dict | list):
            out.append((key.replace("_", " "), str(value)))
    return out


def _captions(p: dict[str, Any]) -> list[str]:
    found: list[str] = []
    value = p.get("captions", p.get("caption"))
    items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
    for item in [*items, *(c for c in p.get("cells") or [] if isinstance(c, dict))]:
        text = item.get("caption") if isinstance(item, dict) else item
        if isinstance(text, str) and text.strip() and " ".join(text.split()) not in found:
            found.append(" ".join(text.split()))
    return found


def _seeds(p: dict[str, Any]) -> list[int]:
    values = [p.get("seed"), *(p.get("seeds") or [])]
    values += [c.get("seed") for c in p.get("cells") or [] if isinstance(c, dict)]
    return sorted({v for v in values if isinstance(v, int) and not isinstance(v, bool)})


def _seed_text(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]} ({len(seeds)} seeds)"
    shown = ", ".join(str(s) for s in seeds[:12])
    return shown + (f", ... ({len(seeds)} seeds)" if len(seeds) > 12 else "")


# ---------------------------------------------------------------------------------------------- register


def register_slide(
    path: str | Path,
    *,
    name: str | None = None,
    kind: str | None = None,
    created_by: str | None = None,
    url: str | None = None,
) -> repo.Slide:
    """List an existing slide file (an absolute path on the server) with what OpenSlide reads from it."""
    text = str(path).strip()
    if not text:
        raise ValueError("give the path of a slide file on the server, such as /data/slides/kidney.tif")
    file = Path(text).expanduser()
    if not file.is_absolute():
        raise ValueError(f"slide path {text!r} must be absolute (a file on the server, such as /data/slides/a.tif)")
    described = slide_info.describe_slide(file.resolve())
    return repo.add_slide(
        name=(name or "").strip() or described.path.stem,
        path=str(described.path),
        width=described.width,
        height=described.height,
        levels=described.level_count,
        mpp=described.mpp,
        kind=kind or described.kind,
        provenance=described.provenance,
        patch_size=_square_patch(described.provenance),
        created_by=created_by,
        url=url,
    )


def _square_patch(provenance: dict[str, Any] | None) -> int | None:
    patch = (provenance or {}).get("patch")
    if isinstance(patch, dict) and patch.get("width") == patch.get("height") and isinstance(patch.get("width"), int):
        return patch["width"] if patch["width"] > 0 else None
    return None


# ------------------------------------------------------------------------------------------------ stitch


@dataclass(frozen=True)
class SampleFolder:
    """A folder of samples under the data directory the page offers to stitch."""

    path: Path
    relative: str
    images: int

    @property
    def label(self) -> str:
        return f"{self.relative} ({self.images} images)"


def sample_folders(home: str | Path | None = None) -> list[SampleFolder]:
    """The Library's sample runs (<data home>/samples/<run>/ holding images), newest first."""
    home = Path(home) if home is not None else data_home()
    root = home / SAMPLES_DIR
    if not root.is_dir():
        return []
    found = []
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
        images = sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if images:
            found.append(SampleFolder(folder, folder.relative_to(home).as_posix(), images))
    return found


def samples_folder(text: str | Path, home: str | Path | None = None) -> Path:
    """A folder inside the data directory, given relative to it (or as an absolute path inside it)."""
    home_path = Path(home).resolve() if home is not None else data_home()
    value = str(text).strip()
    if not value:
        raise ValueError("give the samples folder (relative to the data directory, such as samples/<run>)")
    if Path(value).expanduser().is_absolute():
        folder = Path(value).expanduser().resolve()
        if not folder.is_relative_to(home_path):
            raise ValueError(
                f"samples folder {value!r} is outside the data directory {str(home_path)!r}; "
                "the page stitches only folders inside it"
            )
    else:
        folder = resolve_in_home(value, home_path)
    if not folder.is_dir():
        raise ValueError(f"samples folder {value!r} is not a folder in the data directory {str(home_path)!r}")
    return folder


def auto_grid(count: int) -> tuple[int, int]:
    """The largest square grid `count` samples fill."""
    side = math.isqrt(count)
    if side < 1:
        raise ValueError("the folder holds no images to stitch")
    return side, side


@dataclass(frozen=True)
class StitchPlan:
    """A stitch checked before it starts."""

    folder: Path
    grid: tuple[int, int]
    patch: tuple[int, int]
    available: int

    @property
    def size(self) -> tuple[int, int]:
        return self.grid[0] * self.patch[0], self.grid[1] * self.patch[1]


def plan_stitch(folder: str | Path, grid: str | None, *, order: str = ORDER_MANIFEST, home=None) -> StitchPlan:
    """Check a stitch request as the library will see it (folder, grid, order, same-size images), before any
    job starts; a blank grid is the largest square the samples fill."""
    path = samples_folder(folder, home)
    parse_order(order)
    samples, _ = list_samples(path)
    if not samples:
        raise ValueError(f"samples folder {path} holds no images to stitch")
    cols, rows = parse_grid(grid) if grid and str(grid).strip() else auto_grid(len(samples))
    if cols * rows > len(samples):
        raise ValueError(f"grid {cols}x{rows} needs {cols * rows} samples; {path} holds {len(samples)}")
    return StitchPlan(path, (cols, rows), patch_size(samples), len(samples))


@dataclass(frozen=True)
class StitchJob:
    """A started stitch: the background job the page polls and the file it writes."""

    job: BackgroundJob
    out: Path
    plan: StitchPlan


def new_slide_path(home: str | Path | None = None) -> Path:
    """A product-chosen file name under <data home>/slides/: UTC time (sorts by age) plus random hex."""
    folder = Path(home) / SLIDES_DIR if home is not None else data_subdir(SLIDES_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{secrets.token_hex(4)}.tif")


def start_stitch(
    folder: str | Path,
    grid: str | None = None,
    *,
    name: str | None = None,
    mpp: float = 0.5,
    compression: str = "jpeg",
    quality: int | None = None,
    tile: int = DEFAULT_STITCH_TILE,
    order: str = ORDER_MANIFEST,
    created_by: str | None = None,
) -> StitchJob:
    """Check the request, then stitch in the background and register the slide when it is written."""
    from renal_ldm.slides.pyramid import check_compression, check_mpp, check_tile

    plan = plan_stitch(folder, grid, order=order)
    check_tile(int(tile))
    check_mpp(float(mpp))
    check_compression(compression, quality)
    cols, rows = plan.grid
    title = (name or "").strip() or f"{plan.folder.name} {cols}x{rows}"
    out = new_slide_path()

    def work(progress: Progress, cancel: threading.Event) -> repo.Slide:
        def tiles(done: int, total: int) -> None:
            if cancel.is_set():
                raise StitchCancelled("the stitch was cancelled; no slide was written")
            progress("stitching", done, total)

        if cancel.is_set():
            raise StitchCancelled("the stitch was cancelled; no slide was written")
        stitch_slide(
            plan.folder,
            out,
            plan.grid,
            mpp=float(mpp),
            compression=compression,
            quality=quality,
            tile=int(tile),
            order=order,
            progress=tiles,
        )
        progress("registering", 1, 1)
        try:
            return register_slide(out, name=title, kind=slide_info.STITCHED, created_by=created_by)
        except Exception as exc:
            raise RuntimeError(
                f"the slide was written to {out} but could not be listed ({exc}); "
                f"list it with `renal-ldm slides add {out}`"
            ) from exc

    return StitchJob(background.start("stitch", work), out, plan)


# -------------------------------------------------------------------------------------------- generate


@dataclass(frozen=True)
class GenerateJob:
    """A started seamless generation: the background job the page polls and the file it writes."""

    job: BackgroundJob
    out: Path
    size: tuple[int, int]
    captions: tuple[str, ...]


def read_layout(data: bytes, width: int, height: int) -> SlideLayout:
    """An uploaded layout JSON (regions as boxes or polygons; see renal_ldm.slides.layout) for a slide of that
    size; a label-image layout names a file on the server, so it is for the command line."""
    if len(data) > MAX_LAYOUT_BYTES:
        raise ValueError(f"the layout file is {len(data)} bytes; a layout is at most {MAX_LAYOUT_BYTES} bytes")
    try:
        parsed = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the layout file is not JSON ({exc}); expected an object with default and regions") from None
    if isinstance(parsed, dict) and "labels" in parsed:
        raise ValueError(
            "a label-image layout names an image file on the server; upload a layout of boxes or polygons here, "
            "or use `renal-ldm sample-slide --layout FILE`"
        )
    return parse_layout(parsed, width, height, source="(uploaded)")


def start_generation(
    model: ModelChoice,
    sampler_for: Callable[[str], Sampler],
    *,
    width: int = DEFAULT_GENERATE_SIDE,
    height: int = DEFAULT_GENERATE_SIDE,
    caption: str | None = None,
    layout: bytes | None = None,
    steps: int = SAMPLING.steps,
    guidance: float | None = None,
    seed: int = 0,
    mpp: float = 0.5,
    compression: str = "jpeg",
    name: str | None = None,
    created_by: str | None = None,
) -> GenerateJob:
    """Check the request, then generate one seamless slide in the background with `sampler_for(model.path)` and
    register it when written. The caption applies to the whole slide unless a layout is given."""
    from renal_ldm.slides.pyramid import check_compression, check_mpp

    if model.problem:
        raise ValueError(f"model {model.name!r} cannot be used: {model.problem}")
    multiple = model.size_multiple or 1
    for label, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or not 0 < value <= MAX_GENERATE_SIDE or value % multiple:
            raise ValueError(
                f"slide {label} must be a multiple of {multiple} px up to {MAX_GENERATE_SIDE} px here (larger slides: "
                f"`renal-ldm sample-slide`); got {value}"
            )
    if not isinstance(steps, int) or not 1 <= steps <= MAX_SAMPLING_STEPS:
        raise ValueError(f"steps must be an integer in 1..{MAX_SAMPLING_STEPS}; got {steps}")
    if guidance is not None and not guidance >= 0:
        raise ValueError(f"guidance scale must be a number >= 0; got {guidance}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed}")
    check_mpp(float(mpp))
    check_compression(compression, None)
    if layout is not None:
        plan = read_layout(layout, width, height)
    else:
        text = (caption or "").strip()
        if not text:
            raise ValueError("give a caption for the slide (or upload a layout of per-region captions)")
        plan = uniform_layout(text)
    plan.caption_map(max(1, height // multiple), max(1, width // multiple))  # every part of the slide has one
    title = (name or "").strip() or f"generated {width}x{height} seed {seed}"
    out = new_slide_path()

    def work(progress: Progress, cancel: threading.Event) -> repo.Slide:
        from renal_ldm.sample import SamplingCancelled
        from renal_ldm.slides.generate import generate_slide

        def tick(done: int, total: int) -> None:
            progress("generating", done, total)

        if cancel.is_set():
            raise GenerationCancelled("the generation was cancelled; no slide was written")
        sampler = sampler_for(model.path)
        try:
            generate_slide(
                sampler,
                out,
                (width, height),
                plan,
                seed=seed,
                steps=steps,
                guidance=guidance,
                mpp=float(mpp),
                compression=compression,
                progress=tick,
                cancel=cancel,
            )
        except SamplingCancelled:
            raise GenerationCancelled("the generation was cancelled; no slide was written") from None
        progress("registering", 1, 1)
        try:
            return register_slide(out, name=title, kind=slide_info.GENERATED, created_by=created_by)
        except Exception as exc:
            raise RuntimeError(
                f"the slide was written to {out} but could not be listed ({exc}); "
                f"list it with `renal-ldm slides add {out}`"
            ) from exc

    return GenerateJob(background.start("generate-slide", work), out, (width, height), plan.captions)


# ------------------------------------------------------------------------------------------------ viewer


@dataclass(frozen=True)
class Region:
    """A rectangle of one level, in that level's own pixels."""

    level: int
    x: int
    y: int
    w: int
    h: int


def level_label(described: SlideInfo, level: int) -> str:
    w, h = described.level_dimensions[level]
    return f"{level}: {w}x{h} px ({described.level_downsamples[level]:g}x smaller)"


def region_grid(described: SlideInfo, level: int, side: int) -> tuple[int, int]:
    """(columns, rows) of regions of `side` px that cover `level`."""
    w, h = described.level_dimensions[level]
    return max(1, math.ceil(w / side)), max(1, math.ceil(h / side))


def region_at(described: SlideInfo, level: int, side: int, col: int, row: int) -> Region:
    """The cell (col, row) of the grid of `side` px over `level`; edge cells are cut to the level."""
    if not 0 <= level < described.level_count:
        raise ValueError(f"level {level} does not exist; levels are 0..{described.level_count - 1}")
    cols, rows = region_grid(described, level, side)
    if not (0 <= col < cols and 0 <= row < rows):
        raise ValueError(f"cell ({col}, {row}) is outside the {cols}x{rows} grid of level {level}")
    w, h = described.level_dimensions[level]
    x, y = col * side, row * side
    return Region(level, x, y, min(side, w - x), min(side, h - y))


def level0_box(described: SlideInfo, region: Region) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a region in full-resolution pixels."""
    ds = described.level_downsamples[region.level]
    return round(region.x * ds), round(region.y * ds), round(region.w * ds), round(region.h * ds)


def region_caption(described: SlideInfo, region: Region) -> str:
    x, y, w, h = level0_box(described, region)
    return (
        f"Level {region.level}, x {region.x}-{region.x + region.w}, y {region.y}-{region.y + region.h} "
        f"({region.w}x{region.h} px; full resolution x {x}-{x + w}, y {y}-{y + h})"
    )


def read_region(slide: repo.Slide | SlideInfo, region: Region):
    """The region's RGB pixels (numpy array)."""
    return slide_info.read_region(slide.path, region.x, region.y, region.w, region.h, region.level)


def marked_overview(overview: Image.Image, described: SlideInfo, region: Region, side: int) -> Image.Image:
    """The overview with the region grid of the chosen level (when it is not too fine) and the region boxed."""
    out = overview.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    sx, sy = out.width / described.width, out.height / described.height
    ds = described.level_downsamples[region.level]
    cols, rows = region_grid(described, region.level, side)
    if max(cols, rows) <= GRID_LINES_UP_TO:
        for c in range(1, cols):
            x = round(c * side * ds * sx)
            draw.line([(x, 0), (x, out.height)], fill=GRID_COLOUR, width=1)
        for r in range(1, rows):
            y = round(r * side * ds * sy)
            draw.line([(0, y), (out.width, y)], fill=GRID_COLOUR, width=1)
    x, y, w, h = level0_box(described, region)
    box = [
        round(x * sx),
        round(y * sy),
        max(round(x * sx), round((x + w) * sx) - 1),
        max(round(y * sy), round((y + h) * sy) - 1),
    ]
    draw.rectangle(box, outline=BOX_COLOUR, width=max(1, min(out.size) // 150))
    return out


# ------------------------------------------------------------------------------------- download, removal


@dataclass(frozen=True)
class Download:
    """Whether the slide's TIFF is offered as a download, and if not, why (naming its path)."""

    path: Path
    size: int | None
    allowed: bool
    reason: str | None


def download(slide: repo.Slide, limit: int | None = None) -> Download:
    limit = MAX_DOWNLOAD_BYTES if limit is None else limit
    path = Path(slide.path)
    stamp = file_stamp(path)
    if stamp is None:
        return Download(path, None, False, f"the file {path} is missing")
    size = stamp[1]
    if size > limit:
        return Download(
            path,
            size,
            False,
            f"the file is {size / 2**20:.0f} MiB, more than the {limit / 2**20:.0f} MiB offered for download here; "
            f"copy it from the server: {path}",
        )
    return Download(path, size, True, None)


def tiff_bytes(slide: repo.Slide, limit: int | None = None) -> bytes:
    """The slide file's bytes, checked against the limit again at the moment of reading."""
    offer = download(slide, limit)
    if not offer.allowed:
        raise ValueError(offer.reason)
    return offer.path.read_bytes()


def download_name(slide: repo.Slide) -> str:
    return f"slide_{slide.id}{Path(slide.path).suffix or '.tif'}"


def product_file(slide: repo.Slide, home: str | Path | None = None) -> bool:
    """True when the slide's file is one the product wrote (under <data home>/slides/)."""
    folder = (Path(home) if home is not None else data_home()).resolve() / SLIDES_DIR
    return Path(slide.path).resolve().is_relative_to(folder)


def remove_slide(slide_id: int, home: str | Path | None = None) -> str:
    """Delete the row, then the product's own files of it; returns what was done, in words."""
    slide = repo.get_slide(slide_id)
    ours = product_file(slide, home)
    repo.delete_slide(slide_id)
    if not ours:
        return f"Removed slide #{slide.id} from the list; its file {slide.path} stays where it is."
    for path in (Path(slide.path), provenance_path(slide.path)):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # the row is gone; a stray file is harmless, so report it and go on
            return f"Removed slide #{slide.id} from the list; its file could not be deleted ({exc})."
    return f"Removed slide #{slide.id} and its file."


def can_change(role: str | None) -> bool:
    """Stitch, register and remove: researchers, and everyone in open mode (role None)."""
    return role in (None, "researcher")
