"""Slides: whole-slide files the Slides page lists (stitched, generated, or registered from a server path).

A row records what OpenSlide read from the file when it was added (size, level count, mpp) and the provenance
sidecar beside it; `path` is the file's absolute path, unique, so one file is listed once. The file may
disappear later: the rows stay, and the page shows such a slide as missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from db import models
from db.repository._common import NotFoundError, check_choice, clean_name
from db.session import session_scope


@dataclass(frozen=True)
class Slide:
    """A stored slide; path is absolute (a file anywhere on the server)."""

    id: int
    name: str
    path: str
    width: int
    height: int
    levels: int
    mpp: float | None
    kind: str
    patch_size: int | None
    caption: str | None
    provenance: dict[str, Any] | None
    created_at: datetime
    created_by: str | None


def _record(row: models.Slide) -> Slide:
    return Slide(
        row.id,
        row.name,
        row.path,
        row.width,
        row.height,
        row.levels,
        row.mpp,
        row.kind,
        row.patch_size,
        row.caption,
        dict(row.provenance) if row.provenance is not None else None,
        row.created_at,
        row.created_by,
    )


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"slide {what} must be a positive integer, got {value!r}")
    return value


def _check_path(path: object) -> str:
    text = clean_name(path, "slide path")
    if not PurePath(text).is_absolute():
        raise ValueError(f"slide path must be an absolute file path, got {text!r}")
    if len(text) > models.PATH_LEN:
        raise ValueError(f"slide path is {len(text)} characters long; at most {models.PATH_LEN} are stored: {text!r}")
    return text


def _check_name(name: object) -> str:
    text = clean_name(name, "slide name")
    if len(text) > models.NAME_LEN:
        raise ValueError(f"slide name must be at most {models.NAME_LEN} characters, got {len(text)}")
    return text


def add_slide(
    *,
    name: str,
    path: str,
    width: int,
    height: int,
    levels: int,
    mpp: float | None,
    kind: str,
    provenance: dict[str, Any] | None = None,
    patch_size: int | None = None,
    caption: str | None = None,
    created_by: str | None = None,
    url: str | None = None,
) -> Slide:
    """A new slide row. A path already listed is refused (ValueError naming the slide that holds it)."""
    values = {
        "name": _check_name(name),
        "path": _check_path(path),
        "width": _positive_int(width, "width"),
        "height": _positive_int(height, "height"),
        "levels": _positive_int(levels, "level count"),
        "kind": check_choice(kind, models.SLIDE_KINDS, "slide kind"),
        "patch_size": None if patch_size is None else _positive_int(patch_size, "patch size"),
        "caption": caption,
        "created_by": created_by,
    }
    if mpp is not None:
        if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not math.isfinite(mpp) or mpp <= 0:
            raise ValueError(f"slide mpp (microns per pixel) must be a positive number or None, got {mpp!r}")
        mpp = float(mpp)
    if provenance is not None and not isinstance(provenance, dict):
        raise ValueError(f"slide provenance must be a JSON object (dict) or None, got {type(provenance).__name__}")
    try:
        with session_scope(url) as s:
            existing = s.scalar(select(models.Slide).where(models.Slide.path == values["path"]))
            if existing is not None:
                raise _already_listed(existing)
            row = models.Slide(**values, mpp=mpp, provenance=provenance)
            s.add(row)
            s.flush()
            return _record(row)
    except IntegrityError:  # another request listed the same file between our check and our insert
        existing_slide = find_slide_by_path(values["path"], url=url)
        if existing_slide is None:
            raise
        raise _already_listed(existing_slide) from None


def _already_listed(slide: models.Slide | Slide) -> ValueError:
    return ValueError(f"slide file {slide.path} is already listed, as slide #{slide.id} {slide.name!r}")


def get_slide(slide_id: int, *, url: str | None = None) -> Slide:
    with session_scope(url, readonly=True) as s:
        row = s.get(models.Slide, slide_id)
        if row is None:
            raise NotFoundError(f"no slide with id {slide_id}")
        return _record(row)


def find_slide_by_path(path: str, *, url: str | None = None) -> Slide | None:
    """The slide listed for this absolute path, or None."""
    with session_scope(url, readonly=True) as s:
        row = s.scalar(select(models.Slide).where(models.Slide.path == path))
        return _record(row) if row is not None else None


def list_slides(kind: str | None = None, *, url: str | None = None) -> list[Slide]:
    """Newest first, optionally of one kind."""
    stmt = select(models.Slide).order_by(models.Slide.created_at.desc(), models.Slide.id.desc())
    if kind is not None:
        stmt = stmt.where(models.Slide.kind == check_choice(kind, models.SLIDE_KINDS, "slide kind"))
    with session_scope(url, readonly=True) as s:
        return [_record(r) for r in s.scalars(stmt)]


def delete_slide(slide_id: int, *, url: str | None = None) -> Slide:
    """Remove the row (never the file; callers decide about files). A slide with annotations is refused, so no
    painted mask loses its slide."""
    with session_scope(url) as s:
        row = s.get(models.Slide, slide_id)
        if row is None:
            raise NotFoundError(f"no slide with id {slide_id}")
        annotations = s.scalar(
            select(func.count(models.SlideAnnotation.id)).where(models.SlideAnnotation.slide_id == slide_id)
        )
        if annotations:
            raise ValueError(
                f"slide #{slide_id} {row.name!r} has {annotations} annotation(s); it stays listed so they keep "
                "their slide"
            )
        record = _record(row)
        s.delete(row)
        return record
