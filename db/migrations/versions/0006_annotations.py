"""Annotate page: one row per slide, region, annotator and class (region box in full-resolution pixels, class
id, pixel and component counts, done, revision).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10

Self-contained on purpose (no import of db.models). Rows of the old skeletal table (if any) keep their mask
path and author; they get region 0, 0, 0, 0 and class 4 (Glomeruli), which the page shows nowhere, so a
researcher can still find and move them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_INTEGERS = (
    ("class_id", "4"),
    ("region_x", "0"),
    ("region_y", "0"),
    ("region_w", "0"),
    ("region_h", "0"),
    ("pixels", "0"),
    ("components", "0"),
)


def upgrade() -> None:
    with op.batch_alter_table("slide_annotations") as batch:
        for name, default in NEW_INTEGERS:
            batch.add_column(sa.Column(name, sa.Integer(), server_default=default, nullable=False))
        batch.add_column(sa.Column("done", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("revision", sa.Integer(), server_default="1", nullable=False))
        batch.create_unique_constraint(
            "uq_slide_annotations_region_author_class",
            ["slide_id", "region_x", "region_y", "region_w", "region_h", "author", "class_id"],
        )
        batch.create_check_constraint(
            op.f("ck_slide_annotations_region"),
            "region_x >= 0 AND region_y >= 0 AND region_w >= 0 AND region_h >= 0",
        )
        batch.create_check_constraint(op.f("ck_slide_annotations_class_id"), "class_id >= 0 AND class_id <= 7")
        batch.create_check_constraint(op.f("ck_slide_annotations_counts"), "pixels >= 0 AND components >= 0")
        batch.create_index("ix_slide_annotations_slide_author", ["slide_id", "author"])


def downgrade() -> None:
    with op.batch_alter_table("slide_annotations") as batch:
        batch.drop_index("ix_slide_annotations_slide_author")
        batch.drop_constraint(op.f("ck_slide_annotations_counts"), type_="check")
        batch.drop_constraint(op.f("ck_slide_annotations_class_id"), type_="check")
        batch.drop_constraint(op.f("ck_slide_annotations_region"), type_="check")
        batch.drop_constraint("uq_slide_annotations_region_author_class", type_="unique")
        batch.drop_column("revision")
        batch.drop_column("done")
        for name, _ in reversed(NEW_INTEGERS):
            batch.drop_column(name)
