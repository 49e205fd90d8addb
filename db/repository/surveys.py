"""Surveys as researchers see them: create, open/close, copy, read the truth and the answers, import answers.

Participants never reach this module's truth-bearing functions; their side is db.repository.participants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import models
from db.repository._common import (
    NotFoundError,
    check_choice,
    check_experience,
    clean_name,
    new_token,
)
from db.session import session_scope
from renal_ldm import survey as vocabulary


@dataclass(frozen=True)
class Survey:
    id: int
    token: str
    title: str
    is_demo: bool
    status: str
    created_at: datetime
    item_count: int
    participant_count: int
    finished_count: int
    participant_cap: int | None = None
    shared_link: bool = True

    @property
    def full(self) -> bool:
        """No more participants may start: the cap is reached."""
        return self.participant_cap is not None and self.participant_count >= self.participant_cap


@dataclass(frozen=True)
class SurveyParticipant:
    """A participant as the researcher sees them on Results: no answers, just who they are and their status."""

    id: int
    experience: int | None
    strategy: str | None
    excluded: bool
    invited: bool
    started_at: datetime
    finished_at: datetime | None
    answered: int


@dataclass(frozen=True)
class SurveyItem:
    """An item with its truth: for researchers only."""

    id: int
    public_id: str
    image_path: str
    truth: str
    position: int


@dataclass(frozen=True)
class AnswerRecord:
    """One answer, ready for agreement statistics; question is the item's 1-based position in the survey."""

    participant_id: int
    experience: int | None
    question: int
    item_public_id: str
    truth: str
    answer: str
    answered_at: datetime


@dataclass(frozen=True)
class ImportSummary:
    participants: int
    answers: int


def _count(model: Any, *where: Any) -> Any:
    return select(func.count(model.id)).where(model.survey_id == models.Survey.id, *where).scalar_subquery()


_SURVEY_COLUMNS = (
    models.Survey,
    _count(models.SurveyItem),
    _count(models.Participant),
    _count(models.Participant, models.Participant.finished_at.is_not(None)),
)


def _record(row: Any) -> Survey:
    s, items, participants, finished = row
    return Survey(
        s.id,
        s.token,
        s.title,
        s.is_demo,
        s.status,
        s.created_at,
        items,
        participants,
        finished,
        s.participant_cap,
        bool(s.shared_link),
    )


def _survey_row(session: Session, survey_id: int) -> models.Survey:
    row = session.get(models.Survey, survey_id)
    if row is None:
        raise NotFoundError(f"no survey with id {survey_id!r}")
    return row


def _check_title(title: str) -> str:
    title = clean_name(title, "survey title")
    if len(title) > vocabulary.TITLE_MAX_CHARS:
        raise ValueError(f"survey title must be at most {vocabulary.TITLE_MAX_CHARS} characters, got {len(title)}")
    return title


def _add_survey(session: Session, title: str, items: Sequence[tuple[str, str]], is_demo: bool, status: str) -> str:
    survey = models.Survey(token=new_token(), title=title, is_demo=bool(is_demo), status=status)
    session.add(survey)
    session.flush()
    for position, (image_path, truth) in enumerate(items):
        session.add(
            models.SurveyItem(
                survey_id=survey.id, public_id=new_token(12), image_path=image_path, truth=truth, position=position
            )
        )
    return survey.token


def create_survey(
    title: str,
    items: Iterable[tuple[str, str]],
    *,
    is_demo: bool = False,
    status: str = vocabulary.OPEN,
    url: str | None = None,
) -> str:
    """Create a survey of (image_path, truth) items in the given order; returns its participant token."""
    title = _check_title(title)
    status = check_choice(status, models.SURVEY_STATUSES, "survey status")
    checked = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 2:
            raise ValueError(f"survey item {number} must be a pair (image_path, truth), got {item!r}")
        image_path = clean_name(item[0], f"survey item {number} image_path")
        checked.append((image_path, check_choice(item[1], models.TRUTH_VALUES, f"survey item {number} truth")))
    if not checked:
        raise ValueError("a survey needs at least one item (image_path, truth)")
    with session_scope(url) as session:
        return _add_survey(session, title, checked, is_demo, status)


def get_survey_by_token(token: str, *, url: str | None = None) -> Survey:
    """The survey a participant link points at; NotFoundError for an unknown token."""
    with session_scope(url, readonly=True) as session:
        row = session.execute(select(*_SURVEY_COLUMNS).where(models.Survey.token == token)).first()
        if row is None:
            raise NotFoundError(f"unknown survey token {token!r}: check the survey link")
        return _record(row)


def get_survey(survey_id: int, *, url: str | None = None) -> Survey:
    with session_scope(url, readonly=True) as session:
        row = session.execute(select(*_SURVEY_COLUMNS).where(models.Survey.id == survey_id)).first()
        if row is None:
            raise NotFoundError(f"no survey with id {survey_id!r}")
        return _record(row)


def list_surveys(*, include_demo: bool = True, url: str | None = None) -> list[Survey]:
    """All surveys, newest first, with item, participant and finished counts."""
    stmt = select(*_SURVEY_COLUMNS).order_by(models.Survey.created_at.desc(), models.Survey.id.desc())
    if not include_demo:
        stmt = stmt.where(models.Survey.is_demo.is_(False))
    with session_scope(url, readonly=True) as session:
        return [_record(r) for r in session.execute(stmt)]


def set_survey_status(survey_id: int, status: str, *, url: str | None = None) -> None:
    """Move a survey between draft, open (accepts participants and answers) and closed."""
    status = check_choice(status, models.SURVEY_STATUSES, "survey status")
    with session_scope(url) as session:
        _survey_row(session, survey_id).status = status


def set_participant_cap(survey_id: int, cap: int | None, *, url: str | None = None) -> None:
    """At most `cap` participants may start this survey (None: no cap). Those already started stay."""
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ValueError(f"participant cap must be a whole number of at least 1, or none; got {cap!r}")
    with session_scope(url) as session:
        _survey_row(session, survey_id).participant_cap = cap


def set_shared_link(survey_id: int, enabled: bool, *, url: str | None = None) -> None:
    """Turn the shared ?survey= link on or off; invitation links work either way."""
    with session_scope(url) as session:
        _survey_row(session, survey_id).shared_link = bool(enabled)


def survey_participants(survey_id: int, *, url: str | None = None) -> list[SurveyParticipant]:
    """Every participant of a survey, in the order they started, with their answer count (researchers only)."""
    answered = (
        select(func.count(models.Answer.id))
        .where(models.Answer.participant_id == models.Participant.id)
        .scalar_subquery()
    )
    invited = (
        select(func.count(models.SurveyInvitation.id))
        .where(models.SurveyInvitation.participant_id == models.Participant.id)
        .scalar_subquery()
    )
    stmt = (
        select(models.Participant, answered, invited)
        .where(models.Participant.survey_id == survey_id)
        .order_by(models.Participant.id)
    )
    with session_scope(url, readonly=True) as session:
        _survey_row(session, survey_id)
        return [
            SurveyParticipant(
                p.id,
                p.experience,
                p.strategy,
                bool(p.excluded),
                bool(n_invited),
                p.started_at,
                p.finished_at,
                n_answered,
            )
            for p, n_answered, n_invited in session.execute(stmt)
        ]


def set_participant_excluded(survey_id: int, participant_id: int, excluded: bool, *, url: str | None = None) -> None:
    """Leave a participant out of (or take them back into) every statistic and export; answers stay stored."""
    with session_scope(url) as session:
        participant = session.get(models.Participant, participant_id)
        if participant is None or participant.survey_id != survey_id:
            raise NotFoundError(f"survey {survey_id!r} has no participant {participant_id!r}")
        participant.excluded = bool(excluded)


def duplicate_survey(
    survey_id: int,
    image_paths: Sequence[str],
    *,
    title: str | None = None,
    status: str = vocabulary.DRAFT,
    url: str | None = None,
) -> str:
    """A new survey with the source's truths and positions over new image files (new public ids, no
    participants); returns its token.

    `image_paths` are the copies' paths, one per source item in position order: a copy never shares the
    source's files (app.survey_store.duplicate_image_survey writes them, each with its own bytes).
    """
    status = check_choice(status, models.SURVEY_STATUSES, "survey status")
    paths = [clean_name(p, f"duplicate item {n} image_path") for n, p in enumerate(image_paths, start=1)]
    with session_scope(url) as session:
        source = _survey_row(session, survey_id)
        new_title = _check_title(title if title is not None else f"{source.title} (copy)"[: vocabulary.TITLE_MAX_CHARS])
        truths = session.scalars(
            select(models.SurveyItem.truth)
            .where(models.SurveyItem.survey_id == survey_id)
            .order_by(models.SurveyItem.position)
        ).all()
        if len(paths) != len(truths):
            raise ValueError(f"survey {survey_id} has {len(truths)} items; got {len(paths)} image paths for its copy")
        return _add_survey(session, new_title, list(zip(paths, truths, strict=True)), source.is_demo, status)


def _items(session: Session, survey_id: int) -> list[models.SurveyItem]:
    _survey_row(session, survey_id)
    item = models.SurveyItem
    stmt = select(item).where(item.survey_id == survey_id).order_by(item.position)
    return list(session.scalars(stmt))


def survey_items_with_truth(survey_id: int, *, url: str | None = None) -> list[SurveyItem]:
    """The items in survey order with their truth (researchers only: never show this to a participant)."""
    with session_scope(url, readonly=True) as session:
        return [SurveyItem(i.id, i.public_id, i.image_path, i.truth, i.position) for i in _items(session, survey_id)]


def survey_answers(survey_id: int, *, url: str | None = None) -> list[AnswerRecord]:
    """Every answer of every participant with the truth beside it, by participant then question."""
    stmt = (
        select(
            models.Participant.id,
            models.Participant.experience,
            models.SurveyItem.position,
            models.SurveyItem.public_id,
            models.SurveyItem.truth,
            models.Answer.answer,
            models.Answer.answered_at,
        )
        .join(models.Answer, models.Answer.participant_id == models.Participant.id)
        .join(models.SurveyItem, models.SurveyItem.id == models.Answer.item_id)
        .where(models.Participant.survey_id == survey_id)
        .order_by(models.Participant.id, models.SurveyItem.position)
    )
    with session_scope(url, readonly=True) as session:
        _survey_row(session, survey_id)
        return [
            AnswerRecord(pid, exp, position + 1, public_id, truth, answer, at)
            for pid, exp, position, public_id, truth, answer, at in session.execute(stmt)
        ]


def import_responses(survey_id: int, records: Iterable[Mapping[str, Any]], *, url: str | None = None) -> ImportSummary:
    """Import answers collected elsewhere (e.g. the original study's form), all or nothing.

    Each record: participant (any label; rows with the same label are one person), question (the 1-based
    item position, or the item's public_id), answer ("real"/"synthetic"); optional experience (1..5),
    truth (checked against the item, to catch a misaligned file) and strategy. Imported participants are
    finished; their stored order is the order of their records, then any items they did not answer.
    """
    records = list(records)
    if not records:
        raise ValueError("no responses to import")
    with session_scope(url) as session:
        items = _items(session, survey_id)
        by_position = {i.position + 1: i for i in items}
        by_public_id = {i.public_id: i for i in items}
        people: dict[Any, dict[str, Any]] = {}
        for number, record in enumerate(records, start=1):
            where = f"response {number}"
            missing = {"participant", "question", "answer"} - set(record)
            if missing:
                raise ValueError(f"{where} lacks {', '.join(sorted(missing))}: {dict(record)!r}")
            question = record["question"]
            item = by_public_id.get(question) if isinstance(question, str) else by_position.get(question)
            if item is None:
                raise ValueError(f"{where}: question {question!r} is not in survey {survey_id} ({len(items)} items)")
            answer = check_choice(record["answer"], models.TRUTH_VALUES, f"{where} answer")
            if record.get("truth") is not None:
                truth = check_choice(record["truth"], models.TRUTH_VALUES, f"{where} truth")
                if truth != item.truth:
                    raise ValueError(f"{where}: truth {truth!r} disagrees with question {question!r} ({item.truth!r})")
            person = people.setdefault(record["participant"], {"experience": None, "strategy": None, "answers": {}})
            experience = check_experience(record.get("experience"))
            if experience is not None:
                if person["experience"] not in (None, experience):
                    raise ValueError(f"{where}: participant {record['participant']!r} has two experiences")
                person["experience"] = experience
            if record.get("strategy"):
                person["strategy"] = str(record["strategy"])
            if item.id in person["answers"]:
                raise ValueError(f"{where}: participant {record['participant']!r} answers {question!r} twice")
            person["answers"][item.id] = answer
        for person in people.values():
            order = list(person["answers"]) + [i.id for i in items if i.id not in person["answers"]]
            participant = models.Participant(
                survey_id=survey_id,
                resume_token=new_token(),
                experience=person["experience"],
                item_order=order,
                strategy=person["strategy"],
                finished_at=models.utcnow(),
            )
            session.add(participant)
            session.flush()
            session.add_all(
                models.Answer(participant_id=participant.id, item_id=item_id, answer=answer)
                for item_id, answer in person["answers"].items()
            )
        return ImportSummary(len(people), sum(len(p["answers"]) for p in people.values()))
