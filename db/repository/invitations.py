"""One-use invitation links as researchers see them: create a batch for a survey, list them with their use.

A participant opens one with db.repository.participants.start_invited_participant, which starts exactly one
participant per invitation and resumes that participant ever after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from db import models
from db.repository._common import NotFoundError, new_token
from db.session import session_scope
from renal_ldm.survey import INVITATIONS_PER_BATCH_MAX


@dataclass(frozen=True)
class Invitation:
    id: int
    survey_id: int
    token: str
    participant_id: int | None
    created_at: datetime
    used_at: datetime | None

    @property
    def used(self) -> bool:
        return self.participant_id is not None


def _record(row: models.SurveyInvitation) -> Invitation:
    return Invitation(row.id, row.survey_id, row.token, row.participant_id, row.created_at, row.used_at)


def create_invitations(survey_id: int, count: int, *, url: str | None = None) -> list[Invitation]:
    """`count` new unused invitations of a survey (each link for one person), in the order created."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= INVITATIONS_PER_BATCH_MAX:
        raise ValueError(
            f"number of invitations must be a whole number from 1 to {INVITATIONS_PER_BATCH_MAX}, got {count!r}"
        )
    with session_scope(url) as session:
        if session.get(models.Survey, survey_id) is None:
            raise NotFoundError(f"no survey with id {survey_id!r}")
        rows = [models.SurveyInvitation(survey_id=survey_id, token=new_token()) for _ in range(count)]
        session.add_all(rows)
        session.flush()
        return [_record(r) for r in rows]


def list_invitations(survey_id: int, *, url: str | None = None) -> list[Invitation]:
    """A survey's invitations, oldest first, each with the participant it started (None while unused)."""
    stmt = (
        select(models.SurveyInvitation)
        .where(models.SurveyInvitation.survey_id == survey_id)
        .order_by(models.SurveyInvitation.id)
    )
    with session_scope(url, readonly=True) as session:
        if session.get(models.Survey, survey_id) is None:
            raise NotFoundError(f"no survey with id {survey_id!r}")
        return [_record(r) for r in session.scalars(stmt)]
