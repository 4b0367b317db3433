"""The console's shipped password hashes: Argon2id with argon2-cffi's defaults (RFC 9106's
low-memory profile). The console tests hash with the cheapest parameters instead
(tests/console/conftest.py); this module is outside their reach and checks the real ones."""

from __future__ import annotations

from argon2 import PasswordHasher

from smtpauth_milter.admin.console import passwords

SHIPPED = "$argon2id$v=19$m=65536,t=3,p=4$"


def test_a_new_password_is_hashed_with_argon2_cffis_defaults() -> None:
    defaults = PasswordHasher()
    assert (defaults.time_cost, defaults.memory_cost, defaults.parallelism) == (3, 65536, 4)
    hashed = passwords.hash_password("a long enough password")
    assert hashed.startswith(SHIPPED), hashed
    assert passwords.verify(hashed, "a long enough password")
    assert not passwords.verify(hashed, "another long password")


def test_an_unknown_name_is_checked_against_a_hash_of_the_same_cost() -> None:
    """verify(None, ...) takes as long as a wrong password: its hash has the same parameters."""
    assert passwords._NOBODY.startswith(SHIPPED), passwords._NOBODY
    assert not passwords.verify(None, "no account has this password hash")
