"""Schema changes only through Alembic: upgrades are idempotent, keep data, and match the models."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, func, select
from sqlalchemy.exc import IntegrityError

from db import models
from db import repository as repo
from db.migrate import current_revision, head_revision, init_db
from db.session import get_engine, session_scope


def test_empty_database_upgrades_to_head(empty_db_url):
    assert current_revision(empty_db_url) is None
    assert init_db(empty_db_url) == head_revision() == "0006"
    assert current_revision(empty_db_url) == "0006"


def test_upgrade_again_keeps_answers_annotations_and_samples(db_url):
    token = repo.create_survey("Kept", [("a.png", "real"), ("b.png", "synthetic")], url=db_url)
    resume = repo.start_participant(token, experience=4, rng=random.Random(0), url=db_url)
    item = repo.next_unanswered_item(resume, url=db_url)
    repo.record_answer(resume, item.public_id, "real", url=db_url)
    repo.add_sample(
        image_path="samples/s.png", caption="c", model_name="demo", seed=1, steps=5, guidance=1.5, size=64, url=db_url
    )
    with session_scope(db_url) as session:
        slide = models.Slide(name="slide", path="slides/1.tiff", width=512, height=512, patch_size=256)
        session.add(slide)
        session.flush()
        session.add(models.SlideAnnotation(slide_id=slide.id, mask_path="masks/1.png", author="ann"))

    assert init_db(db_url) == head_revision()
    assert init_db(db_url) == head_revision()

    survey = repo.get_survey_by_token(token, url=db_url)
    assert [(a.answer, a.experience) for a in repo.survey_answers(survey.id, url=db_url)] == [("real", 4)]
    assert repo.count_samples(url=db_url) == 1
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count(models.SlideAnnotation.id))) == 1


def _diff(url: str, metadata: MetaData) -> list:
    with get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)


def test_models_match_migrations(db_url):
    """Fails when someone changes db/models.py without adding a migration (`alembic check`)."""
    assert _diff(db_url, models.Base.metadata) == []


def test_comparison_notices_a_forgotten_migration(sqlite_url):
    metadata = MetaData(naming_convention=models.NAMING_CONVENTION)
    for table in models.Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    sa.Table("samples", metadata, sa.Column("rating", sa.Integer()), extend_existing=True)
    diff = _diff(sqlite_url, metadata)
    assert [(d[0], d[3].name) for d in diff] == [("add_column", "rating")]


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(sqlite_url):
    with get_engine(sqlite_url).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_foreign_keys_are_enforced(db_url):
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as session:
            session.add(models.SlideAnnotation(slide_id=12345, mask_path="masks/x.png", author="a"))


def test_upgrade_to_0003_keeps_shared_links_on_and_participants_included(empty_db_url):
    from db.migrate import upgrade

    upgrade(empty_db_url, "0002")
    with get_engine(empty_db_url).begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO surveys (id, token, title, is_demo, status, created_at) "
                "VALUES (1, 'tok', 'Old', false, 'open', CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO participants (id, survey_id, resume_token, item_order, started_at) "
                "VALUES (1, 1, 'res', '[]', CURRENT_TIMESTAMP)"
            )
        )
    assert upgrade(empty_db_url) == head_revision()
    survey = repo.get_survey(1, url=empty_db_url)
    assert (survey.shared_link, survey.participant_cap, survey.participant_count) == (True, None, 1)
    assert [p.excluded for p in repo.survey_participants(1, url=empty_db_url)] == [False]
    assert repo.list_invitations(1, url=empty_db_url) == []
