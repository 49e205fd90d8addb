"""Taking a survey: start (shared link or one-use invitation), resume, next item, answer (idempotent), strategy,
finish.

Everything here is keyed by the participant's resume token (or their invitation) and returns nothing that
reveals an item's truth. Starting a participant is safe under concurrency on SQLite and PostgreSQL: the survey
row (and the invitation row) are locked for the transaction that counts participants and inserts one (SELECT
... FOR UPDATE on PostgreSQL; SQLite write transactions begin IMMEDIATE, so writers queue), hence the cap
holds and an invitation starts one participant however many tabs open it at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db import models
from db.repository._common import NotFoundError, check_choice, check_experience, insert_ignore, new_token
from db.session import session_scope
from renal_ldm import survey as vocabulary


class Shuffler(Protocol):
    def shuffle(self, x: list[Any], /) -> None: ...


@dataclass(frozen=True)
class Participant:
    id: int
    survey_id: int
    survey_token: str
    survey_status: str
    resume_token: str
    experience: int | None
    item_order: tuple[int, ...]
    strategy: str | None
    started_at: datetime
    finished_at: datetime | None
    answered: int
    total: int

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True)
class InvitationStatus:
    """What an invitation link leads to: its survey, and the participant it started (None while unused)."""

    survey_id: int
    resume_token: str | None

    @property
    def used(self) -> bool:
        return self.resume_token is not None


class SurveyFullError(ValueError):
    """The survey's participant cap is reached: nobody more may start."""


class SharedLinkOffError(ValueError):
    """The survey's shared link is turned off: only invitation links start participants."""


@dataclass(frozen=True)
class PublicItem:
    """What a participant may see of an item: no truth. number counts from 1 in their own order."""

    public_id: str
    image_path: str
    number: int
    total: int


def _load(session: Session, resume_token: str) -> tuple[models.Participant, models.Survey]:
    row = session.execute(
        select(models.Participant, models.Survey)
        .join(models.Survey, models.Survey.id == models.Participant.survey_id)
        .where(models.Participant.resume_token == resume_token)
    ).first()
    if row is None:
        raise NotFoundError(f"unknown resume token {resume_token!r}: start the survey again from its link")
    return row[0], row[1]


def _answered_ids(session: Session, participant_id: int) -> set[int]:
    stmt = select(models.Answer.item_id).where(models.Answer.participant_id == participant_id)
    return set(session.scalars(stmt))


def _require_open(survey: models.Survey) -> None:
    if survey.status != vocabulary.OPEN:
        raise ValueError(f"survey {survey.title!r} is {survey.status}, not open: it accepts no answers now")


def _add_participant(
    session: Session, survey: models.Survey, experience: int | None, rng: Shuffler | None
) -> models.Participant:
    """Insert a participant of `survey` (its row locked by the caller) unless the survey is closed or full."""
    _require_open(survey)
    if survey.participant_cap is not None:
        started = session.scalar(
            select(func.count(models.Participant.id)).where(models.Participant.survey_id == survey.id)
        )
        if started >= survey.participant_cap:
            raise SurveyFullError(
                f"survey {survey.title!r} has all the participants it needs ({survey.participant_cap} started)"
            )
    order = list(
        session.scalars(
            select(models.SurveyItem.id)
            .where(models.SurveyItem.survey_id == survey.id)
            .order_by(models.SurveyItem.position)
        )
    )
    (rng or random.SystemRandom()).shuffle(order)
    participant = models.Participant(
        survey_id=survey.id, resume_token=new_token(), experience=experience, item_order=[int(i) for i in order]
    )
    session.add(participant)
    session.flush()
    return participant


def _locked_survey(session: Session, *where: Any) -> models.Survey | None:
    return session.scalars(select(models.Survey).where(*where).with_for_update()).first()


def start_participant(
    survey_token: str, experience: int | None = None, rng: Shuffler | None = None, *, url: str | None = None
) -> str:
    """Register a participant of an open survey with a freshly drawn item order; returns the resume token.

    Refused (SurveyFullError) once the survey's participant cap is reached, and (SharedLinkOffError) when the
    researcher turned the shared link off.
    """
    experience = check_experience(experience)
    with session_scope(url) as session:
        survey = _locked_survey(session, models.Survey.token == survey_token)
        if survey is None:
            raise NotFoundError(f"unknown survey token {survey_token!r}: check the survey link")
        if not survey.shared_link:
            raise SharedLinkOffError(
                f"survey {survey.title!r} takes participants by invitation only; "
                "open the personal invitation link you were given"
            )
        return _add_participant(session, survey, experience, rng).resume_token


def get_invitation(invitation_token: str, *, url: str | None = None) -> InvitationStatus:
    """Where an invitation link leads; NotFoundError for an unknown token."""
    with session_scope(url, readonly=True) as session:
        row = session.execute(
            select(models.SurveyInvitation.survey_id, models.Participant.resume_token)
            .outerjoin(models.Participant, models.Participant.id == models.SurveyInvitation.participant_id)
            .where(models.SurveyInvitation.token == invitation_token)
        ).first()
        if row is None:
            raise NotFoundError(f"unknown invitation token {invitation_token!r}: check the invitation link")
        return InvitationStatus(row[0], row[1])


class _ClaimLost(Exception):
    """Another transaction claimed the invitation between our read and our update (rolls ours back)."""


def start_invited_participant(
    invitation_token: str, experience: int | None = None, rng: Shuffler | None = None, *, url: str | None = None
) -> str:
    """The participant of a one-use invitation: started now if the invitation is unused, else the one it
    started earlier (their resume token either way, so reopening the link resumes them).

    The invitation row is locked, and the claim is a conditional UPDATE (... WHERE participant_id IS NULL) on a
    UNIQUE column: two tabs opening one unused invitation at once give one participant, the other tab resumes it.
    """
    experience = check_experience(experience)
    for _attempt in range(3):
        try:
            return _claim_invitation(invitation_token, experience, rng, url)
        except _ClaimLost:
            continue
    raise RuntimeError(f"invitation {invitation_token!r} could not be claimed after 3 attempts")


def _claim_invitation(invitation_token: str, experience: int | None, rng: Shuffler | None, url: str | None) -> str:
    invitation = models.SurveyInvitation
    with session_scope(url) as session:
        row = session.scalars(select(invitation).where(invitation.token == invitation_token).with_for_update()).first()
        if row is None:
            raise NotFoundError(f"unknown invitation token {invitation_token!r}: check the invitation link")
        if row.participant_id is not None:
            return session.get_one(models.Participant, row.participant_id).resume_token
        survey = _locked_survey(session, models.Survey.id == row.survey_id)
        assert survey is not None  # a foreign key
        participant = _add_participant(session, survey, experience, rng)
        claimed = session.execute(
            update(invitation)
            .where(invitation.id == row.id, invitation.participant_id.is_(None))
            .values(participant_id=participant.id, used_at=models.utcnow())
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            raise _ClaimLost(invitation_token)
        return participant.resume_token


def get_participant(resume_token: str, *, url: str | None = None) -> Participant:
    """The participant behind a resume token, with progress; NotFoundError for an unknown token."""
    with session_scope(url, readonly=True) as session:
        p, survey = _load(session, resume_token)
        answered = len(_answered_ids(session, p.id))
        return Participant(
            p.id,
            p.survey_id,
            survey.token,
            survey.status,
            p.resume_token,
            p.experience,
            tuple(p.item_order),
            p.strategy,
            p.started_at,
            p.finished_at,
            answered,
            len(p.item_order),
        )


def set_experience(resume_token: str, experience: int, *, url: str | None = None) -> None:
    """Record the participant's experience, 1 (barely any) .. 5 (pathologist)."""
    experience = check_experience(experience)
    if experience is None:
        raise ValueError("experience must be an integer from 1 to 5, got None")
    with session_scope(url) as session:
        _load(session, resume_token)[0].experience = experience


def next_unanswered_item(resume_token: str, *, url: str | None = None) -> PublicItem | None:
    """The first item in the participant's order not yet answered; None when all are answered."""
    with session_scope(url, readonly=True) as session:
        p, _survey = _load(session, resume_token)
        answered = _answered_ids(session, p.id)
        for number, item_id in enumerate(p.item_order, start=1):
            if item_id not in answered:
                item = session.get_one(models.SurveyItem, item_id)
                return PublicItem(item.public_id, item.image_path, number, len(p.item_order))
        return None


def record_answer(resume_token: str, item_public_id: str, answer: str, *, url: str | None = None) -> bool:
    """Store an answer; True if stored now, False if this item was already answered (the first answer wins).

    A double click or a retried request is harmless: the insert is ON CONFLICT DO NOTHING on
    UNIQUE(participant, item), so concurrent duplicates leave exactly one row.
    """
    answer = check_choice(answer, models.TRUTH_VALUES, "answer")
    with session_scope(url) as session:
        p, survey = _load(session, resume_token)
        item_id = session.scalar(
            select(models.SurveyItem.id).where(
                models.SurveyItem.public_id == item_public_id, models.SurveyItem.survey_id == p.survey_id
            )
        )
        if item_id is None:
            raise NotFoundError(f"item {item_public_id!r} is not part of this participant's survey")
        inserted = insert_ignore(
            session,
            models.Answer,
            {"participant_id": p.id, "item_id": item_id, "answer": answer, "answered_at": models.utcnow()},
            ["participant_id", "item_id"],
        )
        if inserted:  # raising here rolls the insert back
            _require_open(survey)
            if p.finished_at is not None:
                raise ValueError("this participant has already finished the survey; answers are final")
        return inserted


def set_strategy(resume_token: str, strategy: str | None, *, url: str | None = None) -> None:
    """The participant's optional free-text strategy (blank clears it)."""
    if strategy is not None and not isinstance(strategy, str):
        raise ValueError(f"strategy must be text, got {strategy!r}")
    text = (strategy or "").strip() or None
    if text is not None and len(text) > vocabulary.STRATEGY_MAX_CHARS:
        raise ValueError(f"strategy must be at most {vocabulary.STRATEGY_MAX_CHARS} characters, got {len(text)}")
    with session_scope(url) as session:
        _load(session, resume_token)[0].strategy = text


def finish_participant(resume_token: str, *, url: str | None = None) -> None:
    """Mark the participant finished (idempotent: the first finish time stays)."""
    with session_scope(url) as session:
        p, _survey = _load(session, resume_token)
        if p.finished_at is None:
            p.finished_at = models.utcnow()
