"""db.repository.annotations: one row per slide, region, annotator and class; a second annotator never replaces
the first; stale saves are refused; a slide with annotations stays listed."""

from __future__ import annotations

import pytest

from db import repository as repo

BOX = (0, 0, 64, 64)


@pytest.fixture
def slide(db_url):
    return repo.add_slide(
        name="s", path="/srv/s.tif", width=128, height=128, levels=1, mpp=None, kind="registered", url=db_url
    )


def _save(db_url, slide, author, path, **kw):
    values = dict(slide_id=slide.id, author=author, class_id=4, box=BOX, mask_path=path, pixels=10, components=1)
    return repo.save_annotation(**{**values, **kw}, url=db_url)


def test_each_annotator_keeps_a_row_of_their_own(db_url, slide):
    first, previous = _save(db_url, slide, "ann", "annotations/a.png")
    assert previous is None and (first.revision, first.done, first.box) == (1, False, BOX)
    second, _ = _save(db_url, slide, "bob", "annotations/b.png", pixels=20)
    again, previous = _save(db_url, slide, "ann", "annotations/a2.png", done=True, expected_revision=1)
    assert previous == "annotations/a.png" and again.revision == 2 and again.done and again.id == first.id
    rows = repo.list_annotations(slide.id, url=db_url)
    assert [(r.author, r.mask_path, r.pixels) for r in rows] == [
        ("ann", "annotations/a2.png", 10),
        ("bob", "annotations/b.png", 20),
    ]
    assert repo.slide_annotators(slide.id, url=db_url) == ["ann", "bob"]
    other_class, _ = _save(db_url, slide, "ann", "annotations/a3.png", class_id=5)
    assert other_class.id != first.id
    kept, _ = _save(db_url, slide, "ann", "annotations/a4.png", expected_revision=2)
    assert kept.done, "done stays as it was unless given"


def test_a_stale_save_is_refused_and_changes_nothing(db_url, slide):
    _save(db_url, slide, "ann", "annotations/a.png")
    _save(db_url, slide, "ann", "annotations/a2.png", expected_revision=1)
    with pytest.raises(repo.StaleAnnotationError, match="revision 2; this page loaded revision 1"):
        _save(db_url, slide, "ann", "annotations/a3.png", expected_revision=1)
    assert repo.get_annotation(slide.id, "ann", 4, BOX, url=db_url).mask_path == "annotations/a2.png"


def test_bad_values_are_named(db_url, slide):
    with pytest.raises(repo.NotFoundError, match="no slide with id 999"):
        repo.save_annotation(
            slide_id=999, author="a", class_id=4, box=BOX, mask_path="m.png", pixels=0, components=0, url=db_url
        )
    with pytest.raises(ValueError, match="class id must be an integer 0..7"):
        _save(db_url, slide, "ann", "m.png", class_id=9)
    with pytest.raises(ValueError, match="annotator name must be a non-empty text"):
        _save(db_url, slide, "  ", "m.png")
    with pytest.raises(ValueError, match="region width must be an integer of at least 1"):
        _save(db_url, slide, "ann", "m.png", box=(0, 0, 0, 4))


def test_a_slide_with_annotations_stays_listed(db_url, slide):
    _save(db_url, slide, "ann", "annotations/a.png")
    with pytest.raises(ValueError, match="has 1 annotation"):
        repo.delete_slide(slide.id, url=db_url)
