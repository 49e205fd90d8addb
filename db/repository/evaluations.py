"""Evaluation runs: created when a researcher starts one, finished with its summary or its error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from db import models
from db.repository._common import NotFoundError, check_choice
from db.session import session_scope


@dataclass(frozen=True)
class Evaluation:
    id: int
    kind: str
    state: str
    params: dict[str, Any]
    summary: dict[str, Any] | None
    report_dir: str
    error: str | None
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None


def _record(row: models.Evaluation) -> Evaluation:
    return Evaluation(
        row.id,
        row.kind,
        row.state,
        dict(row.params),
        row.summary,
        row.report_dir,
        row.error,
        row.created_by,
        row.created_at,
        row.finished_at,
    )


def add_evaluation(
    kind: str, params: dict[str, Any], report_dir: str, *, created_by: str | None = None, url: str | None = None
) -> Evaluation:
    """A running evaluation; `report_dir` is relative to the data directory (the product names it)."""
    kind = check_choice(kind, models.EVALUATION_KINDS, "evaluation kind")
    with session_scope(url) as s:
        row = models.Evaluation(kind=kind, state="running", params=params, report_dir=report_dir, created_by=created_by)
        s.add(row)
        s.flush()
        return _record(row)


def finish_evaluation(
    evaluation_id: int, *, summary: dict[str, Any] | None = None, error: str | None = None, url: str | None = None
) -> Evaluation:
    """Mark it done with its summary, or failed with its error."""
    with session_scope(url) as s:
        row = s.get(models.Evaluation, evaluation_id)
        if row is None:
            raise NotFoundError(f"no evaluation with id {evaluation_id}")
        row.state = "failed" if error is not None else "done"
        row.summary, row.error, row.finished_at = summary, error, models.utcnow()
        s.flush()
        return _record(row)


def get_evaluation(evaluation_id: int, *, url: str | None = None) -> Evaluation:
    with session_scope(url, readonly=True) as s:
        row = s.get(models.Evaluation, evaluation_id)
        if row is None:
            raise NotFoundError(f"no evaluation with id {evaluation_id}")
        return _record(row)


def list_evaluations(kind: str | None = None, *, url: str | None = None) -> list[Evaluation]:
    """Newest first, optionally of one kind."""
    stmt = select(models.Evaluation).order_by(models.Evaluation.created_at.desc(), models.Evaluation.id.desc())
    if kind is not None:
        stmt = stmt.where(models.Evaluation.kind == check_choice(kind, models.EVALUATION_KINDS, "evaluation kind"))
    with session_scope(url, readonly=True) as s:
        return [_record(r) for r in s.scalars(stmt)]
