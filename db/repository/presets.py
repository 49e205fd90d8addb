"""Caption presets: named captions a researcher saves and reuses (upsert by name)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from db import models
from db.repository._common import clean_name
from db.session import session_scope


@dataclass(frozen=True)
class Preset:
    id: int
    name: str
    caption: str
    levels: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


def _record(row: models.CaptionPreset) -> Preset:
    return Preset(row.id, row.name, row.caption, row.levels, row.created_at, row.updated_at)


def save_preset(name: str, caption: str, levels: dict[str, Any] | None = None, *, url: str | None = None) -> Preset:
    """Create the preset, or replace caption and levels of the one with this name."""
    name = clean_name(name, "preset name")
    if not isinstance(caption, str):
        raise ValueError(f"preset caption must be text, got {caption!r}")
    if levels is not None and not isinstance(levels, dict):
        raise ValueError(f"preset levels must be a mapping of class name to level, got {levels!r}")
    for attempt in range(2):  # a concurrent save of the same new name: the loser updates on its retry
        try:
            with session_scope(url) as session:
                row = session.scalars(select(models.CaptionPreset).where(models.CaptionPreset.name == name)).first()
                if row is None:
                    row = models.CaptionPreset(name=name, caption=caption, levels=levels)
                    session.add(row)
                else:
                    row.caption, row.levels = caption, levels
                session.flush()
                return _record(row)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def get_preset(name: str, *, url: str | None = None) -> Preset | None:
    with session_scope(url, readonly=True) as session:
        row = session.scalars(select(models.CaptionPreset).where(models.CaptionPreset.name == name)).first()
        return _record(row) if row is not None else None


def list_presets(*, url: str | None = None) -> list[Preset]:
    """All presets by name."""
    with session_scope(url, readonly=True) as session:
        return [_record(r) for r in session.scalars(select(models.CaptionPreset).order_by(models.CaptionPreset.name))]


def delete_preset(name: str, *, url: str | None = None) -> bool:
    """Delete the preset with this name; False if there was none."""
    with session_scope(url) as session:
        result = session.execute(delete(models.CaptionPreset).where(models.CaptionPreset.name == name))
        return result.rowcount > 0
