"""Doctor's checks: pure functions from gathered facts to :class:`Finding` lines.

Each finding prints as ``ok|warning|error: what — fix: how``.  Nothing here
runs a program, reads a file or opens a socket: see ``facts``.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from smtpauth_milter.admin.milterproto.codec import Negotiated
from smtpauth_milter.admin.postfix import DOMAIN_PARAMS

POSTFIX_PARAMS = (
    "smtpd_milters",
    "non_smtpd_milters",
    "milter_default_action",
    "milter_mail_macros",
    "milter_protocol",
    "mail_owner",
    "queue_directory",
    "smtpd_sender_login_maps",
    *DOMAIN_PARAMS,
)
_SPLIT = re.compile(r"[\s,]+")


class Severity(IntEnum):
    OK = 0
    WARNING = 1
    ERROR = 2


@dataclass(frozen=True)
class Finding:
    severity: Severity
    what: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{self.severity.name.lower()}: {self.what}"
        return f"{text} — fix: {self.fix}" if self.fix else text


def ok(what: str) -> Finding:
    return Finding(Severity.OK, what)


def warning(what: str, fix: str) -> Finding:
    return Finding(Severity.WARNING, what, fix)


def error(what: str, fix: str) -> Finding:
    return Finding(Severity.ERROR, what, fix)


def exit_status(findings: Iterable[Finding]) -> int:
    return max((int(f.severity) for f in findings), default=0)


# --- milter addresses: libmilter <-> Postfix notation ----------------------------------


def _host(host: str) -> str:
    host = host.strip("[]").lower()
    return "127.0.0.1" if host == "localhost" else host


def ours(spec: str) -> str:
    """Our ``--socket`` (``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:/p``) as a key."""
    kind, _, rest = spec.partition(":")
    if kind in ("unix", "local"):
        return "unix:" + os.path.normpath(rest)
    port, _, host = rest.partition("@")
    return f"inet:{_host(host)}:{int(port)}"


def postfix_notation(spec: str) -> str:
    """What to write in ``smtpd_milters`` for our ``--socket``."""
    key = ours(spec)
    if key.startswith("unix:"):
        return key
    host, _, port = key.removeprefix("inet:").rpartition(":")
    return f"inet:[{host}]:{port}" if ":" in host else key


def theirs(entry: str, queue_directory: str) -> set[str]:
    """The keys a Postfix milter address may stand for.

    A relative unix path is inside the queue directory; so is an absolute one
    when smtpd runs chrooted there (Debian's default), so both are candidates.
    """
    kind, _, rest = entry.partition(":")
    if kind in ("unix", "local"):
        inside = "unix:" + os.path.normpath(f"{queue_directory}/{rest}")
        return {inside} if not rest.startswith("/") else {"unix:" + os.path.normpath(rest), inside}
    if kind in ("inet", "inet6"):
        host, _, port = rest.rpartition(":")
        return {f"inet:{_host(host)}:{int(port)}"} if port.isdigit() else set()
    return set()


@dataclass(frozen=True)
class MilterEntry:
    address: str
    settings: dict[str, str] = field(default_factory=dict)


def parse_milters(value: str) -> list[MilterEntry]:
    """``smtpd_milters``: addresses, or ``{ address, name=value, ... }`` groups."""
    entries: list[MilterEntry] = []
    for braced, plain in re.findall(r"\{([^}]*)\}|([^\s,{}]+)", value):
        if plain:
            entries.append(MilterEntry(plain))
            continue
        parts = [p.strip() for p in braced.split(",") if p.strip()]
        if parts:
            settings = {}
            for part in parts[1:]:
                name, _, setting = part.partition("=")
                settings[name.strip()] = setting.strip()
            entries.append(MilterEntry(parts[0], settings))
    return entries


def find_entry(
    socket_spec: str, entries: Sequence[MilterEntry], queue_directory: str
) -> MilterEntry | None:
    key = ours(socket_spec)
    return next((e for e in entries if key in theirs(e.address, queue_directory)), None)


# --- pure checks -------------------------------------------------------------------------


def check_milters(socket_spec: str, params: Mapping[str, str]) -> list[Finding]:
    """Our socket in smtpd_milters, not in non_smtpd_milters; the fail-closed action."""
    queue = params.get("queue_directory", "")
    wanted = postfix_notation(socket_spec)
    entry = find_entry(socket_spec, parse_milters(params.get("smtpd_milters", "")), queue)
    findings: list[Finding] = []
    if entry is None:
        findings.append(
            error(
                f"smtpd_milters does not list the milter's socket {socket_spec} "
                f"(smtpd_milters = {params.get('smtpd_milters') or '(empty)'})",
                f"postconf -e 'smtpd_milters = {wanted}' (keep other milters in the list), "
                "then postfix reload",
            )
        )
    else:
        findings.append(ok(f"smtpd_milters lists the milter ({entry.address})"))
    non_smtpd = parse_milters(params.get("non_smtpd_milters", ""))
    if find_entry(socket_spec, non_smtpd, queue) is not None:
        findings.append(
            warning(
                "non_smtpd_milters lists the milter: locally submitted mail (sendmail(1), "
                "cron) has no login and is judged as unauthenticated",
                "remove it from non_smtpd_milters, then postfix reload",
            )
        )
    findings.append(check_default_action(params.get("milter_default_action", ""), entry))
    return findings


def check_default_action(global_action: str, entry: MilterEntry | None) -> Finding:
    action = (entry.settings.get("default_action") if entry else None) or global_action
    where = (
        f"default_action={action} in the milter's smtpd_milters entry"
        if entry and "default_action" in entry.settings
        else f"milter_default_action = {action}"
    )
    fix = (
        "postconf -e 'milter_default_action = tempfail' (and no default_action= in the "
        "milter's entry), then postfix reload"
    )
    if action == "tempfail":
        return ok(f"{where}: mail waits (4xx) while the milter is down")
    if action in ("accept", "quarantine"):
        return error(f"{where} fails open: while the milter is down, mail goes unchecked", fix)
    if action == "reject":
        return warning(f"{where}: while the milter is down, clients get 5xx and give up", fix)
    return warning(f"{where} is not a known action", fix)


def check_macros(mail_macros: str, protocol: str) -> Finding:
    names = set(_SPLIT.split(mail_macros.strip()))
    if "{auth_authen}" in names:
        return ok("milter_mail_macros include {auth_authen} (the login)")
    fix = (
        "postconf -e 'milter_mail_macros = "
        + " ".join([*(n for n in mail_macros.split() if n), "{auth_authen}"])
        + "', then postfix reload"
    )
    try:
        version = int(protocol)
    except ValueError:
        version = 0
    if version >= 6:
        return warning(
            "milter_mail_macros lack {auth_authen}: the milter asks for it itself "
            "(milter protocol 6), but other milters and older setups do not get it",
            fix,
        )
    return error(
        f"milter_mail_macros lack {{auth_authen}} with milter_protocol = {protocol}: "
        "the milter never sees a login and treats every session as unauthenticated",
        fix,
    )


@dataclass(frozen=True)
class FileFacts:
    path: str
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class UserFacts:
    name: str
    uid: int
    gids: frozenset[int]


def may(facts: FileFacts, user: UserFacts, bit: int) -> bool:
    """``bit`` is 4 (read), 2 (write) or 1 (search) for ``user``, as the kernel decides."""
    if user.uid == 0:
        return True
    if facts.uid == user.uid:
        return bool(facts.mode & (bit << 6))
    if facts.gid in user.gids:
        return bool(facts.mode & (bit << 3))
    return bool(facts.mode & bit)


def check_socket_access(
    socket_spec: str, sock: FileFacts | None, parents: Sequence[FileFacts], user: UserFacts
) -> Finding:
    path = unix_path(socket_spec)
    if path is None:
        return ok(f"{socket_spec} is a TCP socket: no file permissions to check")
    if sock is None:
        return error(
            f"no socket at {path}",
            "start the milter (smtpauth-milter run --socket "
            f"{socket_spec}); check the directory exists",
        )
    blocked = [p.path for p in parents if not may(p, user, 1)]
    if blocked:
        return error(
            f"user {user.name} cannot reach {path}: no search permission on {', '.join(blocked)}",
            f"chmod o+x (or g+x with group {user.name}) {' '.join(blocked)}",
        )
    if not stat.S_ISSOCK(sock.mode):
        return error(f"{path} is not a socket", "remove it and restart the milter")
    if not may(sock, user, 2):
        return error(
            f"user {user.name} cannot write {path} "
            f"(mode {stat.S_IMODE(sock.mode):04o}, owner {sock.uid}:{sock.gid})",
            f"run the milter with --user NAME --group {user.name} (socket 0660, group "
            f"{user.name}), or chgrp {user.name} {path} && chmod 0660 {path}",
        )
    return ok(f"user {user.name} can write {path}")


@dataclass(frozen=True)
class StoreFacts:
    display: str
    error: str | None = None
    current: str | None = None
    head: str | None = None
    missing_file: bool = False
    schema_problem: str | None = None  # why this version may not read the store
    newer: bool = False  # at a revision a newer smtpauth-milter migrated to
    anyone: tuple[str, ...] = ()  # logins with a send-as-anyone grant
    exempt: tuple[str, ...] = ()  # local domains with exempt-local-recipients on


def check_store(facts: StoreFacts) -> Finding:
    if facts.missing_file:
        return error(
            f"the store {facts.display} does not exist: the milter tempfails every message",
            "smtpauth-milter db init, then smtpauth-milter domain add YOUR.DOMAIN",
        )
    if facts.error is not None:
        return error(
            facts.error, "check --db / SMTPAUTH_MILTER_DB, that the database runs and is reachable"
        )
    if facts.newer and facts.schema_problem is not None:
        return error(facts.schema_problem, "upgrade smtpauth-milter on this host")
    if facts.newer:
        return warning(
            f"the store {facts.display} is at schema {facts.current}, newer than this version "
            "knows: its milter keeps deciding, but changes and export need the newer version",
            "upgrade smtpauth-milter on this host",
        )
    if facts.current != facts.head:
        return error(
            f"the store {facts.display} is at schema {facts.current or 'none'}, "
            f"this version needs {facts.head}",
            "smtpauth-milter db upgrade",
        )
    return ok(f"the store {facts.display} is reachable and at schema {facts.head}")


def check_local_domains(domains: Sequence[str] | None) -> Finding | None:
    """A store without local domains checks nothing: every message passes."""
    if domains is None or domains:
        return None
    return error(
        "the store has no local domains: nothing is checked, every message passes",
        "smtpauth-milter domain add YOUR.DOMAIN",
    )


def check_negotiation(socket_spec: str, result: Negotiated | str) -> Finding:
    fix = f"start the milter: smtpauth-milter run --socket {socket_spec}"
    if isinstance(result, str):
        return error(f"no option negotiation on {socket_spec}: {result}", fix)
    mail = result.macros_for("mail") or ()
    if result.version < 6:
        return error(f"the milter on {socket_spec} speaks protocol {result.version}", fix)
    if "{auth_authen}" not in mail:
        return warning(
            f"the program on {socket_spec} negotiates but does not ask for {{auth_authen}}: "
            "is it smtpauth-milter?",
            f"check which program listens on {socket_spec}",
        )
    return ok(f"the milter answers option negotiation on {socket_spec} (protocol 6)")


def unix_path(socket_spec: str) -> str | None:
    kind, _, rest = socket_spec.partition(":")
    return rest if kind in ("unix", "local") else None
