"""Slides page: what a slide is (levels, mpp, kind), where it came from (provenance) and who added it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10

Self-contained on purpose (no import of db.models): a migration describes the schema as it was at that
revision, whatever the models say later. The slides table of 0001 was never written by a released page; its
rows (if any) were stitched slides, so they keep kind "stitched" and one level. patch_size becomes optional:
generated and registered slides have no patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("slides") as batch:
        batch.add_column(sa.Column("levels", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("mpp", sa.Float(), nullable=True))
        batch.add_column(sa.Column("kind", sa.String(length=16), server_default="stitched", nullable=False))
        batch.add_column(sa.Column("provenance", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(length=200), nullable=True))
        batch.alter_column("patch_size", existing_type=sa.Integer(), nullable=True)
        batch.create_check_constraint(op.f("ck_slides_levels_positive"), "levels > 0")
        batch.create_check_constraint(op.f("ck_slides_mpp_positive"), "mpp IS NULL OR mpp > 0")
        batch.create_check_constraint(op.f("ck_slides_kind"), "kind IN ('stitched', 'generated', 'registered')")


def downgrade() -> None:
    # 0004 requires a patch size: slides without one (generated, registered) get their width.
    op.execute("UPDATE slides SET patch_size = width WHERE patch_size IS NULL")
    with op.batch_alter_table("slides") as batch:
        batch.drop_constraint(op.f("ck_slides_kind"), type_="check")
        batch.drop_constraint(op.f("ck_slides_mpp_positive"), type_="check")
        batch.drop_constraint(op.f("ck_slides_levels_positive"), type_="check")
        batch.alter_column("patch_size", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("created_by")
        batch.drop_column("provenance")
        batch.drop_column("kind")
        batch.drop_column("mpp")
        batch.drop_column("levels")
