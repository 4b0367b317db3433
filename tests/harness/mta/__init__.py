"""A private Postfix + Dovecot (SASL) and swaks: what integration tests and ``bench.postfix_e2e`` drive.

Plain helpers, no pytest. Milter sockets are written in Postfix notation here
(``inet:127.0.0.1:PORT``, ``unix:/path``); :func:`libmilter_socket` converts for the
milter's own ``--socket`` (:mod:`tests.harness.milter`).
"""

from .common import (
    LOOPBACK,
    REPO_ROOT,
    ManagedProcess,
    SandboxError,
    libmilter_socket,
    run_checked,
    smtp_banner,
    start_process,
)
from .postfix import CONTRIB_MAIN_CF, LOCAL_DOMAINS, Postfix, render_milter_snippet
from .sandbox import USERS, Sandbox, start_sandbox
from .swaks import RcptReply, Reply, SwaksResult, deliver, parse_swaks, smtp

__all__ = [
    "CONTRIB_MAIN_CF",
    "LOCAL_DOMAINS",
    "LOOPBACK",
    "REPO_ROOT",
    "USERS",
    "ManagedProcess",
    "Postfix",
    "RcptReply",
    "Reply",
    "Sandbox",
    "SandboxError",
    "SwaksResult",
    "deliver",
    "libmilter_socket",
    "parse_swaks",
    "render_milter_snippet",
    "run_checked",
    "smtp",
    "smtp_banner",
    "start_process",
    "start_sandbox",
]
