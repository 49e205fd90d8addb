"""Evaluations: the runs of the Evaluate page (caption accuracy, realism test, training-mix experiment).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Self-contained on purpose (no import of db.models): a migration describes the schema as it was at that
revision, whatever the models say later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("report_dir", sa.String(length=500), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('captions', 'realism', 'mix')", name=op.f("ck_evaluations_kind")),
        sa.CheckConstraint("state IN ('running', 'done', 'failed')", name=op.f("ck_evaluations_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.UniqueConstraint("report_dir", name=op.f("uq_evaluations_report_dir")),
    )
    op.create_index(op.f("ix_evaluations_created_at"), "evaluations", ["created_at"])


def downgrade() -> None:
    op.drop_table("evaluations")
