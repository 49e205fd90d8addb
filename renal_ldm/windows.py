"""Overlapping windows over a 2-D canvas and the weights that blend them (MultiDiffusion, Bar-Tal et al. 2023).

A model trained on W x W latents denoises a larger latent as overlapping W x W windows whose predictions are
averaged at every step; the VQ decoder likewise decodes overlapping tiles. The blend weights taper towards a
window's edges, where a convolution sees zero padding instead of tissue, so the seams and the frame that padding
leaves at a window's border are outweighed by the neighbouring windows' centres. At the canvas border every
window covering a pixel is tapered alike and the normalisation divides the taper out.

Used by renal_ldm.sample (any output size from one training size) and by the synthetic-slide stitcher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EDGE_WEIGHT = 0.05
"""Weight of a window's outermost row and column, relative to its centre (never 0, so every pixel is covered)."""


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` cells every `stride` cells covering 0..length; the last window is
    moved back to end exactly at length. A length no larger than the window gives one window at 0."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1; got window {window}, stride {stride}")
    if stride > window:
        raise ValueError(f"stride {stride} is larger than the window {window}: cells between windows would be missed")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@dataclass(frozen=True)
class Window:
    """One window: rows top..top+size and columns left..left+size of the canvas."""

    top: int
    left: int
    size: int

    @property
    def rows(self) -> slice:
        return slice(self.top, self.top + self.size)

    @property
    def cols(self) -> slice:
        return slice(self.left, self.left + self.size)


def grid(height: int, width: int, window: int, stride: int) -> list[Window]:
    """Row-major windows of side min(window, height, width) covering a height x width canvas."""
    side = min(window, height, width)
    return [
        Window(top, left, side)
        for top in window_starts(height, side, stride)
        for left in window_starts(width, side, stride)
    ]


def overlapping(height: int, width: int, window: int) -> tuple[list[Window], int]:
    """The windows the samplers use over a height x width canvas: side min(window, height, width), one every
    half side (every cell in up to four windows); returns them and the overlap between neighbours."""
    side = min(window, height, width)
    stride = max(1, side // 2)
    return grid(height, width, window, stride), side - stride


def taper(size: int, overlap: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """(size, size) blend weights: 1 in the middle, falling linearly to EDGE_WEIGHT over `overlap` cells at each
    edge (overlap 0: uniform, MultiDiffusion's plain average)."""
    ramp = torch.ones(size, dtype=dtype, device=device)
    overlap = min(overlap, size // 2)
    if overlap > 0:
        edge = torch.linspace(EDGE_WEIGHT, 1.0, overlap + 1, dtype=dtype, device=device)[:-1]
        ramp[:overlap] = edge
        ramp[size - overlap :] = edge.flip(0)
    return ramp[:, None] * ramp[None, :]


class Blender:
    """Accumulates weighted window values onto a (B, C, H, W) canvas and returns their weighted average."""

    def __init__(self, shape: tuple[int, ...], weights: torch.Tensor, *, dtype, device) -> None:
        self.sum = torch.zeros(shape, dtype=dtype, device=device)
        self.norm = torch.zeros(shape[-2:], dtype=dtype, device=device)
        self.weights = weights.to(dtype=dtype, device=device)

    def add(self, window: Window, values: torch.Tensor) -> None:
        """values: (B, C, size, size), the window's values for every image of the canvas."""
        self.sum[..., window.rows, window.cols] += values * self.weights
        self.norm[window.rows, window.cols] += self.weights

    def result(self) -> torch.Tensor:
        return self.sum / self.norm
