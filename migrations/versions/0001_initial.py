"""Initial schema: domains, settings, trusted networks, send-as grants, store serial.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The first schema: every version reads it.
readable_by: str = "0.1.0"


def upgrade() -> None:
    op.create_table(
        "domain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain")),
        sa.UniqueConstraint("name", name=op.f("uq_domain_name")),
    )
    op.create_table(
        "global_setting",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_global_setting")),
    )
    op.create_table(
        "domain_setting",
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domain.id"],
            name=op.f("fk_domain_setting_domain_id_domain"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("domain_id", "key", name=op.f("pk_domain_setting")),
    )
    op.create_table(
        "trusted_network",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(length=64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trusted_network")),
        sa.UniqueConstraint("cidr", name=op.f("uq_trusted_network_cidr")),
    )
    op.create_table(
        "send_as_grant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(length=320), nullable=False),
        sa.Column("target", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_send_as_grant")),
        sa.UniqueConstraint("login", "target", name="uq_send_as_grant_login_target"),
    )
    store_state = op.create_table(
        "store_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_state")),
    )
    op.bulk_insert(store_state, [{"id": 1, "serial": 1}])


def downgrade() -> None:
    op.drop_table("store_state")
    op.drop_table("send_as_grant")
    op.drop_table("trusted_network")
    op.drop_table("domain_setting")
    op.drop_table("global_setting")
    op.drop_table("domain")
