"""Paint and erase strokes applied to a stored mask, with undo.

The browser canvas (streamlit-drawable-canvas) only paints; it has no eraser. So every stroke is sent to the
server as the pixels it covered, and applied there to the mask: a paint stroke sets them, an erase stroke
clears them. The overlay the annotator sees is then drawn again from the mask.

Guarantees (tests/renal_ldm/test_annotations.py):

- `apply_stroke` never changes its input mask; it returns a new one of the same shape.
- `stroke_pixels` reads a canvas image (H, W, 4): covered pixels are those with alpha > 0; a canvas of another
  size than the region is refused by name (canvas pixels are mask pixels, never resampled).
- `Strokes` keeps at most `limit` earlier masks; `undo` returns the mask before the last change, and
  nothing once the history is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAINT, ERASE = "paint", "erase"
MODES = (PAINT, ERASE)
UNDO_LIMIT = 30


def stroke_pixels(image_data: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The pixels a canvas image covers (bool, `shape`), or None when nothing is drawn."""
    if image_data is None:
        return None
    pixels = np.asarray(image_data)
    if pixels.ndim != 3 or pixels.shape[2] != 4:
        raise ValueError(f"a canvas image is (H, W, 4) RGBA; got shape {pixels.shape}")
    if pixels.shape[:2] != tuple(shape):
        raise ValueError(f"the canvas is {pixels.shape[1]}x{pixels.shape[0]} px; the region is {shape[1]}x{shape[0]}")
    covered = pixels[..., 3] > 0
    return covered if covered.any() else None


def apply_stroke(mask: np.ndarray, stroke: np.ndarray, mode: str) -> np.ndarray:
    """The mask after one stroke: paint sets the covered pixels, erase clears them."""
    if mode not in MODES:
        raise ValueError(f"stroke mode must be one of {', '.join(MODES)}; got {mode!r}")
    mask, stroke = np.asarray(mask, dtype=bool), np.asarray(stroke, dtype=bool)
    if mask.shape != stroke.shape:
        raise ValueError(f"a stroke of shape {stroke.shape} on a mask of shape {mask.shape}; expected the same")
    return mask | stroke if mode == PAINT else mask & ~stroke


@dataclass
class Strokes:
    """The mask being edited and the masks before each change (undo)."""

    mask: np.ndarray
    limit: int = UNDO_LIMIT
    history: list[np.ndarray] = field(default_factory=list)

    def change(self, new_mask: np.ndarray) -> None:
        new_mask = np.asarray(new_mask, dtype=bool)
        if np.array_equal(new_mask, self.mask):
            return
        self.history.append(self.mask)
        del self.history[: -self.limit]
        self.mask = new_mask

    def stroke(self, stroke: np.ndarray, mode: str) -> None:
        self.change(apply_stroke(self.mask, stroke, mode))

    def clear(self) -> None:
        self.change(np.zeros_like(self.mask))

    def undo(self) -> bool:
        """Back to the mask before the last change; False when there is nothing to undo."""
        if not self.history:
            return False
        self.mask = self.history.pop()
        return True
