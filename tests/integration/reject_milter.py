"""A tiny pymilter milter that proves the sandbox wiring; run as a subprocess.

    python reject_milter.py SOCKET        (libmilter notation: inet:PORT@HOST, unix:/path)

- RCPT TO ``blocked@example.net``: ``550 5.7.1 blocked by test milter``;
- RCPT TO ``whoami@example.net``: ``451 4.7.1 login=<{auth_authen} seen at MAIL>``
  (``login=<>`` when the macro was absent), so a test can read what Postfix sent;
- everything else continues.

It relies on Postfix's MAIL macros (contrib/postfix/main.cf's
``milter_mail_macros``), not on setsymlist (broken in pymilter 1.0.5 on Python 3).
"""

from __future__ import annotations

import sys

import Milter

BLOCKED = "blocked@example.net"
WHOAMI = "whoami@example.net"
CONTINUE: int = Milter.CONTINUE
REJECT: int = Milter.REJECT
TEMPFAIL: int = Milter.TEMPFAIL


def bare(address: str) -> str:
    return address.strip().strip("<>").lower()


class RejectMilter(Milter.Base):  # type: ignore[misc]
    def __init__(self) -> None:
        self.login: str | None = None

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.login = self.getsymval("{auth_authen}")
        return CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        rcpt = bare(to)
        if rcpt == BLOCKED:
            self.setreply("550", "5.7.1", "blocked by test milter")
            return REJECT
        if rcpt == WHOAMI:
            login = (self.login or "").replace("%", "%%")
            self.setreply("451", "4.7.1", f"login=<{login}>")
            return TEMPFAIL
        return CONTINUE


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    Milter.factory = RejectMilter
    print(f"reject_milter listening on {argv[1]}", flush=True)
    Milter.runmilter("reject-milter", argv[1], timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
