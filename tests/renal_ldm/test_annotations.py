"""renal_ldm.annotations: regions and mask files, strokes with undo, masks <-> polygons, QuPath GeoJSON in and
out (every bad input one GeoJSONError), agreement, and the patch data set of annotated regions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely

from renal_ldm.annotations import agreement, geojson
from renal_ldm.annotations.export import AnnotatedRegion, label_mask, write_dataset
from renal_ldm.annotations.masks import RegionBox, count_components, read_mask, region_grid, write_mask
from renal_ldm.annotations.polygons import mask_polygons, merged_polygons, rasterize
from renal_ldm.annotations.strokes import ERASE, PAINT, Strokes, apply_stroke, stroke_pixels
from renal_ldm.classes import GLOMERULI_ID, OTHER_TISSUE_ID
from renal_ldm.data.layout import read_captions


def blobs(shape=(96, 128), seed=0) -> np.ndarray:
    """Glomerulus-like discs, one with a hole, and a ragged random component."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = (yy - 30) ** 2 + (xx - 30) ** 2 < 20**2
    m &= ~((yy - 30) ** 2 + (xx - 30) ** 2 < 6**2)
    m |= (yy - 70) ** 2 + (xx - 95) ** 2 < 14**2
    rng = np.random.default_rng(seed)
    m[60:90, 10:50] |= rng.random((30, 40)) > 0.45
    return m


def test_region_grid_covers_every_pixel_once():
    cover = np.zeros((150, 200), dtype=int)
    for box in region_grid(200, 150, 64):
        cover[box.y : box.y + box.h, box.x : box.x + box.w] += 1
    assert (cover == 1).all()
    assert region_grid(200, 150, 64)[-1] == RegionBox(192, 128, 8, 22)


def test_mask_files_round_trip_and_damage_is_named(tmp_path):
    box, m = RegionBox(0, 0, 128, 96), blobs()
    write_mask(tmp_path / "m.png", m)
    assert (read_mask(tmp_path / "m.png", box) == m).all()
    assert list(tmp_path.iterdir()) == [tmp_path / "m.png"]
    with pytest.raises(ValueError, match="is 128x96 px; its region is 64x64"):
        read_mask(tmp_path / "m.png", RegionBox(0, 0, 64, 64))
    (tmp_path / "bad.png").write_text("no png")
    with pytest.raises(ValueError, match="not a readable PNG"):
        read_mask(tmp_path / "bad.png", box)


def test_strokes_paint_erase_and_undo():
    mask = np.zeros((8, 8), bool)
    stroke = np.zeros((8, 8), bool)
    stroke[2:6, 2:6] = True
    painted = apply_stroke(mask, stroke, PAINT)
    assert painted.sum() == 16 and mask.sum() == 0
    eraser = np.zeros((8, 8), bool)
    eraser[2:6, 2:4] = True
    assert apply_stroke(painted, eraser, ERASE).sum() == 8
    edit = Strokes(mask)
    edit.stroke(stroke, PAINT)
    edit.stroke(eraser, ERASE)
    assert edit.mask.sum() == 8
    assert edit.undo() and edit.mask.sum() == 16
    edit.clear()
    assert edit.mask.sum() == 0 and edit.undo() and edit.mask.sum() == 16
    assert edit.undo() and not edit.mask.any() and not edit.undo()
    canvas = np.zeros((8, 8, 4), np.uint8)
    assert stroke_pixels(canvas, (8, 8)) is None
    canvas[1, 1, 3] = 40
    assert stroke_pixels(canvas, (8, 8)).sum() == 1
    with pytest.raises(ValueError, match="the canvas is 8x8 px; the region is 9x8"):
        stroke_pixels(canvas, (8, 9))


def test_polygons_give_the_mask_back_exactly_with_holes():
    m = blobs()
    shapes = mask_polygons(m, 1000, 2000)
    assert len(shapes) == count_components(m) >= 3
    assert all(s.is_valid for s in shapes) and any(len(s.interiors) >= 1 for s in shapes)
    assert (rasterize(shapes, RegionBox(1000, 2000, 128, 96)) == m).all()
    # a component cut by a region border merges back into one polygon
    disc = blobs()[:60, :60]
    left, right = mask_polygons(disc[:, :30], 0, 0), mask_polygons(disc[:, 30:], 30, 0)
    (whole,) = merged_polygons(left + right)
    assert len(left) == len(right) == 1 and len(whole.interiors) == 1


def _features(m: np.ndarray, x0=0, y0=0) -> dict:
    return geojson.feature_collection([geojson.feature(p, GLOMERULI_ID, "ann") for p in mask_polygons(m, x0, y0)])


def test_geojson_export_then_import_gives_the_masks_back():
    m = blobs()
    text = geojson.dumps(_features(m, 64, 32))
    doc = json.loads(text)
    f = doc["features"][0]
    assert doc["type"] == "FeatureCollection" and len(f["id"]) == 36
    assert f["properties"]["objectType"] == "annotation"
    assert f["properties"]["classification"] == {"name": "Glomeruli", "color": [60, 180, 75]}
    assert f["geometry"]["type"] == "Polygon"
    read = geojson.read_feature_collection(text, 256, 256)
    back = rasterize([s.geometry for s in read.shapes], RegionBox(64, 32, 128, 96))
    assert {s.class_id for s in read.shapes} == {GLOMERULI_ID}
    assert agreement.iou(back, m) >= 0.95 and agreement.iou(back, m) == 1.0


def test_a_hand_made_qupath_file_with_a_multipolygon_and_a_hole_imports():
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "2f0e1c8e-0000-4000-8000-000000000001",
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [
                        [
                            [[10, 10], [30, 10], [30, 30], [10, 30], [10, 10]],
                            [[15, 15], [25, 15], [25, 25], [15, 25], [15, 15]],
                        ],
                        [[[40, 40], [50, 40], [50, 50], [40, 50], [40, 40]]],
                    ],
                },
                "properties": {"objectType": "annotation", "classification": {"name": "glomeruli", "colorRGB": -1}},
            }
        ],
    }
    read = geojson.read_feature_collection(json.dumps(doc), 64, 64)
    mask = rasterize([s.geometry for s in read.shapes], RegionBox(0, 0, 64, 64))
    expected = np.zeros((64, 64), bool)
    expected[10:30, 10:30] = True
    expected[15:25, 15:25] = False
    expected[40:50, 40:50] = True
    assert (mask == expected).all() and count_components(mask) == 2


def _one(geometry, name="Glomeruli") -> str:
    return json.dumps(
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": geometry, "properties": {"classification": {"name": name}}}],
        }
    )


SQUARE = {"type": "Polygon", "coordinates": [[[1, 1], [9, 1], [9, 9], [1, 9], [1, 1]]]}


def test_bad_geojson_is_one_clear_message_each():
    with pytest.raises(geojson.GeoJSONError, match="not a GeoJSON FeatureCollection .* type is 'Feature'"):
        geojson.read_feature_collection(json.dumps({"type": "Feature"}), 64, 64)
    with pytest.raises(geojson.GeoJSONError, match="is a JSON list"):
        geojson.read_feature_collection("[]", 64, 64)
    with pytest.raises(geojson.GeoJSONError, match="is not JSON"):
        geojson.read_feature_collection("{nope", 64, 64)
    with pytest.raises(geojson.GeoJSONError, match="1 feature.* outside the slide, which is 8x8 px"):
        geojson.read_feature_collection(_one(SQUARE), 8, 8)
    with pytest.raises(geojson.GeoJSONError, match=r"unknown classification\(s\): 'Glomerulus' \(1 feature\)"):
        geojson.read_feature_collection(_one(SQUARE, "Glomerulus"), 64, 64)
    mapped = geojson.read_feature_collection(
        _one(SQUARE, "Glomerulus"), 64, 64, geojson.parse_mapping(["Glomerulus=Glomeruli"])
    )
    assert [s.class_id for s in mapped.shapes] == [GLOMERULI_ID]
    with pytest.raises(ValueError, match="unknown tissue class name 'Glomerul'"):
        geojson.parse_mapping(["Glomerulus=Glomerul"])
    with pytest.raises(geojson.GeoJSONError, match="MiB of GeoJSON"):
        geojson.check_size(geojson.MAX_GEOJSON_BYTES + 1)


def test_a_self_intersecting_polygon_is_repaired():
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [20, 20], [20, 0], [0, 20], [0, 0]]]}
    read = geojson.read_feature_collection(_one(bowtie), 64, 64)
    assert read.repaired == 1 and read.shapes[0].geometry.is_valid
    assert "repaired" in read.notes()[0]
    assert rasterize([read.shapes[0].geometry], RegionBox(0, 0, 32, 32)).sum() > 150
    points = geojson.read_feature_collection(_one({"type": "Point", "coordinates": [1, 1]}), 64, 64)
    assert points.shapes == [] and points.skipped == {"Point": 1}


def test_agreement_dice_iou_and_disagreement_colours():
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert agreement.dice(a, b) == pytest.approx(0.5) and agreement.iou(a, b) == pytest.approx(1 / 3)
    assert agreement.dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    (pair,) = agreement.pairwise({"zoe": b, "amy": a})
    assert (pair.first, pair.second, pair.first_pixels) == ("amy", "zoe", 8)
    view = agreement.disagreement_image(np.full((4, 4, 3), 255, np.uint8), a, b, opacity=1.0)
    assert tuple(view[0, 0]) == agreement.ONLY_FIRST and tuple(view[1, 0]) == agreement.BOTH
    assert tuple(view[2, 0]) == agreement.ONLY_SECOND and tuple(view[3, 0]) == (255, 255, 255)


def test_export_writes_whole_patches_in_the_data_set_layout(tmp_path):
    m = blobs()[:64, :96]
    image = np.full((64, 96, 3), 200, np.uint8)
    region = AnnotatedRegion(RegionBox(64, 0, 96, 64), "ann", image, {GLOMERULI_ID: m})
    summary = write_dataset(tmp_path / "set", [region], slide_id=3, patch=32)
    assert (summary.pairs, summary.leftover_regions) == (6, 0)
    records = read_captions(tmp_path / "set")
    assert [(r["x"], r["y"], r["annotator"], r["slide"]) for r in records][:2] == [(64, 0, "ann", 3), (96, 0, "ann", 3)]
    labels = label_mask({GLOMERULI_ID: m}, m.shape)
    assert set(np.unique(labels)) == {GLOMERULI_ID, OTHER_TISSUE_ID}
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path / "set", [region], slide_id=3, patch=32)
    assert shapely.__version__ >= "2"
