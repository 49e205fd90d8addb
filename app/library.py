"""Library logic for the Library and Generate pages: filters, pages, details, regenerate, delete with files."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.downloads import data_file, sampling_params
from db import repository as repo
from db.repository import Sample
from db.repository.samples import MAX_PAGE

log = logging.getLogger(__name__)

PAGE_SIZE = 12


def date_bounds(dates: Sequence[dt.date] | dt.date | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(since, until) in UTC for a date-range widget value: whole days, both ends included.

    One date picked (the range half chosen) means that day alone; nothing picked means no bound.
    """
    if dates is None:
        return None, None
    if isinstance(dates, dt.date):
        dates = (dates,)
    dates = [d for d in dates if d is not None]
    if not dates:
        return None, None
    first, last = min(dates), max(dates)
    since = dt.datetime.combine(first, dt.time.min, tzinfo=dt.UTC)
    until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    return since, until


def page_count(total: int, page_size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(total / page_size))


def details(sample: Sample) -> dict[str, Any]:
    """Every stored parameter of a sample, for display."""
    return {
        "id": sample.id,
        "caption": sample.caption,
        "model": sample.model_name,
        "model fingerprint": sample.model_fingerprint,
        **sampling_params(sample),
        "created (UTC)": sample.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "run": sample.run_id,
        "file": sample.image_path,
        "sidecar": sample.extra or {},
    }


def regenerate_params(sample: Sample) -> dict[str, Any]:
    """What the Generate page needs to draw this image again (app.state.REGENERATE)."""
    return {
        "sample_id": sample.id,
        "caption": sample.caption,
        "model_name": sample.model_name,
        **sampling_params(sample),
        "margin": int((sample.extra or {}).get("margin", 0)),  # in the sidecar (extra) only
        "margin_late": bool((sample.extra or {}).get("margin_late", False)),
        "precision": (sample.extra or {}).get("precision") or "fp32",  # unrecorded before: the fp32 default then
    }


def delete_sample(sample_id: int, home: str | Path | None = None) -> str:
    """Delete the row, then its PNG and JSON sidecar (after the commit); returns the relative image path.

    A row whose path leads outside the data directory is refused before anything changes (ValueError naming
    the path: the row stays, no file is touched). The run's manifest.csv is an append-only log of what was
    drawn and keeps its line.
    """
    sample = repo.get_sample(sample_id)
    if sample is not None:
        data_file(sample.image_path, home)  # refuses a path leading outside, before the row is deleted
    image_path = repo.delete_sample(sample_id)
    png = data_file(image_path, home)
    for path in (png, png.with_suffix(".json")):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # the row is gone; a stray file is harmless, so report and go on
            log.warning("could not remove %s: %s", path, exc)
    return image_path


def run_samples(run_id: str) -> list[Sample]:
    """The stored samples of one generation run, in request order (seed S, S + 1, ...)."""
    samples = repo.list_samples(run_id=run_id, limit=MAX_PAGE)
    return sorted(samples, key=lambda s: (s.seed, s.id))
