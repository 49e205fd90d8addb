"""Generated samples: one row per image file the product wrote under the data directory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select

from db import models
from db.repository._common import NotFoundError, as_utc, clean_name
from db.session import session_scope
from renal_ldm.models.configs import SAMPLING

MAX_PAGE = 1000


@dataclass(frozen=True)
class Sample:
    """A stored sample; image_path is relative to the data directory."""

    id: int
    image_path: str
    caption: str
    model_name: str
    model_fingerprint: str | None
    seed: int
    steps: int
    guidance: float
    scheduler: str
    eta: float
    size: int
    created_at: datetime
    run_id: str | None
    extra: dict[str, Any] | None


@dataclass(frozen=True)
class NewSample:
    """What add_sample(s) needs; the database fills in id and created_at."""

    image_path: str
    caption: str
    model_name: str
    seed: int
    steps: int
    guidance: float
    size: int
    scheduler: str = SAMPLING.scheduler
    eta: float = 0.0
    model_fingerprint: str | None = None
    run_id: str | None = None
    extra: dict[str, Any] | None = None


_FIELDS = [f.name for f in fields(Sample)]


def _record(row: models.Sample) -> Sample:
    return Sample(**{name: getattr(row, name) for name in _FIELDS})


def _row(new: NewSample | Mapping[str, Any]) -> models.Sample:
    if isinstance(new, Mapping):
        unknown = set(new) - {f.name for f in fields(NewSample)}
        if unknown:
            raise ValueError(f"unknown sample fields {sorted(unknown)}")
        new = NewSample(**new)
    image_path = clean_name(new.image_path, "sample image_path")
    if image_path.startswith("/") or ".." in image_path.replace("\\", "/").split("/"):
        raise ValueError(f"sample image_path must be relative to the data directory, got {image_path!r}")
    if not isinstance(new.caption, str):
        raise ValueError(f"sample caption must be text, got {new.caption!r}")
    for name in ("steps", "size"):
        value = getattr(new, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"sample {name} must be a positive integer, got {value!r}")
    if isinstance(new.seed, bool) or not isinstance(new.seed, int) or not 0 <= new.seed < 2**63:
        raise ValueError(f"sample seed must be an integer in [0, 2**63), got {new.seed!r}")
    return models.Sample(
        image_path=image_path,
        caption=new.caption,
        model_name=clean_name(new.model_name, "sample model_name"),
        model_fingerprint=new.model_fingerprint,
        seed=new.seed,
        steps=new.steps,
        guidance=float(new.guidance),
        scheduler=new.scheduler,
        eta=float(new.eta),
        size=new.size,
        run_id=new.run_id,
        extra=new.extra,
    )


def add_samples(samples: Iterable[NewSample | Mapping[str, Any]], *, url: str | None = None) -> list[Sample]:
    """Store a batch (one generation request) in one transaction: all rows or none."""
    rows = [_row(s) for s in samples]
    with session_scope(url) as session:
        session.add_all(rows)
        session.flush()
        return [_record(r) for r in rows]


def add_sample(sample: NewSample | Mapping[str, Any] | None = None, *, url: str | None = None, **fields_) -> Sample:
    """Store one sample, given as a NewSample, a mapping, or keyword fields."""
    return add_samples([sample if sample is not None else fields_], url=url)[0]


def _filtered(
    stmt: Select,
    caption_contains: str | None,
    model_name: str | None,
    since: datetime | None,
    until: datetime | None,
    run_id: str | None,
) -> Select:
    if caption_contains:
        stmt = stmt.where(models.Sample.caption.icontains(caption_contains, autoescape=True))
    if model_name:
        stmt = stmt.where(models.Sample.model_name == model_name)
    if since is not None:
        stmt = stmt.where(models.Sample.created_at >= as_utc(since))
    if until is not None:
        stmt = stmt.where(models.Sample.created_at < as_utc(until))
    if run_id:
        stmt = stmt.where(models.Sample.run_id == run_id)
    return stmt


def list_samples(
    *,
    caption_contains: str | None = None,
    model_name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    run_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
    url: str | None = None,
) -> list[Sample]:
    """Samples newest first, filtered (caption substring, case-insensitive; model; since <= created_at < until)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit!r}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset!r}")
    stmt = _filtered(select(models.Sample), caption_contains, model_name, since, until, run_id)
    stmt = stmt.order_by(models.Sample.created_at.desc(), models.Sample.id.desc()).limit(limit).offset(offset)
    with session_scope(url, readonly=True) as session:
        return [_record(r) for r in session.scalars(stmt)]


def count_samples(
    *,
    caption_contains: str | None = None,
    model_name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    run_id: str | None = None,
    url: str | None = None,
) -> int:
    """How many samples match the same filters as list_samples (for pagination)."""
    stmt = _filtered(select(func.count(models.Sample.id)), caption_contains, model_name, since, until, run_id)
    with session_scope(url, readonly=True) as session:
        return int(session.scalar(stmt) or 0)


def sample_model_names(*, url: str | None = None) -> list[str]:
    """The distinct model names samples were made with (for a filter select box)."""
    stmt = select(models.Sample.model_name).distinct().order_by(models.Sample.model_name)
    with session_scope(url, readonly=True) as session:
        return list(session.scalars(stmt))


def get_sample(sample_id: int, *, url: str | None = None) -> Sample | None:
    """One sample by id, or None."""
    with session_scope(url, readonly=True) as session:
        row = session.get(models.Sample, sample_id)
        return _record(row) if row is not None else None


def delete_sample(sample_id: int, *, url: str | None = None) -> str:
    """Delete one sample row and return its image_path, so the caller removes the file after the commit."""
    with session_scope(url) as session:
        row = session.get(models.Sample, sample_id)
        if row is None:
            raise NotFoundError(f"no sample with id {sample_id!r}")
        image_path = row.image_path
        session.delete(row)
        return image_path
