"""QuPath GeoJSON: annotations out as a FeatureCollection, and back in as geometries of the product's classes.

Written (what QuPath's "Import objects" reads): a FeatureCollection in full-resolution pixel coordinates, one
Feature per painted component (one glomerulus), `id` a UUID, geometry a Polygon (a MultiPolygon only where a
repaired shape falls apart), holes as interior rings, properties `objectType: "annotation"`,
`classification: {"name", "color": [r, g, b]}` from renal_ldm.classes, and the annotator under `metadata`.

Read (guarantees, tests/renal_ldm/test_annotations.py): `read_feature_collection` checks everything before
anything is saved and raises one GeoJSONError (a ValueError) that says what is wrong:
- a file above MAX_GEOJSON_BYTES (checked before it is read), text that is not JSON, JSON that is not a
  FeatureCollection (a bare list of features, as QuPath 0.2 wrote, is named as such);
- a geometry that is not valid GeoJSON, or a feature with coordinates outside the slide (named, with the
  slide's size);
- classifications that are not classes of renal_ldm.classes: all of them listed with how many features each,
  and how to map them (`mapping`: their name -> a class name; features without one are "Unclassified").
Self-intersecting polygons are repaired (shapely.make_valid) and counted; points and lines are skipped and
counted, since only areas become masks.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import mapping as geo_mapping
from shapely.geometry import shape as geo_shape
from shapely.geometry.base import BaseGeometry

from renal_ldm.annotations.polygons import polygonal_parts
from renal_ldm.classes import CAPTIONED_CLASSES, by_id, by_name

MAX_GEOJSON_BYTES = 64 * 2**20
"""The largest GeoJSON file read (64 MiB: about a million polygon vertices)."""
UNCLASSIFIED = "Unclassified"
AREA_TYPES = ("Polygon", "MultiPolygon")
EXPORT_FILE = "annotations.geojson"


class GeoJSONError(ValueError):
    """A GeoJSON file that cannot be imported; the message says what is wrong and how to fix it."""


# ------------------------------------------------------------------------------------------------ writing


def feature(polygon: BaseGeometry, class_id: int, annotator: str | None = None, **metadata: Any) -> dict:
    """One QuPath annotation Feature."""
    tissue = by_id(class_id)
    properties: dict[str, Any] = {
        "objectType": "annotation",
        "classification": {"name": tissue.name, "color": list(tissue.color)},
    }
    meta = {k: str(v) for k, v in {"annotator": annotator, **metadata}.items() if v is not None}
    if meta:
        properties["metadata"] = meta
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geo_mapping(polygon), "properties": properties}


def feature_collection(features: list[dict]) -> dict:
    return {"type": "FeatureCollection", "features": features}


def dumps(collection: dict) -> str:
    return json.dumps(collection, separators=(",", ":")) + "\n"


# ------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class ImportedShape:
    """One area of the file: its product class and its geometry (Polygon or MultiPolygon, valid)."""

    class_id: int
    geometry: BaseGeometry
    index: int


@dataclass(frozen=True)
class ReadResult:
    shapes: list[ImportedShape]
    repaired: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def notes(self) -> list[str]:
        out = []
        if self.repaired:
            out.append(f"{self.repaired} self-intersecting or otherwise invalid polygon(s) were repaired")
        for kind, n in sorted(self.skipped.items()):
            out.append(f"{n} feature(s) with {kind} geometry were skipped (only areas become masks)")
        return out


def parse_mapping(items: list[str] | dict[str, str] | None) -> dict[str, str]:
    """'Their name=Product class' pairs (or a dict) -> {their name (lower case): product class name}."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else [_split_pair(text) for text in items]
    out = {}
    for theirs, ours in pairs:
        out[" ".join(theirs.split()).lower()] = by_name(ours).name
    return out


def _split_pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise GeoJSONError(f"class mapping {text!r} must be THEIR_NAME=CLASS, such as 'Glomerulus=Glomeruli'")
    theirs, ours = text.rsplit("=", 1)
    if not theirs.strip():
        raise GeoJSONError(f"class mapping {text!r} has no name before '='")
    return theirs.strip(), ours.strip()


def read_file(path: str | os.PathLike, width: int, height: int, mapping: dict[str, str] | None = None) -> ReadResult:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GeoJSON file {path} does not exist")
    size = path.stat().st_size
    check_size(size, str(path))
    return read_feature_collection(path.read_bytes(), width, height, mapping, source=str(path))


def check_size(size: int, source: str = "the GeoJSON file") -> None:
    if size > MAX_GEOJSON_BYTES:
        raise GeoJSONError(
            f"{source} is {size / 2**20:.1f} MiB; at most {MAX_GEOJSON_BYTES // 2**20} MiB of GeoJSON are read "
            "at once: export fewer objects per file (one file per image region or class)"
        )


def read_feature_collection(
    data: bytes | str,
    width: int,
    height: int,
    mapping: dict[str, str] | None = None,
    *,
    source: str = "the GeoJSON file",
) -> ReadResult:
    """The areas of a FeatureCollection on a width x height slide, all checked (see the module's guarantees)."""
    check_size(len(data), source)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise GeoJSONError(f"{source} is not JSON ({exc})") from None
    if isinstance(doc, list):
        raise GeoJSONError(
            f"{source} is a JSON list, not a GeoJSON FeatureCollection; in QuPath export with "
            '\'Export as FeatureCollection\' ticked (or wrap the list as {{"type": "FeatureCollection", '
            '"features": [...]})'
        )
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise GeoJSONError(
            f"{source} is not a GeoJSON FeatureCollection (its type is {kind!r}); expected "
            '{"type": "FeatureCollection", "features": [...]}, as QuPath exports'
        )
    features = doc.get("features")
    if not isinstance(features, list):
        raise GeoJSONError(f"{source}: 'features' must be a list of Features; got {type(features).__name__}")
    mapping = {" ".join(k.split()).lower(): v for k, v in (mapping or {}).items()}
    shapes: list[ImportedShape] = []
    unknown: Counter[str] = Counter()
    outside: list[str] = []
    skipped: Counter[str] = Counter()
    repaired = 0
    for index, item in enumerate(features):
        if not isinstance(item, dict) or item.get("type") != "Feature":
            raise GeoJSONError(f"{source}: features[{index}] is not a GeoJSON Feature")
        raw = item.get("geometry")
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind not in AREA_TYPES:
            skipped[str(kind)] += 1
            continue
        try:
            geom = geo_shape(raw)
        except Exception as exc:  # shapely raises several types for malformed coordinates
            raise GeoJSONError(f"{source}: features[{index}] has a malformed {kind} ({exc})") from None
        if geom.is_empty:
            skipped["empty " + kind] += 1
            continue
        minx, miny, maxx, maxy = geom.bounds
        if not all(math.isfinite(v) for v in geom.bounds):
            raise GeoJSONError(f"{source}: features[{index}] has coordinates that are not finite numbers")
        if minx < 0 or miny < 0 or maxx > width or maxy > height:
            outside.append(f"features[{index}] spans x {minx:g}..{maxx:g}, y {miny:g}..{maxy:g}")
            continue
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
            repaired += 1
            parts = polygonal_parts(geom)
            if not parts:
                skipped["degenerate " + kind] += 1
                continue
            geom = shapely.MultiPolygon(parts) if len(parts) > 1 else parts[0]
        name = _class_name(item.get("properties"))
        class_id = _class_id(name, mapping)
        if class_id is None:
            unknown[name] += 1
            continue
        shapes.append(ImportedShape(class_id, geom, index))
    if outside:
        more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
        raise GeoJSONError(
            f"{source}: {len(outside)} feature(s) lie outside the slide, which is {width}x{height} px at full "
            f"resolution: {'; '.join(outside[:5])}{more}. Expected full-resolution pixel coordinates of this "
            "slide (export from QuPath with this slide open); nothing was imported"
        )
    if unknown:
        listed = ", ".join(f"{name!r} ({n} feature{'s' if n > 1 else ''})" for name, n in sorted(unknown.items()))
        example = next(iter(sorted(unknown)))
        raise GeoJSONError(
            f"{source}: unknown classification(s): {listed}. The classes are "
            f"{', '.join(repr(c.name) for c in CAPTIONED_CLASSES)}; map each to one of them, such as "
            f"{example}=Glomeruli (--map on the command line, the mapping fields on the page); nothing was imported"
        )
    return ReadResult(shapes, repaired, dict(skipped))


def _class_name(properties: object) -> str:
    if not isinstance(properties, dict):
        return UNCLASSIFIED
    value = properties.get("classification")
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str) or not value.strip():
        return UNCLASSIFIED
    return " ".join(value.split())


def _class_id(name: str, mapping: dict[str, str]) -> int | None:
    target = mapping.get(name.lower())
    if target is not None:
        return by_name(target).id
    try:
        found = by_name(name)
    except ValueError:
        return None
    return None if found.id == 0 else found.id
