"""Stolen logins: per-login counters in time buckets, frozen logins, exempt logins.

Going down drops the four tables: counts, freezes and exemptions are lost.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Older versions would ignore frozen logins and the login-max-* limits (shipped
# on): they would accept mail this version refuses. Only versions that know
# them may decide on this store: the release that ships this migration (this
# development version; set it to that release's version when it is cut).
readable_by: str = "0.3.0.dev0"


def upgrade() -> None:
    op.create_table(
        "login_count",
        sa.Column("login", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("login", "kind", "width", "bucket", name=op.f("pk_login_count")),
    )
    op.create_table(
        "login_client",
        sa.Column("login", sa.String(320), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("login", "width", "bucket", "client", name=op.f("pk_login_client")),
    )
    op.create_table(
        "login_frozen",
        sa.Column("login", sa.String(320), nullable=False),
        sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cause", sa.String(64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("frozen_by", sa.String(128), nullable=False),
        sa.Column("unfrozen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unfrozen_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("login", name=op.f("pk_login_frozen")),
    )
    op.create_table(
        "login_exempt",
        sa.Column("login", sa.String(320), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("login", name=op.f("pk_login_exempt")),
    )


def downgrade() -> None:
    for name in ("login_exempt", "login_frozen", "login_client", "login_count"):
        op.drop_table(name)
