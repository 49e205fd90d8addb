"""Slide rows: added with what OpenSlide read and their provenance, listed newest first, one row per file,
refused input named, removal refused while annotations point at the slide."""

from __future__ import annotations

import pytest

from db import models
from db import repository as repo
from db.session import session_scope

PROVENANCE = {"format": "renal-ldm stitched slide", "samples": "/data/samples/run", "grid": {"cols": 2, "rows": 2}}


def _add(db_url, path="/data/slides/a.tif", **changes):
    values = dict(name="a", path=path, width=128, height=96, levels=2, mpp=0.5, kind="stitched", url=db_url)
    return repo.add_slide(**{**values, **changes})


def test_a_slide_is_stored_with_its_provenance_and_read_back(db_url):
    slide = _add(db_url, provenance=PROVENANCE, patch_size=64, created_by="ada")
    assert (slide.name, slide.width, slide.height, slide.levels, slide.mpp, slide.kind) == (
        "a",
        128,
        96,
        2,
        0.5,
        "stitched",
    )
    assert slide.created_at.tzinfo is not None and slide.created_by == "ada"
    again = repo.get_slide(slide.id, url=db_url)
    assert again == slide and again.provenance == PROVENANCE
    assert repo.find_slide_by_path("/data/slides/a.tif", url=db_url) == slide
    assert repo.find_slide_by_path("/elsewhere.tif", url=db_url) is None


def test_slides_list_newest_first_and_by_kind(db_url):
    first = _add(db_url, "/s/one.tif")
    second = _add(db_url, "/s/two.tif", kind="registered", mpp=None, provenance=None)
    assert [s.id for s in repo.list_slides(url=db_url)] == [second.id, first.id]
    assert [s.id for s in repo.list_slides("registered", url=db_url)] == [second.id]
    assert repo.get_slide(second.id, url=db_url).mpp is None


def test_one_file_is_listed_once_and_the_first_row_is_kept(db_url):
    first = _add(db_url, name="kept")
    with pytest.raises(
        ValueError, match=rf"slide file /data/slides/a.tif is already listed, as slide #{first.id} 'kept'"
    ):
        _add(db_url, name="again")
    assert [s.name for s in repo.list_slides(url=db_url)] == ["kept"]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"path": "slides/a.tif"}, "slide path must be an absolute file path, got 'slides/a.tif'"),
        ({"path": "/" + "x" * 600}, "slide path is 601 characters long; at most 500 are stored"),
        ({"name": "  "}, "slide name must be a non-empty text"),
        ({"width": 0}, "slide width must be a positive integer, got 0"),
        ({"levels": True}, "slide level count must be a positive integer, got True"),
        ({"mpp": -1.0}, r"slide mpp \(microns per pixel\) must be a positive number or None, got -1.0"),
        ({"kind": "scanned"}, "slide kind must be one of stitched, generated, registered; got 'scanned'"),
        ({"provenance": ["x"]}, r"slide provenance must be a JSON object \(dict\) or None, got list"),
    ],
)
def test_bad_values_are_named_and_nothing_is_stored(db_url, changes, message):
    with pytest.raises(ValueError, match=message):
        _add(db_url, **changes)
    assert repo.list_slides(url=db_url) == []


def test_delete_removes_the_row_but_not_while_annotations_point_at_it(db_url):
    painted, plain = _add(db_url, "/s/painted.tif", name="painted"), _add(db_url, "/s/plain.tif")
    with session_scope(db_url) as s:
        s.add(models.SlideAnnotation(slide_id=painted.id, mask_path="masks/1.png", author="ann"))
    with pytest.raises(ValueError, match=rf"slide #{painted.id} 'painted' has 1 annotation\(s\)"):
        repo.delete_slide(painted.id, url=db_url)
    assert repo.delete_slide(plain.id, url=db_url) == plain
    assert [s.id for s in repo.list_slides(url=db_url)] == [painted.id]
    with pytest.raises(repo.NotFoundError, match=f"no slide with id {plain.id}"):
        repo.get_slide(plain.id, url=db_url)
    with pytest.raises(repo.NotFoundError, match=f"no slide with id {plain.id}"):
        repo.delete_slide(plain.id, url=db_url)
