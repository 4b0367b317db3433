"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
# The oldest smtpauth-milter version that may still read a store at this
# revision. `db upgrade` records it in the store; an older milter that does not
# know this revision keeps deciding on the store only if its version is at least
# this one. Older code ignores what it does not know, so keep the rule honest:
# - Leave it as the previous revision's when the change cannot make older code
#   decide differently: a table or column it never reads, an index, a setting
#   whose absence older code already treats the strict way.
# - Raise it to this release's version (e.g. "0.3.0") when older code would
#   decide wrongly or more leniently: new rows or columns that refuse, restrict
#   or re-route mail; a changed meaning or format of a value it reads; renamed
#   or dropped tables or columns it reads. When in doubt, raise it: the older
#   milters then tempfail (mail waits) instead of accepting what they should not.
# - Never rename or drop alembic_version, store_state.serial or schema_compat:
#   every version reads them to find out whether it may read the rest.
# - Never lower it below a previous revision's.
# - A new setting key that can refuse mail older versions would accept needs a
#   migration too (even an empty one) raising this: older code ignores it.
readable_by: str = "FILL IN"


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
