"""The Annotate page's use cases, without Streamlit: pick a slide, see which regions an annotator has done,
paint a region's mask with paint and erase strokes applied here (the canvas has no eraser), save it, compare
annotators, and move annotations out (patch-mask data set, QuPath GeoJSON) and in (GeoJSON). The
`renal-ldm annotations` commands call the same functions.

Guarantees (tests/app/test_annotate.py):

- Annotators are their sign-in account name where accounts are on, else the name typed on the page.
- A save writes the mask to a new product-named file under <data home>/annotations/slide_<id>/, then points
  this annotator's row at it in one short transaction (db.repository.annotations), then deletes the file the
  row named before. A save that fails leaves the earlier file and row as they were; another annotator's rows
  and files are never touched.
- A slide whose file has gone is refused by name (SlideGoneError) before anything is read or written.
- Region state for an annotator and class: "not started" (no row), "in progress" (saved), "done" (marked).
- Import checks the whole GeoJSON first (renal_ldm.annotations.geojson); then each touched region gets the
  union of what was saved there and what was imported, so an import never removes painting already saved.
"""

from __future__ import annotations

import io
import json
import secrets
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from db import repository as repo
from db.repository.annotations import check_author
from renal_ldm.annotations import agreement, geojson, polygons
from renal_ldm.annotations import export as export_lib
from renal_ldm.annotations.masks import (  # noqa: F401 - cell_of, grid_shape and REGION_SIDES are the page's too
    DEFAULT_REGION_SIDE,
    REGION_SIDES,
    RegionBox,
    cell_of,
    count_components,
    empty_mask,
    grid_shape,
    read_mask,
    region_at,
    write_mask,
)
from renal_ldm.annotations.strokes import PAINT, Strokes, stroke_pixels
from renal_ldm.classes import CAPTIONED_CLASSES, GLOMERULI_ID, by_id
from renal_ldm.paths import data_home, resolve_in_home
from renal_ldm.slides import info as slide_info

ANNOTATIONS_DIR = "annotations"
DEFAULT_CLASS_ID = GLOMERULI_ID
NOT_STARTED, IN_PROGRESS, DONE = "not started", "in progress", "done"
STATE_COLOURS = {IN_PROGRESS: (245, 170, 40), DONE: (40, 190, 70)}
CURRENT_COLOUR = (230, 30, 30)
OVERVIEW_SIDE = 768
MAX_EXPORT_ZIP_BYTES = 256 * 2**20
CLASS_CHOICES = tuple(c.id for c in CAPTIONED_CLASSES)


class SlideGoneError(ValueError):
    """The slide's file is missing: nothing can be painted or exported from it."""


# -------------------------------------------------------------------------------------------- who, which


def annotator_name(identity: Any, typed: str | None) -> str | None:
    """The signed-in account's name, else the typed name (stripped), else None."""
    if identity is not None:
        return identity.name
    text = (typed or "").strip()
    return check_author(text) if text else None


def slide_file(slide: repo.Slide) -> Path:
    """The slide's file, or SlideGoneError naming it."""
    path = Path(slide.path)
    if not path.is_file():
        raise SlideGoneError(
            f"slide #{slide.id} {slide.name!r}: its file {slide.path} has gone; saved annotations are kept, "
            "but nothing can be painted or exported until the file is back (or the slide registered again)"
        )
    return path


def cell_from_text(text: str | None) -> tuple[int, int] | None:
    """'col,row' (a page address) -> (col, row), None for anything else."""
    parts = (text or "").split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def editor_fits(editor: Editor | None, slide: repo.Slide, annotator: str, class_id: int, side: int) -> bool:
    """Whether the open region belongs to this slide, annotator, class and grid."""
    if editor is None or (editor.slide_id, editor.annotator, editor.class_id) != (slide.id, annotator, class_id):
        return False
    cell = cell_of(editor.box, side)
    cols, rows = grid_shape(slide.width, slide.height, side)
    return cell is not None and cell[0] < cols and cell[1] < rows and region(slide, side, *cell) == editor.box


def box_of(annotation: repo.Annotation) -> RegionBox:
    return RegionBox(annotation.x, annotation.y, annotation.w, annotation.h)


def region(slide: repo.Slide, side: int, col: int, row: int) -> RegionBox:
    return region_at(slide.width, slide.height, side, col, row)


def region_pixels(slide: repo.Slide, box: RegionBox) -> np.ndarray:
    """RGB (h, w, 3) of the region at full resolution."""
    slide_file(slide)
    return slide_info.read_region(slide.path, box.x, box.y, box.w, box.h, 0)


# ------------------------------------------------------------------------------------------ masks, saving


def _mask_file(annotation: repo.Annotation, home: Path | None = None) -> Path:
    return resolve_in_home(annotation.mask_path, home)


def load_mask(annotation: repo.Annotation | None, box: RegionBox) -> np.ndarray:
    """The saved mask (an empty one when there is no row)."""
    if annotation is None:
        return empty_mask(box)
    return read_mask(_mask_file(annotation), box)


def find(
    slide_id: int, annotator: str, class_id: int, box: RegionBox, *, url: str | None = None
) -> repo.Annotation | None:
    return repo.get_annotation(slide_id, annotator, class_id, (box.x, box.y, box.w, box.h), url=url)


def save_mask(
    slide: repo.Slide,
    annotator: str,
    class_id: int,
    box: RegionBox,
    mask: np.ndarray,
    *,
    done: bool | None = None,
    expected_revision: int | None = None,
    url: str | None = None,
) -> repo.Annotation:
    """Write the mask to a new file, point the row at it (one transaction), then delete the old file."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != box.shape:
        raise ValueError(f"a mask of shape {mask.shape} for a region of {box.w}x{box.h} px")
    by_id(class_id)
    home = data_home()
    relative = f"{ANNOTATIONS_DIR}/slide_{slide.id}/{secrets.token_hex(8)}.png"
    path = home / relative
    write_mask(path, mask)
    try:
        saved, previous = repo.save_annotation(
            slide_id=slide.id,
            author=annotator,
            class_id=class_id,
            box=(box.x, box.y, box.w, box.h),
            mask_path=relative,
            pixels=int(mask.sum()),
            components=count_components(mask),
            done=done,
            expected_revision=expected_revision,
            url=url,
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if previous:
        try:
            resolve_in_home(previous, home).unlink(missing_ok=True)
        except (OSError, ValueError):  # the row no longer names it: a stray file is harmless
            pass
    return saved


# ------------------------------------------------------------------------------------------------ editor


@dataclass
class Editor:
    """A region open for painting: the mask being edited (with undo), what was saved, and the canvas key."""

    slide_id: int
    annotator: str
    class_id: int
    box: RegionBox
    strokes: Strokes
    saved: np.ndarray
    revision: int | None
    done: bool
    canvas: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        return self.strokes.mask

    @property
    def dirty(self) -> bool:
        return not np.array_equal(self.strokes.mask, self.saved)

    @property
    def components(self) -> int:
        return count_components(self.mask)

    def same_place(self, slide_id: int, annotator: str, class_id: int, box: RegionBox) -> bool:
        return (self.slide_id, self.annotator, self.class_id, self.box) == (slide_id, annotator, class_id, box)


def open_editor(slide: repo.Slide, annotator: str, class_id: int, box: RegionBox) -> Editor:
    slide_file(slide)
    found = find(slide.id, annotator, class_id, box)
    mask = load_mask(found, box)
    return Editor(
        slide.id,
        annotator,
        class_id,
        box,
        Strokes(mask.copy()),
        mask,
        found.revision if found else None,
        bool(found and found.done),
    )


def apply_canvas(editor: Editor, image_data: np.ndarray | None, mode: str = PAINT) -> bool:
    """Apply what the canvas holds as one stroke; True when the mask changed (the page then clears the canvas)."""
    stroke = stroke_pixels(image_data, editor.box.shape)
    if stroke is None:
        return False
    before = editor.strokes.mask
    editor.strokes.stroke(stroke, mode)
    editor.canvas += 1
    return editor.strokes.mask is not before


def undo(editor: Editor) -> bool:
    changed = editor.strokes.undo()
    editor.canvas += 1
    return changed


def clear(editor: Editor) -> None:
    editor.strokes.clear()
    editor.canvas += 1


def save_editor(editor: Editor, slide: repo.Slide, *, done: bool | None = None) -> repo.Annotation:
    """Save the edited mask (also when unchanged, so a region can be marked done with nothing painted)."""
    saved = save_mask(
        slide,
        editor.annotator,
        editor.class_id,
        editor.box,
        editor.mask,
        done=done,
        expected_revision=editor.revision if editor.revision is not None else 0,
    )
    editor.saved, editor.revision, editor.done = editor.mask.copy(), saved.revision, saved.done
    return saved


def canvas_background(pixels: np.ndarray, mask: np.ndarray, class_id: int, opacity: float) -> Image.Image:
    """The region with the saved-and-edited mask tinted in the class colour: what the canvas shows."""
    return Image.fromarray(agreement.overlay(pixels, mask, by_id(class_id).color, opacity))


def stroke_colour(class_id: int, mode: str) -> str:
    """The brush colour on the canvas: the class colour while painting, white while erasing (translucent)."""
    r, g, b = by_id(class_id).color if mode == PAINT else (255, 255, 255)
    return f"rgba({r}, {g}, {b}, 0.6)"


# ------------------------------------------------------------------------------------------ grid, progress


def grid_annotations(
    slide: repo.Slide, annotator: str, class_id: int, side: int
) -> dict[tuple[int, int], repo.Annotation]:
    """(col, row) -> this annotator's row, for the cells of the grid of `side` px that have one."""
    cols, rows = grid_shape(slide.width, slide.height, side)
    out = {}
    for a in repo.list_annotations(slide.id, author=annotator, class_id=class_id):
        cell = cell_of(box_of(a), side)
        if cell is not None and cell[0] < cols and cell[1] < rows and region(slide, side, *cell) == box_of(a):
            out[cell] = a
    return out


def region_states(slide: repo.Slide, annotator: str, class_id: int, side: int) -> dict[tuple[int, int], str]:
    """(col, row) -> in progress / done; cells missing from the dict are not started."""
    saved = grid_annotations(slide, annotator, class_id, side)
    return {cell: DONE if a.done else IN_PROGRESS for cell, a in saved.items()}


@dataclass(frozen=True)
class Progress:
    regions: int
    done: int
    in_progress: int
    glomeruli_done: int
    glomeruli: int


def progress(slide: repo.Slide, annotator: str, class_id: int, side: int) -> Progress:
    """Regions of the grid done / in progress, and the components (glomeruli) painted in them."""
    cols, rows = grid_shape(slide.width, slide.height, side)
    saved = list(grid_annotations(slide, annotator, class_id, side).values())
    return Progress(
        regions=cols * rows,
        done=sum(1 for a in saved if a.done),
        in_progress=sum(1 for a in saved if not a.done),
        glomeruli_done=sum(a.components for a in saved if a.done),
        glomeruli=sum(a.components for a in saved),
    )


def next_unfinished(
    slide: repo.Slide, annotator: str, class_id: int, side: int, after: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """The first cell (row by row) after `after` that is not done, wrapping round; None when all are done."""
    cols, rows = grid_shape(slide.width, slide.height, side)
    states = region_states(slide, annotator, class_id, side)
    order = [(c, r) for r in range(rows) for c in range(cols)]
    start = order.index(after) + 1 if after in order else 0
    for cell in order[start:] + order[:start]:
        if states.get(cell) != DONE and cell != after:
            return cell
    return None


def grid_overview(
    overview: Image.Image,
    slide: repo.Slide,
    side: int,
    states: dict[tuple[int, int], str],
    current: tuple[int, int] | None = None,
) -> Image.Image:
    """The overview with the region grid, cells tinted by state (amber in progress, green done), current boxed."""
    base = overview.convert("RGB")
    tint = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(tint)
    sx, sy = base.width / slide.width, base.height / slide.height
    cols, rows = grid_shape(slide.width, slide.height, side)

    def rect(c: int, r: int) -> list[int]:
        box = region(slide, side, c, r)
        x0, y0 = round(box.x * sx), round(box.y * sy)
        return [x0, y0, max(x0, round((box.x + box.w) * sx) - 1), max(y0, round((box.y + box.h) * sy) - 1)]

    for cell, state in states.items():
        draw.rectangle(rect(*cell), fill=(*STATE_COLOURS[state], 110))
    out = Image.alpha_composite(base.convert("RGBA"), tint).convert("RGB")
    draw = ImageDraw.Draw(out)
    if max(cols, rows) <= 64:
        for c in range(1, cols):
            x = round(c * side * sx)
            draw.line([(x, 0), (x, out.height)], fill=(40, 40, 40), width=1)
        for r in range(1, rows):
            y = round(r * side * sy)
            draw.line([(0, y), (out.width, y)], fill=(40, 40, 40), width=1)
    if current is not None:
        draw.rectangle(rect(*current), outline=CURRENT_COLOUR, width=max(2, min(out.size) // 150))
    return out


# --------------------------------------------------------------------------------------------- agreement


@dataclass(frozen=True)
class RegionAgreement:
    box: RegionBox
    class_id: int
    pairs: list[agreement.PairAgreement]

    @property
    def mean_dice(self) -> float:
        return agreement.region_summary(self.pairs)[0]

    @property
    def mean_iou(self) -> float:
        return agreement.region_summary(self.pairs)[1]


def agreements(slide_id: int, class_id: int | None = None, *, url: str | None = None) -> list[RegionAgreement]:
    """Every region (and class) with masks of two or more annotators, with Dice and IoU of each pair."""
    groups: dict[tuple[RegionBox, int], dict[str, repo.Annotation]] = defaultdict(dict)
    for a in repo.list_annotations(slide_id, class_id=class_id, url=url):
        groups[(box_of(a), a.class_id)][a.author] = a
    out = []
    for (box, cid), rows in sorted(groups.items(), key=lambda kv: (kv[0][0].y, kv[0][0].x, kv[0][1])):
        if len(rows) < 2:
            continue
        masks = {name: load_mask(a, box) for name, a in rows.items()}
        out.append(RegionAgreement(box, cid, agreement.pairwise(masks)))
    return out


def agreement_rows(found: list[RegionAgreement]) -> list[dict[str, Any]]:
    """One row per pair of annotators per region (plain values for a table or JSON)."""
    rows = []
    for item in found:
        for p in item.pairs:
            rows.append(
                {
                    "region": item.box.label(),
                    "x": item.box.x,
                    "y": item.box.y,
                    "w": item.box.w,
                    "h": item.box.h,
                    "class": by_id(item.class_id).name,
                    "first": p.first,
                    "second": p.second,
                    "dice": round(p.dice, 4),
                    "iou": round(p.iou, 4),
                    "first pixels": p.first_pixels,
                    "second pixels": p.second_pixels,
                }
            )
    return rows


def region_rows(found: list[RegionAgreement]) -> list[dict[str, Any]]:
    """One row per region: annotators and the mean Dice and IoU over their pairs."""
    return [
        {
            "region": item.box.label(),
            "class": by_id(item.class_id).name,
            "annotators": len({n for p in item.pairs for n in (p.first, p.second)}),
            "mean dice": round(item.mean_dice, 4),
            "mean iou": round(item.mean_iou, 4),
        }
        for item in found
    ]


def disagreement_view(slide: repo.Slide, item: RegionAgreement, first: str, second: str) -> Image.Image:
    rows = {a.author: a for a in repo.list_annotations(slide.id, class_id=item.class_id) if box_of(a) == item.box}
    for name in (first, second):
        if name not in rows:
            raise ValueError(f"{name} has no mask of region {item.box.label()}")
    pixels = region_pixels(slide, item.box)
    a, b = load_mask(rows[first], item.box), load_mask(rows[second], item.box)
    return Image.fromarray(agreement.disagreement_image(pixels, a, b))


# ------------------------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class ExportResult:
    out: Path
    pairs: int
    regions: int
    leftover_regions: int
    features: int
    annotators: list[str]
    geojson: Path


def _selected(slide_id: int, annotator: str | None, include_unfinished: bool, url: str | None) -> list[repo.Annotation]:
    rows = repo.list_annotations(slide_id, author=annotator, url=url)
    if annotator is not None and not rows:
        raise ValueError(f"{annotator!r} has saved no mask on slide #{slide_id}")
    return [a for a in rows if a.done or include_unfinished]


def export_annotations(
    slide_id: int,
    out: str | Path,
    *,
    annotator: str | None = None,
    patch: int = export_lib.DEFAULT_PATCH,
    include_unfinished: bool = False,
    overwrite: bool = False,
    url: str | None = None,
) -> ExportResult:
    """Patch-mask pairs (data-set layout) and annotations.geojson of the slide's annotated regions."""
    slide = repo.get_slide(slide_id, url=url)
    slide_file(slide)
    rows = _selected(slide_id, annotator, include_unfinished, url)
    if not rows:
        which = "saved" if include_unfinished else "marked done"
        raise ValueError(
            f"slide #{slide_id} has no region {which}"
            + (f" by {annotator!r}" if annotator else "")
            + ("" if include_unfinished else "; mark regions done, or include unfinished ones")
        )
    if not any(a.w >= patch and a.h >= patch for a in rows):
        raise ValueError(
            f"no annotated region is at least {patch} x {patch} px, so no whole patch can be cut; "
            "choose a patch side no larger than the regions"
        )
    by_region: dict[tuple[RegionBox, str], dict[int, repo.Annotation]] = defaultdict(dict)
    for a in rows:
        by_region[(box_of(a), a.author)][a.class_id] = a

    def regions():
        for (box, author), classes in sorted(by_region.items(), key=lambda kv: (kv[0][0].y, kv[0][0].x, kv[0][1])):
            masks = {cid: load_mask(a, box) for cid, a in classes.items()}
            yield export_lib.AnnotatedRegion(box, author, region_pixels(slide, box), masks)

    out = Path(out).expanduser()
    summary = export_lib.write_dataset(out, regions(), slide_id=slide_id, patch=patch, overwrite=overwrite)
    collection, count = slide_geojson(slide, rows)
    target = out / geojson.EXPORT_FILE
    partial = out / f".{geojson.EXPORT_FILE}.partial"
    partial.write_text(geojson.dumps(collection), encoding="utf-8")
    partial.replace(target)
    return ExportResult(
        out, summary.pairs, summary.regions, summary.leftover_regions, count, sorted({a.author for a in rows}), target
    )


def slide_geojson(slide: repo.Slide, rows: list[repo.Annotation]) -> tuple[dict, int]:
    """The FeatureCollection of these rows: per annotator and class, the regions' polygons merged across region
    borders, one Feature per component."""
    shapes: dict[tuple[str, int], list] = defaultdict(list)
    for a in rows:
        box = box_of(a)
        shapes[(a.author, a.class_id)] += polygons.mask_polygons(load_mask(a, box), box.x, box.y)
    features = []
    for (author, cid), found in sorted(shapes.items()):
        for shape in polygons.merged_polygons(found):
            features.append(geojson.feature(shape, cid, author, slide=slide.id))
    return geojson.feature_collection(features), len(features)


def export_zip(slide_id: int, **kwargs: Any) -> tuple[bytes, ExportResult]:
    """The export as one zip (the page's download): images/, masks/, captions.jsonl, annotations.geojson."""
    with tempfile.TemporaryDirectory(prefix="renal-ldm-export-") as tmp:
        result = export_annotations(slide_id, Path(tmp) / "export", **kwargs)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(result.out.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(result.out).as_posix())
                    if buffer.tell() > MAX_EXPORT_ZIP_BYTES:
                        raise ValueError(
                            f"the export is larger than {MAX_EXPORT_ZIP_BYTES // 2**20} MiB; use "
                            f"`renal-ldm annotations export --slide {slide_id} --out DIR` on the server"
                        )
        return buffer.getvalue(), result


def export_name(slide_id: int) -> str:
    return f"slide_{slide_id}_annotations.zip"


# ------------------------------------------------------------------------------------------------ import


@dataclass(frozen=True)
class ImportResult:
    features: int
    regions: int
    pixels: int
    notes: list[str]


def import_geojson(
    slide_id: int,
    data: bytes | str,
    annotator: str,
    *,
    mapping: dict[str, str] | list[str] | None = None,
    side: int = DEFAULT_REGION_SIDE,
    source: str = "the GeoJSON file",
    url: str | None = None,
) -> ImportResult:
    """Read and check the whole file, then add its areas to this annotator's masks, region by region."""
    annotator = check_author(annotator)
    slide = repo.get_slide(slide_id, url=url)
    slide_file(slide)
    found = geojson.read_feature_collection(
        data, slide.width, slide.height, geojson.parse_mapping(mapping), source=source
    )
    if not found.shapes:
        raise geojson.GeoJSONError(f"{source} holds no polygon to import" + "".join(f"; {n}" for n in found.notes()))
    by_class: dict[int, list] = defaultdict(list)
    for shape in found.shapes:
        by_class[shape.class_id].append(shape.geometry)
    cols, rows = grid_shape(slide.width, slide.height, side)
    touched = pixels = 0
    for cid, shapes in sorted(by_class.items()):
        for r in range(rows):
            for c in range(cols):
                box = region(slide, side, c, r)
                painted = polygons.rasterize(shapes, box)
                if not painted.any():
                    continue
                existing = find(slide.id, annotator, cid, box, url=url)
                mask = load_mask(existing, box) | painted
                save_mask(
                    slide,
                    annotator,
                    cid,
                    box,
                    mask,
                    done=None if existing else True,
                    expected_revision=existing.revision if existing else 0,
                    url=url,
                )
                touched += 1
                pixels += int(painted.sum())
    return ImportResult(len(found.shapes), touched, pixels, found.notes())


def json_summary(result: ExportResult | ImportResult) -> str:
    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}, indent=2)
