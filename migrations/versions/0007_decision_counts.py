"""Decision counts: what every milter decided, per hour, for the console's Dashboard.

Self-contained (only its own tables), so that it can follow any revision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# New tables a milter of the revision before never reads: its decisions are those of 0005.
readable_by: str = "0.3.0.dev0"


def upgrade() -> None:
    op.create_table(
        "decision_count",
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("rule", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "rule", "action", "domain", name=op.f("pk_decision_count")),
    )
    op.create_table(
        "refused_count",
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "kind", "value", "domain", name=op.f("pk_refused_count")),
    )


def downgrade() -> None:
    op.drop_table("refused_count")
    op.drop_table("decision_count")
