"""Console accounts: server and domain admins of the web console, and their domains.

Self-contained (only its own tables), so that it can follow any revision.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# New tables the milter never reads: its decisions are those of the revision before
# (0005, which needs 0.3.0.dev0).
readable_by: str = "0.3.0.dev0"


def upgrade() -> None:
    op.create_table(
        "console_admin",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_admin")),
        sa.UniqueConstraint("name", name=op.f("uq_console_admin_name")),
    )
    op.create_table(
        "console_admin_domain",
        sa.Column("admin_id", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.ForeignKeyConstraint(
            ["admin_id"],
            ["console_admin.id"],
            name=op.f("fk_console_admin_domain_admin_id_console_admin"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("admin_id", "domain", name=op.f("pk_console_admin_domain")),
    )


def downgrade() -> None:
    op.drop_table("console_admin_domain")
    op.drop_table("console_admin")
