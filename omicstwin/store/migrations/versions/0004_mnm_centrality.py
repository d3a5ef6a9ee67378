"""The multicellular network model and the cell-type centrality of each study.

- ``mnm_edges``: the study's MNM (Li et al. 2022), one row per time point x sender x receiver
  with the number of regulators and their ``;``-joined names (``mnm.parquet``);
- ``cell_type_centrality``: cell types ranked by eigenvector centrality of the MNM
  (``centrality.parquet``).

Study-level tables (no patient link), deleted with their study. Studies published before this
revision have no rows until they are published again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision (new tables only: existing rows and grants untouched)."""
    op.create_table(
        "mnm_edges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("source_cell_type", sa.String(length=128), nullable=False),
        sa.Column("target_cell_type", sa.String(length=128), nullable=False),
        sa.Column("n_regulators", sa.Integer(), nullable=False),
        sa.Column("regulators", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mnm_edges", schema=None) as batch_op:
        batch_op.create_index("ix_mnm_edges_study_time", ["study_id", "time"], unique=False)

    op.create_table(
        "cell_type_centrality",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("cell_type", sa.String(length=128), nullable=False),
        sa.Column("centrality", sa.Double(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("cell_type_centrality", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cell_type_centrality_study_rank", ["study_id", "rank"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("cell_type_centrality", schema=None) as batch_op:
        batch_op.drop_index("ix_cell_type_centrality_study_rank")
    op.drop_table("cell_type_centrality")
    with op.batch_alter_table("mnm_edges", schema=None) as batch_op:
        batch_op.drop_index("ix_mnm_edges_study_time")
    op.drop_table("mnm_edges")
