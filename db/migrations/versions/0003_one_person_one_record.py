"""One person, one record: one-use survey invitations, a participant cap, the shared link switch, exclusions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Self-contained on purpose (no import of db.models): a migration describes the schema as it was at that
revision, whatever the models say later. Columns are added with server defaults, so existing surveys keep
their shared link and existing participants stay included.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("surveys", sa.Column("participant_cap", sa.Integer(), nullable=True))
    op.add_column("surveys", sa.Column("shared_link", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.add_column("participants", sa.Column("excluded", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "survey_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("survey_id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"], ["participants.id"], name=op.f("fk_survey_invitations_participant_id_participants")
        ),
        sa.ForeignKeyConstraint(["survey_id"], ["surveys.id"], name=op.f("fk_survey_invitations_survey_id_surveys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_invitations")),
        sa.UniqueConstraint("participant_id", name=op.f("uq_survey_invitations_participant_id")),
        sa.UniqueConstraint("token", name=op.f("uq_survey_invitations_token")),
    )
    op.create_index(op.f("ix_survey_invitations_survey_id"), "survey_invitations", ["survey_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_survey_invitations_survey_id"), table_name="survey_invitations")
    op.drop_table("survey_invitations")
    with op.batch_alter_table("participants") as batch:
        batch.drop_column("excluded")
    with op.batch_alter_table("surveys") as batch:
        batch.drop_column("shared_link")
        batch.drop_column("participant_cap")
