"""Per-patient p- and q-values of the personalised targets.

``patient_targets.p_value`` / ``q_value``: the patient screen's own p (null: the control
donors' screens) and its Benjamini-Hochberg q within the patient (``patients.parquet``).
Nullable: rows published before this revision have none until the study is published again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision (plain ADD COLUMN: no table copy, grants untouched)."""
    op.add_column("patient_targets", sa.Column("p_value", sa.Double(), nullable=True))
    op.add_column("patient_targets", sa.Column("q_value", sa.Double(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("patient_targets", schema=None) as batch_op:
        batch_op.drop_column("q_value")
        batch_op.drop_column("p_value")
