"""The baseline: a no-op pymilter milter with exactly our callbacks and our negotiation.

    python -m bench.noop_milter inet:PORT@127.0.0.1 [--skip-data]

It negotiates with ``SmtpAuthMilter.negotiate`` itself (same skipped steps,
same no-reply flags, same macro lists), implements the same callbacks
(connect, envfrom, envrcpt, data, abort, close) and does nothing in them:
CONTINUE, or NOREPLY where the no-reply flag was negotiated.  ``--skip-data``
additionally asks the MTA to skip DATA, for the TCP-stall experiment
(docs/internals.md#the-tcp-stall-when-data-is-skipped).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import Milter

from smtpauth_milter.daemon.milter import SmtpAuthMilter

CONTINUE: int = Milter.CONTINUE
NOREPLY: int = Milter.NOREPLY


class NoopMilter(Milter.Base):  # type: ignore[misc]
    extra_skips = 0

    def negotiate(self, opts: list[int]) -> int:
        offered = opts[1]
        rc: int = SmtpAuthMilter.negotiate(self, opts)
        opts[1] |= offered & self.extra_skips
        self._protocol = opts[1]
        return rc

    def _wants_headers(self) -> bool:  # called by SmtpAuthMilter.negotiate
        return False

    def _answer(self, nr_flag: int) -> int:
        return NOREPLY if self._protocol & nr_flag else CONTINUE

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        return self._answer(Milter.P_NR_CONN)

    def envfrom(self, mailfrom: str, *params: str) -> int:
        return self._answer(Milter.P_NR_MAIL)

    def envrcpt(self, rcpt: str, *params: str) -> int:
        return self._answer(Milter.P_NR_RCPT)

    def data(self) -> int:
        return self._answer(Milter.P_NR_DATA)

    def abort(self) -> int:
        return CONTINUE

    def close(self) -> int:
        return CONTINUE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="inet:PORT@HOST or unix:/path")
    parser.add_argument("--skip-data", action="store_true", help="also skip DATA (stall test)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    NoopMilter.extra_skips = Milter.P_NODATA if args.skip_data else 0
    Milter.factory = NoopMilter
    Milter.runmilter("noop-milter", args.socket, timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
