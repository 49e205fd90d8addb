"""Contact sheets: rows of image tiles in one PNG, optionally with a palette mask overlay and labels.

Used to eyeball data (`dataset_contact_sheet`: a patch data set's pairs with their masks) and to compare rows
of phantom and generated patches. Generic on purpose: rows may be ragged, tiles may be None (left blank), each
row may carry a label on its left, each tile a short label above it, and masks are blended in the class
colours of `renal_ldm.classes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from renal_ldm.captions import level_for_fraction
from renal_ldm.classes import BACKGROUND_ID, CAPTIONED_CLASSES
from renal_ldm.data.layout import image_path, mask_path, read_captions
from renal_ldm.data.masks import labels_to_rgb

Segment = tuple[str, tuple[int, int, int]]
"""A piece of label text in a colour; a tile label is a string or a list of segments."""

_LABEL_BAR = (40, 40, 40)
_LABEL_TEXT = (235, 235, 235)
_SHEET_BACKGROUND = (255, 255, 255)


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.4, outline: bool = True) -> np.ndarray:
    """The image with tissue classes tinted in their palette colours (background left untouched).

    outline draws class borders fully opaque, so thin structures stay visible under a light tint.
    """
    rgb = _as_rgb(image)
    labels = np.asarray(mask)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {labels.shape} does not match image shape {rgb.shape[:2]}")
    colours = labels_to_rgb(labels).astype(np.float32)
    tinted = labels != BACKGROUND_ID
    out = rgb.astype(np.float32)
    out[tinted] = (1 - alpha) * out[tinted] + alpha * colours[tinted]
    if outline:
        edge = _borders(labels) & tinted
        out[edge] = colours[edge]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray | None]],
    *,
    masks: Sequence[Sequence[np.ndarray | None]] | None = None,
    row_labels: Sequence[str] | None = None,
    tile_labels: Sequence[Sequence[str | list[Segment] | None]] | None = None,
    alpha: float = 0.4,
    tile_size: int | None = None,
    gap: int = 4,
    font_size: int = 12,
    legend: bool | None = None,
) -> Image.Image:
    """A grid image: one line per row, tiles left to right.

    masks: same nesting as rows; a mask is blended over its tile (overlay_mask). tile_size: side of the square
    cell each tile is fitted into, aspect kept (default: the first tile's longer side). legend: class colour
    key at the bottom (default: on when any mask is given).
    """
    if not rows or not any(len(r) for r in rows):
        raise ValueError("a contact sheet needs at least one tile")
    font = _font(font_size)
    size = tile_size or _first_size(rows)
    tiles = [[_tile(rows, masks, i, j, size, alpha) for j in range(len(row))] for i, row in enumerate(rows)]
    has_tile_labels = tile_labels is not None and any(any(t for t in r) for r in tile_labels)
    bar = font_size + 6 if has_tile_labels else 0
    left = _text_width(font, row_labels) + 2 * gap if row_labels else 0
    columns = max(len(r) for r in rows)
    width = left + columns * (size + gap) + gap
    row_height = bar + size + gap
    legend_on = legend if legend is not None else masks is not None
    legend_height = (font_size + 8) * _legend_lines(font, width - 2 * gap) if legend_on else 0
    height = gap + len(rows) * row_height + legend_height

    sheet = Image.new("RGB", (width, height), _SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(tiles):
        top = gap + i * row_height
        if row_labels and i < len(row_labels) and row_labels[i]:
            draw.text((gap, top + bar + size // 2), str(row_labels[i]), fill=(0, 0, 0), font=font, anchor="lm")
        for j, tile in enumerate(row):
            x = left + gap + j * (size + gap)
            if tile is not None:  # centred in its square cell
                dy, dx = (size - tile.shape[0]) // 2, (size - tile.shape[1]) // 2
                sheet.paste(Image.fromarray(tile), (x + dx, top + bar + dy))
            label = tile_labels[i][j] if has_tile_labels and i < len(tile_labels) and j < len(tile_labels[i]) else None
            if label:
                draw.rectangle((x, top, x + size - 1, top + bar - 1), fill=_LABEL_BAR)
                _draw_segments(draw, (x + 3, top + bar // 2), label, font, x + size - 3)
    if legend_on:
        _draw_legend(draw, font, gap, gap + len(rows) * row_height, width - 2 * gap, font_size)
    return sheet


def save_contact_sheet(path: str | Path, rows, *, colors: int | None = None, **kwargs) -> Path:
    """Write contact_sheet(rows, **kwargs) as PNG; colors quantises to a palette of that many colours (smaller)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"contact sheet path must end in .png; got {path}")
    sheet = contact_sheet(rows, **kwargs)
    if colors:
        sheet = sheet.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


def chunk(items: Sequence, per_row: int) -> list[list]:
    """A flat list cut into rows of `per_row` (the last one may be shorter)."""
    if per_row < 1:
        raise ValueError(f"per_row must be at least 1; got {per_row}")
    return [list(items[i : i + per_row]) for i in range(0, len(items), per_row)]


def dataset_contact_sheet(
    root: str | Path,
    path: str | Path,
    count: int = 16,
    per_row: int = 4,
    tile_size: int | None = 192,
    colors: int | None = 256,
) -> Path:
    """PNG of the first `count` pairs of a data set: each image beside its mask overlay, levels on top.

    The overlay tile's label gives each present class's level initial (L/M/H) in the class colour; the legend
    at the bottom names the colours. Quantising to `colors` keeps the file small enough for docs.
    """
    records = read_captions(root)[:count]
    rows, masks, labels = [], [], []
    for record in records:
        image = np.asarray(Image.open(image_path(root, record["file"])).convert("RGB"))
        mask = np.asarray(Image.open(mask_path(root, record["file"])))
        levels = [
            (level_for_fraction(record["fractions"][c.name])[0].upper() + " ", c.color)
            for c in CAPTIONED_CLASSES
            if record["fractions"].get(c.name, 0) > 0
        ]
        rows += [image, image]
        masks += [None, mask]
        labels += [Path(record["file"]).stem, levels]
    return save_contact_sheet(
        path,
        chunk(rows, 2 * per_row),
        masks=chunk(masks, 2 * per_row),
        tile_labels=chunk(labels, 2 * per_row),
        tile_size=tile_size,
        colors=colors,
        legend=True,
    )


def _as_rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image; got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels; got {arr.dtype}")
    return arr[..., :3]


def _borders(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def _first_size(rows) -> int:
    for row in rows:
        for tile in row:
            if tile is not None:
                return int(max(np.asarray(tile).shape[:2]))
    raise ValueError("a contact sheet needs at least one tile that is not None")


def _tile(rows, masks, i: int, j: int, size: int, alpha: float) -> np.ndarray | None:
    """Tile (i, j) as RGB fitted into a size x size cell, mask blended in when given."""
    image = rows[i][j]
    if image is None:
        return None
    rgb = _as_rgb(image)
    mask = masks[i][j] if masks is not None and i < len(masks) and j < len(masks[i]) else None
    if mask is not None:
        rgb = overlay_mask(rgb, mask, alpha)
    h, w = rgb.shape[:2]
    if max(h, w) != size:  # fit the longer side, keep the aspect ratio
        scale = size / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS))
    return rgb


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text_width(font, texts) -> int:
    return max((int(font.getlength(str(t))) for t in texts if t), default=0)


def _draw_segments(draw, origin, label, font, right: int) -> None:
    """A tile label: plain text, or coloured segments side by side, clipped at the tile's right edge."""
    segments = [(label, _LABEL_TEXT)] if isinstance(label, str) else label
    x, y = origin
    for text, colour in segments:
        if x >= right:
            break
        draw.text((x, y), text, fill=tuple(colour), font=font, anchor="lm")
        x += int(font.getlength(text))


def _legend_entries() -> list[tuple[str, tuple[int, int, int]]]:
    return [(c.name, c.color) for c in CAPTIONED_CLASSES]


def _legend_lines(font, width: int) -> int:
    lines, x = 1, 0
    for name, _ in _legend_entries():
        w = int(font.getlength(name)) + 28
        if x and x + w > width:
            lines, x = lines + 1, 0
        x += w
    return lines


def _draw_legend(draw, font, left: int, top: int, width: int, font_size: int) -> None:
    """Class colour key: a swatch and the class name for every captioned class."""
    x, y = left, top + 4
    for name, colour in _legend_entries():
        w = int(font.getlength(name)) + 28
        if x > left and x + w > left + width:
            x, y = left, y + font_size + 8
        draw.rectangle((x, y, x + font_size, y + font_size), fill=colour, outline=(0, 0, 0))
        draw.text((x + font_size + 4, y + font_size // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
        x += w
