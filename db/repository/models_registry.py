"""Registered checkpoint directories the app offers for sampling (the demo model plus users' own)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from db import models
from db.repository._common import clean_name
from db.session import session_scope


class ModelPathError(FileNotFoundError, ValueError):
    """The checkpoint directory to register does not exist (both a FileNotFoundError and a ValueError)."""


@dataclass(frozen=True)
class ModelEntry:
    id: int
    name: str
    path: str
    kind: str
    created_at: datetime


def _record(row: models.ModelEntry) -> ModelEntry:
    return ModelEntry(row.id, row.name, row.path, row.kind, row.created_at)


def register_model(name: str, path: str | Path, *, kind: str = "user", url: str | None = None) -> ModelEntry:
    """Register a checkpoint directory under a unique name; the directory must exist."""
    name = clean_name(name, "model name")
    if kind not in models.MODEL_KINDS:
        raise ValueError(f"model kind must be one of {models.MODEL_KINDS}, got {kind!r}")
    directory = Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise ModelPathError(f"model directory not found: {str(path)!r}")
    try:
        with session_scope(url) as session:
            row = models.ModelEntry(name=name, path=str(directory), kind=kind)
            session.add(row)
            session.flush()
            return _record(row)
    except IntegrityError:
        raise ValueError(f"a model named {name!r} is already registered; choose another name") from None


def get_model(name: str, *, url: str | None = None) -> ModelEntry | None:
    with session_scope(url, readonly=True) as session:
        row = session.scalars(select(models.ModelEntry).where(models.ModelEntry.name == name)).first()
        return _record(row) if row is not None else None


def list_models(*, url: str | None = None) -> list[ModelEntry]:
    """Registered models, demo ones first, then by name."""
    stmt = select(models.ModelEntry).order_by(models.ModelEntry.kind, models.ModelEntry.name)
    with session_scope(url, readonly=True) as session:
        return [_record(r) for r in session.scalars(stmt)]


def remove_model(name: str, *, url: str | None = None) -> bool:
    """Forget a registered model (its files stay); False if no model had this name."""
    with session_scope(url) as session:
        return session.execute(delete(models.ModelEntry).where(models.ModelEntry.name == name)).rowcount > 0
