"""Argon2id password hashes (argon2-cffi's defaults, RFC 9106's low-memory profile)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from smtpauth_milter.core.errors import SettingError

MIN_LENGTH, MAX_LENGTH = 10, 1024
_HASHER = PasswordHasher()  # type Argon2id
# Checked against for an unknown name, so that it costs the same time as a wrong password.
_NOBODY = _HASHER.hash("no account has this password hash")


def check_new(password: str) -> str:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise SettingError(f"a password must be {MIN_LENGTH} to {MAX_LENGTH} characters long")
    if not password.isprintable():
        raise SettingError("a password must be printable text on one line")
    return password


def hash_password(password: str) -> str:
    return _HASHER.hash(check_new(password))


def verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; None (no such account) takes as long and is False."""
    try:
        _HASHER.verify(password_hash or _NOBODY, password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None
