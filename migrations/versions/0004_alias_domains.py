"""Alias domains: a local domain may point at another one (its target).

Going down drops the relation: every alias domain becomes a standalone local
domain with only its own overrides.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Older versions would read an alias domain as a standalone one: without its
# target's overrides (require-auth-local, require-sender-match...), so more
# leniently. Only versions that know the relation may decide on this store: the
# 0.2.0 release (this development version; raise to "0.2.0" with the release).
readable_by: str = "0.2.0"


def upgrade() -> None:
    with op.batch_alter_table("domain") as batch:
        batch.add_column(sa.Column("alias_of_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_domain_alias_of_id_domain"), "domain", ["alias_of_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("domain") as batch:
        batch.drop_constraint(batch.f("fk_domain_alias_of_id_domain"), type_="foreignkey")
        batch.drop_column("alias_of_id")
