"""Key lifetimes, grants bound to the patient record, retired pseudonyms.

- ``api_keys.expires_at`` (None: never expires) and ``api_keys.last_used_at``;
- ``retired_pseudonyms``: patient ids whose record was deleted, so that a later study cannot
  silently give the same pseudonym (and the grants that pointed at it) to another person;
- ``grants.patient_id`` becomes a foreign key to ``patients.patient_id`` (ON DELETE CASCADE,
  ON UPDATE CASCADE): a grant goes when its record goes and follows a renamed record. Grants
  that point at no live record (left behind by earlier versions) are deleted first and their
  pseudonyms retired.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FK_NAME = "fk_grants_patient_id_patients"
DANGLING_REASON = "grant without a live record removed by schema upgrade 0002"


def upgrade() -> None:
    """Apply this revision."""
    # Plain ADD COLUMN (no table copy): on SQLite with foreign_keys=ON, recreating api_keys
    # would delete every grant through the key_id cascade.
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    retired = op.create_table(
        "retired_pseudonyms",
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("patient_id"),
    )
    _retire_dangling_grants(retired)
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_foreign_key(
            FK_NAME,
            "patients",
            ["patient_id"],
            ["patient_id"],
            ondelete="CASCADE",
            onupdate="CASCADE",
        )


def _retire_dangling_grants(retired: sa.Table) -> None:
    bind = op.get_bind()
    grants = sa.table("grants", sa.column("patient_id", sa.String))
    patients = sa.table("patients", sa.column("patient_id", sa.String))
    dangling = ~sa.exists().where(patients.c.patient_id == grants.c.patient_id)
    pseudonyms = sorted(
        {row[0] for row in bind.execute(sa.select(grants.c.patient_id).where(dangling))}
    )
    if not pseudonyms:
        return
    now = datetime.now(UTC)
    op.bulk_insert(
        retired,
        [
            {"patient_id": p, "study_id": None, "retired_at": now, "reason": DANGLING_REASON}
            for p in pseudonyms
        ],
    )
    bind.execute(sa.delete(grants).where(dangling))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_constraint(FK_NAME, type_="foreignkey")
    op.drop_table("retired_pseudonyms")
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), not a table copy (see upgrade)
    op.drop_column("api_keys", "last_used_at")
    op.drop_column("api_keys", "expires_at")
