"""Initial schema: model registry, samples, caption presets, surveys (items, participants, answers), slides.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Self-contained on purpose (no import of db.models): a migration describes the schema as it was at that
revision, whatever the models say later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "model_entries",
        _id(),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint("kind IN ('demo', 'user')", name=op.f("ck_model_entries_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_entries")),
        sa.UniqueConstraint("name", name=op.f("uq_model_entries_name")),
    )

    op.create_table(
        "samples",
        _id(),
        sa.Column("image_path", sa.String(length=500), nullable=False),
        sa.Column("caption", sa.Text(), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_fingerprint", sa.String(length=128), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("guidance", sa.Float(), nullable=False),
        sa.Column("scheduler", sa.String(length=32), nullable=False),
        sa.Column("eta", sa.Float(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.CheckConstraint("size > 0", name=op.f("ck_samples_size_positive")),
        sa.CheckConstraint("steps > 0", name=op.f("ck_samples_steps_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_samples")),
        sa.UniqueConstraint("image_path", name=op.f("uq_samples_image_path")),
    )
    op.create_index(op.f("ix_samples_created_at"), "samples", ["created_at"])
    op.create_index("ix_samples_model_name_created_at", "samples", ["model_name", "created_at"])
    op.create_index(op.f("ix_samples_run_id"), "samples", ["run_id"])

    op.create_table(
        "caption_presets",
        _id(),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("caption", sa.Text(), nullable=False),
        sa.Column("levels", sa.JSON(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caption_presets")),
        sa.UniqueConstraint("name", name=op.f("uq_caption_presets_name")),
    )

    op.create_table(
        "surveys",
        _id(),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("is_demo", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint("status IN ('draft', 'open', 'closed')", name=op.f("ck_surveys_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_surveys")),
        sa.UniqueConstraint("token", name=op.f("uq_surveys_token")),
    )

    op.create_table(
        "survey_items",
        _id(),
        sa.Column("survey_id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=64), nullable=False),
        sa.Column("image_path", sa.String(length=500), nullable=False),
        sa.Column("truth", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.CheckConstraint("truth IN ('real', 'synthetic')", name=op.f("ck_survey_items_truth")),
        sa.CheckConstraint("position >= 0", name=op.f("ck_survey_items_position_nonnegative")),
        sa.ForeignKeyConstraint(["survey_id"], ["surveys.id"], name=op.f("fk_survey_items_survey_id_surveys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_items")),
        sa.UniqueConstraint("public_id", name=op.f("uq_survey_items_public_id")),
        sa.UniqueConstraint("survey_id", "position", name=op.f("uq_survey_items_survey_id_position")),
    )
    op.create_index(op.f("ix_survey_items_survey_id"), "survey_items", ["survey_id"])

    op.create_table(
        "participants",
        _id(),
        sa.Column("survey_id", sa.Integer(), nullable=False),
        sa.Column("resume_token", sa.String(length=64), nullable=False),
        sa.Column("experience", sa.Integer(), nullable=True),
        sa.Column("item_order", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.Text(), nullable=True),
        _timestamp("started_at"),
        _timestamp("finished_at", nullable=True),
        sa.CheckConstraint(
            "experience IS NULL OR (experience >= 1 AND experience <= 5)",
            name=op.f("ck_participants_experience_range"),
        ),
        sa.ForeignKeyConstraint(["survey_id"], ["surveys.id"], name=op.f("fk_participants_survey_id_surveys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_participants")),
        sa.UniqueConstraint("resume_token", name=op.f("uq_participants_resume_token")),
    )
    op.create_index(op.f("ix_participants_survey_id"), "participants", ["survey_id"])

    op.create_table(
        "answers",
        _id(),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("answer", sa.String(length=16), nullable=False),
        _timestamp("answered_at"),
        sa.CheckConstraint("answer IN ('real', 'synthetic')", name=op.f("ck_answers_answer")),
        sa.ForeignKeyConstraint(["item_id"], ["survey_items.id"], name=op.f("fk_answers_item_id_survey_items")),
        sa.ForeignKeyConstraint(
            ["participant_id"], ["participants.id"], name=op.f("fk_answers_participant_id_participants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answers")),
        sa.UniqueConstraint("participant_id", "item_id", name=op.f("uq_answers_participant_id_item_id")),
    )
    op.create_index(op.f("ix_answers_item_id"), "answers", ["item_id"])

    op.create_table(
        "slides",
        _id(),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("patch_size", sa.Integer(), nullable=False),
        sa.Column("caption", sa.Text(), nullable=True),
        _timestamp("created_at"),
        sa.CheckConstraint("patch_size > 0", name=op.f("ck_slides_patch_size_positive")),
        sa.CheckConstraint("width > 0 AND height > 0", name=op.f("ck_slides_size_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slides")),
        sa.UniqueConstraint("path", name=op.f("uq_slides_path")),
    )

    op.create_table(
        "slide_annotations",
        _id(),
        sa.Column("slide_id", sa.Integer(), nullable=False),
        sa.Column("mask_path", sa.String(length=500), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(["slide_id"], ["slides.id"], name=op.f("fk_slide_annotations_slide_id_slides")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slide_annotations")),
        sa.UniqueConstraint("mask_path", name=op.f("uq_slide_annotations_mask_path")),
    )
    op.create_index(op.f("ix_slide_annotations_slide_id"), "slide_annotations", ["slide_id"])


def downgrade() -> None:
    # Children before parents; drop_table drops the table's indexes with it.
    for table in (
        "slide_annotations",
        "slides",
        "answers",
        "participants",
        "survey_items",
        "surveys",
        "caption_presets",
        "samples",
        "model_entries",
    ):
        op.drop_table(table)
