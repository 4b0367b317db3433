"""Audit trail: one row per change made through the CLI or import.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# A new table the milter never reads: its decisions are unchanged.
readable_by: str = "0.1.0"


def upgrade() -> None:
    op.create_table(
        "audit_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("os_user", sa.String(length=128), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("old", sa.Text(), nullable=True),
        sa.Column("new", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entry")),
    )
    with op.batch_alter_table("audit_entry") as batch:
        batch.create_index(batch.f("ix_audit_entry_at"), ["at"], unique=False)
        batch.create_index(batch.f("ix_audit_entry_domain"), ["domain"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_entry") as batch:
        batch.drop_index(batch.f("ix_audit_entry_domain"))
        batch.drop_index(batch.f("ix_audit_entry_at"))
    op.drop_table("audit_entry")
