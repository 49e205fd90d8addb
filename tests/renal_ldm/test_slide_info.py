"""renal_ldm.slides.info: what a slide file is (size, levels, mpp, provenance), its overview and its regions,
and one clear error for every file that is not a slide. One test per guarantee of the module docstring."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from slide_samples import PATCH, patch_pixels, stitched_slide

from renal_ldm.slides import info
from renal_ldm.slides.info import SlideFileError, describe_slide, overview, read_region, slide_kind
from renal_ldm.slides.stitch import provenance_path

pytest.importorskip("openslide")


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """2x2 patches of 64 px, deflate, 64 px tiles: 128x128 and 64x64, at 0.25 mpp."""
    return stitched_slide(tmp_path_factory.mktemp("slide"))


def test_a_stitched_slide_is_described_with_levels_mpp_and_provenance(slide):
    described = describe_slide(slide)
    assert (described.width, described.height, described.level_count) == (128, 128, 2)
    assert described.level_dimensions == ((128, 128), (64, 64))
    assert described.level_downsamples == (1.0, 2.0)
    assert described.mpp == pytest.approx(0.25)
    assert described.provenance["format"] == "renal-ldm stitched slide"
    assert described.provenance["grid"] == {"cols": 2, "rows": 2}
    assert [c["seed"] for c in described.provenance["cells"]] == [100, 101, 102, 103]
    assert described.kind == "stitched" and described.provenance_error is None


def test_kinds_follow_the_sidecar_format():
    assert slide_kind({"format": "renal-ldm stitched slide"}) == "stitched"
    assert slide_kind({"format": info.GENERATED_FORMAT}) == "generated"
    assert slide_kind({"format": "something else"}) == "registered"
    assert slide_kind({"format": 3}) == slide_kind(None) == slide_kind({}) == "registered"


def test_a_broken_sidecar_is_reported_not_fatal(tmp_path):
    slide = stitched_slide(tmp_path)
    provenance_path(slide).write_text("[1, 2]")
    described = describe_slide(slide)
    assert described.provenance is None and described.kind == "registered"
    assert "holds a JSON list, not an object" in described.provenance_error
    provenance_path(slide).write_text("{not json")
    assert "is not readable JSON" in describe_slide(slide).provenance_error
    provenance_path(slide).unlink()
    assert (describe_slide(slide).provenance, describe_slide(slide).provenance_error) == (None, None)


def test_a_file_without_mpp_reports_none(tmp_path):
    import tifffile

    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, patch_pixels(0, 128), tile=(64, 64), photometric="rgb")
    described = describe_slide(path)
    assert (described.width, described.level_count, described.mpp, described.provenance) == (128, 1, None, None)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: d / "gone.tif", "slide file {path} does not exist; expected a whole-slide image"),
        (lambda d: d, "{path} is not a file \\(a folder\\?\\); expected a whole-slide image"),
        (lambda d: _write(d / "notes.tif", b"not a slide at all"), "{path} is not a slide OpenSlide recognises"),
        (lambda d: _png(d / "patch.png"), "{path} is not a slide OpenSlide recognises; expected"),
    ],
    ids=["missing", "folder", "text", "png"],
)
def test_every_non_slide_gives_one_error_naming_the_path(tmp_path, make, message):
    import re

    path = make(tmp_path)
    for call in (describe_slide, overview, lambda p: read_region(p, 0, 0, 8, 8)):
        with pytest.raises(SlideFileError, match=message.format(path=re.escape(str(path)))):
            call(path)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _png(path):
    Image.fromarray(patch_pixels(0)).save(path)
    return path


def test_the_overview_is_bounded_and_looks_like_the_slide(slide):
    full = overview(slide)
    assert full.size == (128, 128)  # no level is 1024 px long: level 0, never enlarged
    assert np.array_equal(np.asarray(full), read_region(slide, 0, 0, 128, 128))
    small = overview(slide, max_side=20)
    assert max(small.size) == 20 and small.mode == "RGB"
    expected = np.asarray(Image.fromarray(read_region(slide, 0, 0, 64, 64, level=1)).resize((20, 20), Image.BOX))
    assert np.abs(np.asarray(small).astype(int) - expected).max() <= 2
    with pytest.raises(ValueError, match="overview side must be a positive number of pixels; got 0"):
        overview(slide, max_side=0)


def test_the_overview_comes_from_the_smallest_level_long_enough():
    levels = ((4000, 3000), (2000, 1500), (1000, 750), (500, 375))
    assert [info.overview_level(levels, side) for side in (100, 500, 501, 1000, 1024, 5000)] == [3, 3, 2, 2, 1, 0]


def test_an_overview_never_reads_a_level_above_the_bound(monkeypatch):
    monkeypatch.setattr(info, "OVERVIEW_MAX_SOURCE_PIXELS", 2000 * 1500)
    levels = ((4000, 3000), (2000, 1500), (1000, 750))
    assert info.overview_level(levels, 3000) == 1  # level 0 would be long enough, but it is too large to read
    monkeypatch.setattr(info, "OVERVIEW_MAX_SOURCE_PIXELS", 10)
    assert info.overview_level(levels, 100) == 2  # none is within: the lowest, which overview() then refuses


def test_the_overview_is_made_band_by_band(slide, monkeypatch):
    monkeypatch.setattr(info, "OVERVIEW_BAND_PIXELS", 64 * 5)  # five rows of the 64 px lowest level at a time
    banded = np.asarray(overview(slide, max_side=30)).astype(int)
    monkeypatch.undo()
    whole = np.asarray(overview(slide, max_side=30)).astype(int)
    assert banded.shape == whole.shape == (30, 30, 3)
    assert np.abs(banded - whole).mean() < 3  # the same picture; band edges round to whole output rows


def test_a_slide_without_a_small_level_gets_no_overview(slide, monkeypatch):
    monkeypatch.setattr(info, "OVERVIEW_MAX_SOURCE_PIXELS", 100)
    with pytest.raises(SlideFileError, match="its smallest level is 64x64 px, too large for an overview"):
        overview(slide)


def test_a_region_is_the_source_patch_exactly(slide):
    assert np.array_equal(read_region(slide, PATCH, 0, PATCH, PATCH), patch_pixels(101))
    assert np.array_equal(read_region(slide, 0, PATCH, PATCH, PATCH, level=0), patch_pixels(102))
    assert read_region(slide, 0, 0, 64, 64, level=1).shape == (64, 64, 3)


def test_regions_outside_the_level_or_too_large_are_refused(slide, monkeypatch):
    with pytest.raises(ValueError, match=r"region x=0 y=0 65x64 lies outside level 1 \(64x64\)"):
        read_region(slide, 0, 0, 65, 64, level=1)
    with pytest.raises(ValueError, match=r"level 2 does not exist; levels are 0\.\.1"):
        read_region(slide, 0, 0, 8, 8, level=2)
    with pytest.raises(ValueError, match="region width must be an integer number of pixels; got 1.5"):
        read_region(slide, 0, 0, 1.5, 8)
    monkeypatch.setattr(info, "MAX_REGION_PIXELS", 100)
    with pytest.raises(ValueError, match="region 64x64 px is larger than the 100 pixels read at once"):
        read_region(slide, 0, 0, 64, 64)


def test_a_generated_sidecar_is_read_as_is(tmp_path):
    slide = stitched_slide(tmp_path)
    record = {"format": info.GENERATED_FORMAT, "model": "demo", "captions": ["a"], "seed": 7}
    provenance_path(slide).write_text(json.dumps(record))
    assert describe_slide(slide).provenance == record and describe_slide(slide).kind == "generated"


def test_a_damaged_tile_is_one_error_naming_the_file(tmp_path):
    import tifffile

    slide = stitched_slide(tmp_path)
    with tifffile.TiffFile(slide) as tif:
        offsets = [(p.dataoffsets[0], p.databytecounts[0]) for p in tif.pages]
    with slide.open("r+b") as f:
        for offset, count in offsets:  # the first tile of every level
            f.seek(offset)
            f.write(b"\xff" * count)
    assert describe_slide(slide).level_count == 2  # the directory is intact
    with pytest.raises(SlideFileError, match=f"{slide}: the region x=0 y=0 64x64 of level 0 cannot be decoded"):
        read_region(slide, 0, 0, 64, 64)
    with pytest.raises(SlideFileError, match=f"{slide}: level 0 cannot be decoded"):
        overview(slide)
