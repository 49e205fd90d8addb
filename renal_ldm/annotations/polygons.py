"""Masks <-> polygons, in the slide's full-resolution pixel coordinates (QuPath's: pixel (col, row) is the unit
square [col, col + 1] x [row, row + 1]).

Guarantees (tests/renal_ldm/test_annotations.py):

- `mask_polygons` gives one shapely Polygon per 8-connected component of painted pixels, its holes (enclosed
  unpainted pixels) as interior rings; the boundary runs along the pixel edges, cutting each corner pixel
  diagonally (scikit-image's marching squares at level 0.5), so every painted pixel's centre lies inside and
  every unpainted pixel's centre outside: `rasterize(mask_polygons(m), box)` gives back `m` exactly.
- `rasterize` paints a pixel when its centre lies in the geometry (shapely); Polygon, MultiPolygon and
  collections of them are read, holes included; the parts outside the box are cut off.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from renal_ldm.annotations.masks import RegionBox


def mask_polygons(mask: np.ndarray, x0: int = 0, y0: int = 0) -> list[Polygon]:
    """The painted components of `mask` (whose top-left pixel is (x0, y0) of the slide) as polygons."""
    from skimage.measure import find_contours, label, regionprops

    labels = label(np.asarray(mask, dtype=bool), connectivity=2)
    out: list[Polygon] = []
    for component in regionprops(labels):
        r0, c0, r1, c1 = component.bbox
        alone = np.pad(labels[r0:r1, c0:c1] == component.label, 1).astype(np.uint8)
        rings = []
        for contour in find_contours(alone, 0.5, fully_connected="high"):
            # contour points are (row, col) in the padded crop, pixel centres at integers: move to slide corners
            xs = contour[:, 1] - 1 + c0 + x0 + 0.5
            ys = contour[:, 0] - 1 + r0 + y0 + 0.5
            ring = shapely.LinearRing(np.column_stack([xs, ys]))
            rings.append((Polygon(ring).area, ring))
        rings.sort(key=lambda item: item[0], reverse=True)
        shape = Polygon(rings[0][1], [ring for _, ring in rings[1:]])
        shape = shapely.simplify(shape, 0.0)  # drops the collinear points marching squares puts on straight edges
        if not shape.is_valid:
            shape = _polygonal(shapely.make_valid(shape))
        for part in _parts(shape):
            out.append(shapely.geometry.polygon.orient(part, 1.0))
    return out


def merged_polygons(polygons: list[Polygon]) -> list[Polygon]:
    """Polygons that touch or overlap (one glomerulus painted over two regions) merged into one."""
    if not polygons:
        return []
    return [shapely.geometry.polygon.orient(p, 1.0) for p in _parts(shapely.union_all(polygons))]


def rasterize(geometry: BaseGeometry | list[BaseGeometry], box: RegionBox) -> np.ndarray:
    """Bool mask of `box`: the pixels whose centre lies in the geometry (boundary included)."""
    geometries = geometry if isinstance(geometry, list) else [geometry]
    out = np.zeros(box.shape, dtype=bool)
    frame = shapely.box(*box.bounds)
    for geom in geometries:
        if geom is None or geom.is_empty or not geom.intersects(frame):
            continue
        minx, miny, maxx, maxy = geom.bounds
        c0, c1 = max(0, int(np.floor(minx - 0.5)) - box.x), min(box.w, int(np.ceil(maxx + 0.5)) - box.x)
        r0, r1 = max(0, int(np.floor(miny - 0.5)) - box.y), min(box.h, int(np.ceil(maxy + 0.5)) - box.y)
        if c1 <= c0 or r1 <= r0:
            continue
        cols, rows = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
        shapely.prepare(geom)
        inside = shapely.intersects_xy(geom, cols + box.x + 0.5, rows + box.y + 0.5)
        out[r0:r1, c0:c1] |= inside
    return out


def _parts(geom: BaseGeometry) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    if isinstance(geom, MultiPolygon):
        return [p for p in geom.geoms if not p.is_empty]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _parts(g)]
    return []


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    parts = _parts(geom)
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def polygonal_parts(geom: BaseGeometry) -> list[Polygon]:
    """The polygons of any geometry (lines and points of a repaired geometry are dropped)."""
    return _parts(geom)
