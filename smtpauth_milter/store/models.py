"""The store's tables as typed SQLAlchemy 2 models. The schema is owned by migrations/."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

IntPk = Annotated[int, mapped_column(Integer, primary_key=True)]
SettingKey = Annotated[str, mapped_column(String(64), primary_key=True)]
SettingValue = Annotated[str, mapped_column(Text, nullable=False)]
AddressText = Annotated[str, mapped_column(String(320), nullable=False)]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Domain(Base):
    """A local domain, stored lower-case in its ASCII (IDNA) form.

    An alias domain points at its target (``alias_of_id``); a target is never
    an alias itself, and cannot be removed while aliases point at it.
    """

    __tablename__ = "domain"

    id: Mapped[IntPk]
    name: Mapped[str] = mapped_column(String(253), unique=True, nullable=False)
    alias_of_id: Mapped[int | None] = mapped_column(ForeignKey("domain.id"), nullable=True)
    alias_of: Mapped[Domain | None] = relationship(remote_side="Domain.id")
    settings: Mapped[list[DomainSetting]] = relationship(
        back_populates="domain", cascade="all, delete-orphan", passive_deletes=True
    )


class GlobalSetting(Base):
    __tablename__ = "global_setting"

    key: Mapped[SettingKey]
    value: Mapped[SettingValue]


class DomainSetting(Base):
    """A per-domain override of a domain-scoped setting."""

    __tablename__ = "domain_setting"

    domain_id: Mapped[int] = mapped_column(
        ForeignKey("domain.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[SettingKey]
    value: Mapped[SettingValue]
    domain: Mapped[Domain] = relationship(back_populates="settings")


class TrustedNetwork(Base):
    __tablename__ = "trusted_network"

    id: Mapped[IntPk]
    cidr: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    comment: Mapped[str] = mapped_column(Text, nullable=False, default="")


class SendAsGrant(Base):
    """``login`` may send as ``target``: an exact address or ``@domain``."""

    __tablename__ = "send_as_grant"
    __table_args__ = (UniqueConstraint("login", "target", name="uq_send_as_grant_login_target"),)

    id: Mapped[IntPk]
    login: Mapped[AddressText]
    target: Mapped[AddressText]


class StoreState(Base):
    """One row whose serial every write bumps: milters poll it to know when to reload."""

    __tablename__ = "store_state"

    id: Mapped[IntPk]
    serial: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class SchemaCompat(Base):
    """One row: the schema revision the store is at, and the oldest smtpauth-milter
    version that still decides correctly on it (written by ``db upgrade``).

    Kept by every future schema, so code that does not know a newer revision can
    still read whether it may use it.
    """

    __tablename__ = "schema_compat"

    id: Mapped[IntPk]
    revision: Mapped[str] = mapped_column(String(64), nullable=False)
    readable_by: Mapped[str] = mapped_column(String(32), nullable=False)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a naive datetime cannot be stored as UTC")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AuditEntry(Base):
    """One change made through the CLI or ``import``: when, who, which command, old -> new.

    Written in the same transaction as the change; never read by the milter.
    """

    __tablename__ = "audit_entry"

    id: Mapped[IntPk]
    at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, index=True)
    os_user: Mapped[str] = mapped_column(String(128), nullable=False)
    command: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    domain: Mapped[str | None] = mapped_column(String(253), nullable=True, index=True)
    subject: Mapped[str] = mapped_column(Text, nullable=False)
    old: Mapped[str | None] = mapped_column(Text, nullable=True)
    new: Mapped[str | None] = mapped_column(Text, nullable=True)


class ConsoleAdmin(Base):
    """An account of the web console: a server admin, or a domain admin of some domains.

    ``password_hash`` is an Argon2id hash (PHC string); the store never sees a password.
    """

    __tablename__ = "console_admin"

    id: Mapped[IntPk]
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # "server" or "domain"
    domains: Mapped[list[ConsoleAdminDomain]] = relationship(
        back_populates="admin",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ConsoleAdminDomain.domain",
    )


class ConsoleAdminDomain(Base):
    """A domain a domain admin manages (its ASCII name; it may be removed and added again)."""

    __tablename__ = "console_admin_domain"

    admin_id: Mapped[int] = mapped_column(
        ForeignKey("console_admin.id", ondelete="CASCADE"), primary_key=True
    )
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    admin: Mapped[ConsoleAdmin] = relationship(back_populates="domains")


# --- stolen logins (docs/policy.md#stolen-logins) ------------------------------
# login_count, login_client and login_frozen are the milter's state: the only
# tables it writes (docs/operations.md#the-milters-state-least-privilege).
# login_exempt is a setting: written by the CLI only.

LoginText = Annotated[str, mapped_column(String(320), primary_key=True)]


class LoginCount(Base):
    """Events of one kind (messages, recipients, mismatches) of one login in one bucket
    of ``width`` seconds (a window of 60 buckets: core/window.py), summed over milters."""

    __tablename__ = "login_count"

    login: Mapped[LoginText]
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    width: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, nullable=False)


class LoginClient(Base):
    """A client address (IPv6: its /64) that one login used in one bucket."""

    __tablename__ = "login_client"

    login: Mapped[LoginText]
    width: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)


class LoginFrozen(Base):
    """A login frozen by a milter (``cause``: the limit) or an admin (``cause``: admin).

    Unfreezing keeps the row with ``unfrozen_at``/``unfrozen_by`` set, so every
    milter can log who unfroze it; a later freeze reuses the row.
    """

    __tablename__ = "login_frozen"

    login: Mapped[LoginText]
    frozen_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    cause: Mapped[str] = mapped_column(String(64), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    frozen_by: Mapped[str] = mapped_column(String(128), nullable=False)
    unfrozen_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    unfrozen_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class LoginExempt(Base):
    """A login no limit counts (a relay, application or mailing-list login)."""

    __tablename__ = "login_exempt"

    login: Mapped[LoginText]
    comment: Mapped[str] = mapped_column(Text, nullable=False, default="")


class DecisionCount(Base):
    """Recipient and header decisions of one rule and action, about one domain (the domain
    whose settings decided; "" for none), in one hour, summed over milters (the console's
    Dashboard)."""

    __tablename__ = "decision_count"

    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds // 3600
    rule: Mapped[str] = mapped_column(String(40), primary_key=True)
    action: Mapped[str] = mapped_column(String(16), primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)


class RefusedCount(Base):
    """Refused decisions of one login or client address (``kind``) in one hour."""

    __tablename__ = "refused_count"

    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # "login" or "client"
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)
