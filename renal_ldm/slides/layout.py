"""Per-region captions for a generated slide: which caption each part of the slide asks for.

A layout is a JSON file in one of two forms (coordinates in fractions of the slide, 0..1, unless
"units": "px", which are full-resolution pixels):

    {"default": "a lot of Tubuli",
     "regions": [{"caption": "a lot of Glomeruli", "box": [0, 0, 0.5, 1]},
                 {"levels": "Dilated Tubuli=high", "polygon": [[0.6, 0.1], [0.9, 0.2], [0.8, 0.9]]}]}

    {"labels": "regions.png", "captions": {"0": "a lot of Tubuli", "1": {"levels": "Glomeruli=high"}}}

A caption is given as text ("caption") or as class levels ("levels", the `sample --levels` syntax). Regions are
painted in order over the default, so a later region wins where two overlap; a label image (any size, path
relative to the JSON, values = region ids) is stretched over the slide with nearest-neighbour sampling. Every
part of the slide must get a caption: without a "default" an uncovered area is an error.

The slide sampler conditions every latent window on the caption most of its cells ask for
(`window_caption`); neighbouring windows overlap by half and are blended at every step, so regions meet
in a soft transition about half a window wide (64 px for a model trained at 128 px) rather than a hard edge.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from PIL import Image, UnidentifiedImageError

from renal_ldm.captions import levels_to_caption, parse_levels_spec

if TYPE_CHECKING:  # windows imports torch; reading a layout does not need it
    from renal_ldm.windows import Window

MAX_LAYOUT_BYTES = 2 * 2**20
"""A layout JSON larger than this is refused (a layout is a handful of regions, not data)."""
MAX_LABEL_PIXELS = 4096 * 4096
UNITS = ("fraction", "px")
_KEYS = {"default", "regions", "units", "labels", "captions"}
_REGION_KEYS = {"caption", "levels", "box", "polygon"}


@dataclass(frozen=True)
class Region:
    """One painted region: a polygon in fractions of the slide (a box is its four corners)."""

    caption: int  # index into SlideLayout.captions
    polygon: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class SlideLayout:
    """Captions and where on the slide each applies; see the module docstring."""

    captions: tuple[str, ...]
    default: int | None = 0
    regions: tuple[Region, ...] = ()
    labels: np.ndarray | None = field(default=None, compare=False)  # region ids -> caption indices, any size
    source: str | None = None

    def caption_map(self, height: int, width: int) -> np.ndarray:
        """(height, width) int array of caption indices over a canvas of that many cells."""
        if self.labels is not None:
            rows = (np.arange(height) * self.labels.shape[0]) // height
            cols = (np.arange(width) * self.labels.shape[1]) // width
            out = self.labels[rows[:, None], cols[None, :]].astype(np.int32)
        else:
            out = np.full((height, width), -1 if self.default is None else self.default, dtype=np.int32)
            ys, xs = np.mgrid[0:height, 0:width]
            xs, ys = (xs + 0.5) / width, (ys + 0.5) / height  # a cell belongs to a region that holds its centre
            for region in self.regions:
                polygon = shapely.Polygon(region.polygon)
                if not polygon.is_valid:
                    polygon = shapely.make_valid(polygon)
                out[shapely.contains_xy(polygon, xs, ys)] = region.caption
        uncovered = float((out < 0).mean())
        if uncovered > 0:
            raise ValueError(
                f"the layout{_named(self.source)} leaves {uncovered:.1%} of the slide without a caption; "
                'add a "default" caption or regions that cover it'
            )
        return out

    def window_caption(self, height: int, width: int) -> Callable[[Window], int]:
        """window -> the caption most of its cells ask for, over a canvas of height x width latent cells."""
        cells = self.caption_map(height, width)
        count = len(self.captions)

        def caption_of(window: Window) -> int:
            return int(np.bincount(cells[window.rows, window.cols].ravel(), minlength=count).argmax())

        return caption_of

    def to_dict(self) -> dict[str, Any]:
        """The layout as the slide's provenance records it."""
        return {
            "source": self.source,
            "captions": list(self.captions),
            "default": None if self.default is None else self.captions[self.default],
            "regions": [
                {"caption": self.captions[r.caption], "polygon": [list(p) for p in r.polygon]} for r in self.regions
            ],
            "label_image": self.labels is not None,
        }


def uniform_layout(caption: str) -> SlideLayout:
    """One caption for the whole slide."""
    return SlideLayout(captions=(caption,), default=0)


def load_layout(path: str | Path, width: int, height: int) -> SlideLayout:
    """The layout in the JSON file `path` for a slide of width x height px (for "units": "px")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no layout file {path}; expected a JSON file (see `renal-ldm sample-slide --help`)")
    if path.stat().st_size > MAX_LAYOUT_BYTES:
        raise ValueError(f"layout {path} is {path.stat().st_size} bytes; a layout JSON is at most {MAX_LAYOUT_BYTES}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"layout {path} is not valid JSON ({exc}); expected an object with regions or labels") from exc
    return parse_layout(data, width, height, base_dir=path.parent, source=str(path))


def parse_layout(
    data: Any, width: int, height: int, *, base_dir: str | Path = ".", source: str | None = None
) -> SlideLayout:
    """A SlideLayout from the decoded JSON `data`; a ValueError names the first bad value and what was expected."""
    where = _named(source)
    if not isinstance(data, dict):
        raise ValueError(f"layout{where} must be a JSON object; got {type(data).__name__}")
    unknown = set(data) - _KEYS
    if unknown:
        raise ValueError(f"layout{where} has unknown keys {sorted(unknown)}; expected some of {sorted(_KEYS)}")
    if "labels" in data:
        return _label_layout(data, Path(base_dir), source)
    units = data.get("units", "fraction")
    if units not in UNITS:
        raise ValueError(f"layout{where} units must be one of {', '.join(UNITS)}; got {units!r}")
    scale = (1.0 / width, 1.0 / height) if units == "px" else (1.0, 1.0)
    captions: list[str] = []
    default = None if data.get("default") is None else _caption_index(captions, data["default"], f"default{where}")
    regions_data = data.get("regions", [])
    if not isinstance(regions_data, list):
        raise ValueError(f"layout{where} regions must be a list; got {type(regions_data).__name__}")
    if default is None and not regions_data:
        raise ValueError(f'layout{where} names no caption; expected a "default" caption or "regions"')
    regions = []
    for i, item in enumerate(regions_data):
        label = f"region {i + 1}{where}"
        if not isinstance(item, dict):
            raise ValueError(f"{label} must be an object with a caption (or levels) and a box (or polygon)")
        unknown = set(item) - _REGION_KEYS
        if unknown:
            raise ValueError(f"{label} has unknown keys {sorted(unknown)}; expected some of {sorted(_REGION_KEYS)}")
        if ("caption" in item) == ("levels" in item):
            raise ValueError(f'{label} needs exactly one of "caption" and "levels"')
        caption = _caption_index(captions, item.get("caption", {"levels": item.get("levels")}), label)
        regions.append(Region(caption, _polygon(item, scale, label)))
    return SlideLayout(tuple(captions), default, tuple(regions), None, source)


def _label_layout(data: dict, base_dir: Path, source: str | None) -> SlideLayout:
    where = _named(source)
    extra = set(data) - {"labels", "captions", "default"}
    if extra:
        raise ValueError(f"a label-image layout{where} takes labels, captions and default; got also {sorted(extra)}")
    mapping = data.get("captions")
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f'layout{where} "captions" must map region ids to captions, e.g. {{"1": "a lot of Tubuli"}}')
    image_path = base_dir / str(data["labels"])
    try:
        with Image.open(image_path) as image:
            if image.width * image.height > MAX_LABEL_PIXELS:
                raise ValueError(
                    f"label image {image_path} is {image.width}x{image.height} px; at most {MAX_LABEL_PIXELS} pixels "
                    "(a layout needs no more detail than the sampler's windows)"
                )
            if image.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(
                    f"label image {image_path} is mode {image.mode}; expected a single-channel image of region ids "
                    "(L, P or I)"
                )
            ids = np.asarray(image).astype(np.int64)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"layout{where} names label image {image_path}, which does not exist") from exc
    except UnidentifiedImageError as exc:
        raise ValueError(f"label image {image_path} is not an image PIL can read") from exc
    captions: list[str] = []
    lookup: dict[int, int] = {}
    for key, value in mapping.items():
        try:
            region_id = int(key)
        except ValueError as exc:
            raise ValueError(f"layout{where} region id {key!r} is not an integer") from exc
        lookup[region_id] = _caption_index(captions, value, f"region {region_id}{where}")
    default = None if data.get("default") is None else _caption_index(captions, data["default"], f"default{where}")
    present = set(np.unique(ids).tolist())
    missing = sorted(present - set(lookup))
    if missing and default is None:
        raise ValueError(
            f"label image {image_path} holds region ids {missing} that the layout's captions do not name "
            f'(it names {sorted(lookup)}); add them or a "default"'
        )
    table = np.full(max(present | set(lookup)) + 1, -1 if default is None else default, dtype=np.int32)
    for region_id, index in lookup.items():
        if region_id >= 0:
            table[region_id] = index
    return SlideLayout(tuple(captions), default, (), table[ids], source)


def _caption_index(captions: list[str], value: Any, label: str) -> int:
    """The index of the caption `value` (text or {"levels": SPEC}) in `captions`, appending it if new."""
    if isinstance(value, dict) and set(value) == {"levels"} and isinstance(value["levels"], str):
        levels = parse_levels_spec(value["levels"])
        if not levels:
            raise ValueError(f"{label}: levels {value['levels']!r} name no class; expected e.g. Glomeruli=high")
        text = levels_to_caption(levels)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f'{label}: a caption is text or {{"levels": "Class=level,..."}}; got {value!r}')
    if text not in captions:
        captions.append(text)
    return captions.index(text)


def _polygon(item: dict, scale: tuple[float, float], label: str) -> tuple[tuple[float, float], ...]:
    if ("box" in item) == ("polygon" in item):
        raise ValueError(f'{label} needs exactly one of "box" [left, top, right, bottom] and "polygon" [[x, y], ...]')
    sx, sy = scale
    if "box" in item:
        box = item["box"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise ValueError(f"{label} box must be [left, top, right, bottom] numbers; got {box!r}")
        left, top, right, bottom = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        if not (left < right and top < bottom):
            raise ValueError(f"{label} box {box} is empty; expected left < right and top < bottom")
        points = ((left, top), (right, top), (right, bottom), (left, bottom))
    else:
        raw = item["polygon"]
        if not (isinstance(raw, list) and len(raw) >= 3 and all(_is_point(p) for p in raw)):
            raise ValueError(f"{label} polygon must be at least three [x, y] points; got {raw!r}")
        points = tuple((p[0] * sx, p[1] * sy) for p in raw)
    outside = [p for p in points if not (-1e-9 <= p[0] <= 1 + 1e-9 and -1e-9 <= p[1] <= 1 + 1e-9)]
    if outside:
        x, y = outside[0]
        raise ValueError(
            f"{label} reaches outside the slide at ({x / sx:g}, {y / sy:g}); coordinates are "
            + ("pixels within the slide" if sx != 1.0 else "fractions of the slide, 0 to 1")
        )
    return points


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _is_point(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)


def _named(source: str | None) -> str:
    return f" {source}" if source else ""
