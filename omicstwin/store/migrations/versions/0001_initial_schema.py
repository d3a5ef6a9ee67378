"""Initial schema: studies, rankings, patient twin records, keys, grants, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_name", sa.String(length=128), nullable=True),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "patient_mappings",
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("donor", sa.String(length=128), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("external_ref_hash", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("study_id", "donor"),
        sa.UniqueConstraint("patient_id"),
    )
    op.create_table(
        "studies",
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_schema_version", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("cohort", sa.Text(), nullable=True),
        sa.Column("case_label", sa.String(length=128), nullable=True),
        sa.Column("control_label", sa.String(length=128), nullable=True),
        sa.Column("cell_types", sa.Text(), nullable=False),
        sa.Column("time_points", sa.Text(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("run_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("study_id"),
    )
    op.create_table(
        "context_targets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("off_target", sa.Double(), nullable=True),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.Column("q_value", sa.Double(), nullable=True),
        sa.Column("cell_type", sa.String(length=128), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=True),
        sa.Column("genes", sa.String(length=512), nullable=True),
        sa.Column("dose", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("context_targets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_context_targets_ctx_rank", ["study_id", "cell_type", "time", "rank"], unique=False
        )
        batch_op.create_index("ix_context_targets_genes", ["genes"], unique=False)

    op.create_table(
        "disease_genes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("off_target", sa.Double(), nullable=True),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.Column("q_value", sa.Double(), nullable=True),
        sa.Column("cell_type", sa.String(length=128), nullable=True),
        sa.Column("time", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("disease_genes", schema=None) as batch_op:
        batch_op.create_index("ix_disease_genes_name", ["name"], unique=False)
        batch_op.create_index("ix_disease_genes_study_rank", ["study_id", "rank"], unique=False)

    op.create_table(
        "drugs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("drug_name", sa.String(length=512), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("off_target", sa.Double(), nullable=True),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.Column("q_value", sa.Double(), nullable=True),
        sa.Column("cell_type", sa.String(length=128), nullable=True),
        sa.Column("time", sa.Double(), nullable=True),
        sa.Column("genes", sa.String(length=2048), nullable=True),
        sa.Column("dose", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("drugs", schema=None) as batch_op:
        batch_op.create_index("ix_drugs_study_rank", ["study_id", "rank"], unique=False)

    op.create_table(
        "grants",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id", "patient_id"),
    )
    op.create_table(
        "patients",
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("donor", sa.String(length=128), nullable=False),
        sa.Column("arm", sa.String(length=32), nullable=False),
        sa.Column("time_points", sa.Text(), nullable=False),
        sa.Column("external_ref_hash", sa.String(length=256), nullable=True),
        sa.Column("state_summary", sa.Text(), nullable=False),
        sa.Column("n_targets", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("patient_id"),
        sa.UniqueConstraint("study_id", "donor", name="uq_patients_study_donor"),
    )
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patients_study_id"), ["study_id"], unique=False)

    op.create_table(
        "targets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("off_target", sa.Double(), nullable=True),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.Column("q_value", sa.Double(), nullable=True),
        sa.Column("cell_type", sa.String(length=128), nullable=True),
        sa.Column("time", sa.Double(), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=True),
        sa.Column("genes", sa.String(length=512), nullable=True),
        sa.Column("dose", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.create_index("ix_targets_genes", ["genes"], unique=False)
        batch_op.create_index("ix_targets_study_rank", ["study_id", "rank"], unique=False)

    op.create_table(
        "patient_targets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("cell_type", sa.String(length=128), nullable=True),
        sa.Column("time", sa.Double(), nullable=True),
        sa.Column("reversal_score", sa.Double(), nullable=True),
        sa.Column("study_name", sa.String(length=512), nullable=True),
        sa.Column("study_rank", sa.Integer(), nullable=True),
        sa.Column("study_score", sa.Double(), nullable=True),
        sa.Column("study_q_value", sa.Double(), nullable=True),
        sa.Column("context_rank", sa.Integer(), nullable=True),
        sa.Column("context_q_value", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.patient_id"], onupdate="CASCADE", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("patient_targets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_patient_targets_patient_rank", ["patient_id", "rank"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_patient_targets_study_id"), ["study_id"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("patient_targets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_targets_study_id"))
        batch_op.drop_index("ix_patient_targets_patient_rank")

    op.drop_table("patient_targets")
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.drop_index("ix_targets_study_rank")
        batch_op.drop_index("ix_targets_genes")

    op.drop_table("targets")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patients_study_id"))

    op.drop_table("patients")
    op.drop_table("grants")
    with op.batch_alter_table("drugs", schema=None) as batch_op:
        batch_op.drop_index("ix_drugs_study_rank")

    op.drop_table("drugs")
    with op.batch_alter_table("disease_genes", schema=None) as batch_op:
        batch_op.drop_index("ix_disease_genes_study_rank")
        batch_op.drop_index("ix_disease_genes_name")

    op.drop_table("disease_genes")
    with op.batch_alter_table("context_targets", schema=None) as batch_op:
        batch_op.drop_index("ix_context_targets_genes")
        batch_op.drop_index("ix_context_targets_ctx_rank")

    op.drop_table("context_targets")
    op.drop_table("studies")
    op.drop_table("patient_mappings")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_patient_id"))
        batch_op.drop_index(batch_op.f("ix_audit_at"))

    op.drop_table("audit")
    op.drop_table("api_keys")
