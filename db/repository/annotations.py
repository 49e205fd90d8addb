"""Annotations: one annotator's mask of one class on one region of a slide (see db.models.SlideAnnotation).

Guarantees (tests/db/test_annotations_repository.py):

- `save_annotation` is one short transaction: it inserts the row of (slide, region, annotator, class) or
  updates that row only; rows of other annotators are never touched, so a second annotator never overwrites the
  first. It returns the saved record and the mask path the row pointed at before (the caller deletes that file
  once the row no longer names it).
- With `expected_revision`, a save over a row saved meanwhile (another tab of the same annotator) is refused
  with a StaleAnnotationError naming both revisions, and nothing changes.
- A slide that does not exist is a NotFoundError; bad counts, classes or boxes are ValueErrors naming them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db import models
from db.repository._common import NotFoundError, clean_name
from db.session import session_scope


class StaleAnnotationError(ValueError):
    """The row was saved by another page (a second tab) since this one loaded it."""


@dataclass(frozen=True)
class Annotation:
    id: int
    slide_id: int
    author: str
    class_id: int
    x: int
    y: int
    w: int
    h: int
    mask_path: str
    pixels: int
    components: int
    done: bool
    revision: int
    created_at: datetime
    updated_at: datetime

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h


def _record(row: models.SlideAnnotation) -> Annotation:
    return Annotation(
        row.id,
        row.slide_id,
        row.author,
        row.class_id,
        row.region_x,
        row.region_y,
        row.region_w,
        row.region_h,
        row.mask_path,
        row.pixels,
        row.components,
        bool(row.done),
        row.revision,
        row.created_at,
        row.updated_at,
    )


def check_author(author: object) -> str:
    name = clean_name(author, "annotator name")
    if len(name) > models.NAME_LEN:
        raise ValueError(f"annotator name must be at most {models.NAME_LEN} characters, got {len(name)}")
    return name


def _count(value: object, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer of at least {minimum}; got {value!r}")
    return value


def _key(slide_id: int, author: str, class_id: int, box: tuple[int, int, int, int]):
    x, y, w, h = box
    t = models.SlideAnnotation
    return (
        t.slide_id == slide_id,
        t.author == author,
        t.class_id == class_id,
        t.region_x == x,
        t.region_y == y,
        t.region_w == w,
        t.region_h == h,
    )


def _check_box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return _count(x, "region x"), _count(y, "region y"), _count(w, "region width", 1), _count(h, "region height", 1)


def _check_class(class_id: object) -> int:
    if isinstance(class_id, bool) or not isinstance(class_id, int) or not 0 <= class_id <= 7:
        raise ValueError(f"class id must be an integer 0..7 (renal_ldm.classes); got {class_id!r}")
    return class_id


def save_annotation(
    *,
    slide_id: int,
    author: str,
    class_id: int,
    box: tuple[int, int, int, int],
    mask_path: str,
    pixels: int,
    components: int,
    done: bool | None = None,
    expected_revision: int | None = None,
    url: str | None = None,
) -> tuple[Annotation, str | None]:
    """Insert or update this annotator's row; (record, the mask path it replaced or None). done=None keeps the
    row's state (False for a new row)."""
    author = check_author(author)
    class_id = _check_class(class_id)
    box = _check_box(box)
    _count(pixels, "pixel count")
    _count(components, "component count")
    if len(mask_path) > models.PATH_LEN:
        raise ValueError(f"mask path is longer than {models.PATH_LEN} characters")
    try:
        with session_scope(url) as s:
            if s.get(models.Slide, slide_id) is None:
                raise NotFoundError(f"no slide with id {slide_id}")
            row = s.scalar(select(models.SlideAnnotation).where(*_key(slide_id, author, class_id, box)))
            if row is None:
                if expected_revision not in (None, 0):
                    raise StaleAnnotationError(
                        f"this region's mask (revision {expected_revision}) was removed meanwhile; reload the region"
                    )
                x, y, w, h = box
                row = models.SlideAnnotation(
                    slide_id=slide_id,
                    author=author,
                    class_id=class_id,
                    region_x=x,
                    region_y=y,
                    region_w=w,
                    region_h=h,
                    mask_path=mask_path,
                    pixels=pixels,
                    components=components,
                    done=bool(done),
                    revision=1,
                )
                s.add(row)
                s.flush()
                return _record(row), None
            if expected_revision is not None and row.revision != expected_revision:
                raise StaleAnnotationError(
                    f"{author}'s mask of this region was saved meanwhile (revision {row.revision}; this page "
                    f"loaded revision {expected_revision}), perhaps in another tab; reload the region to see it"
                )
            previous = row.mask_path
            row.mask_path, row.pixels, row.components = mask_path, pixels, components
            if done is not None:
                row.done = bool(done)
            row.revision = row.revision + 1
            s.flush()
            return _record(row), (previous if previous != mask_path else None)
    except IntegrityError:  # the same annotator saved the same region in another request at this moment
        raise StaleAnnotationError(
            f"{author}'s mask of this region was saved at the same moment by another page; reload the region"
        ) from None


def set_done(annotation_id: int, done: bool, *, url: str | None = None) -> Annotation:
    with session_scope(url) as s:
        row = s.get(models.SlideAnnotation, annotation_id)
        if row is None:
            raise NotFoundError(f"no annotation with id {annotation_id}")
        row.done = bool(done)
        return _record(row)


def get_annotation(
    slide_id: int, author: str, class_id: int, box: tuple[int, int, int, int], *, url: str | None = None
) -> Annotation | None:
    with session_scope(url, readonly=True) as s:
        row = s.scalar(select(models.SlideAnnotation).where(*_key(slide_id, check_author(author), class_id, box)))
        return _record(row) if row is not None else None


def list_annotations(
    slide_id: int, *, author: str | None = None, class_id: int | None = None, url: str | None = None
) -> list[Annotation]:
    """A slide's rows (of one annotator, of one class), by region (row-major) then annotator and class."""
    t = models.SlideAnnotation
    stmt = select(t).where(t.slide_id == slide_id, t.region_w > 0)
    if author is not None:
        stmt = stmt.where(t.author == check_author(author))
    if class_id is not None:
        stmt = stmt.where(t.class_id == _check_class(class_id))
    stmt = stmt.order_by(t.region_y, t.region_x, t.region_h, t.region_w, t.author, t.class_id)
    with session_scope(url, readonly=True) as s:
        return [_record(r) for r in s.scalars(stmt)]


def slide_annotators(slide_id: int, *, url: str | None = None) -> list[str]:
    """The names of everyone who saved a mask on the slide, in name order."""
    t = models.SlideAnnotation
    with session_scope(url, readonly=True) as s:
        return list(s.scalars(select(t.author).where(t.slide_id == slide_id).distinct().order_by(t.author)))
