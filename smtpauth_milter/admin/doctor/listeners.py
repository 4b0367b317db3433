"""Which process listens on the milter's socket, found the way ``ss -lp`` finds it.

The socket's inode comes from ``/proc/net/tcp``, ``tcp6`` or ``unix``, matched
on the address *and* the port (a listener on 127.0.0.2:8894 is not the milter
on 127.0.0.1:8894; one on the wildcard address is, since it answers there),
then the process holding that inode among its ``/proc/PID/fd``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from pathlib import Path

from smtpauth_milter.admin.doctor.checks import unix_path

PROC = Path("/proc")
LISTEN = "0A"  # TCP state in /proc/net/tcp
ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix: a listening socket
TABLE_LIMIT = 16 << 20  # bytes of one /proc/net table read at most

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Unknown(Exception):
    """Why doctor cannot tell which store the milter uses."""


def proc_address(text: str) -> Address:
    """An address as /proc/net/tcp{,6} prints it: hex, each 32-bit word in host order."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


def wanted_addresses(socket_spec: str) -> tuple[int, int, frozenset[Address]]:
    """(family, port, the addresses ``inet:PORT@HOST`` / ``inet6:PORT@HOST`` binds)."""
    kind, _, rest = socket_spec.partition(":")
    port, _, host = rest.partition("@")
    family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Unknown(f"cannot resolve {host!r}: {exc}") from exc
    return family, int(port), frozenset(ipaddress.ip_address(info[4][0]) for info in infos)


def _rank(address: Address, family: int, wanted: frozenset[Address]) -> int | None:
    """0: the very address, 1: the wildcard (it answers there too), None: another one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in wanted:
        return 0
    if address.is_unspecified and (family == socket.AF_INET or address.version == 6):
        return 1
    return None


def listening_inode(socket_spec: str, proc: Path = PROC) -> int:
    path = unix_path(socket_spec)
    if path is not None:
        wanted_path = os.path.normpath(path)
        for fields in _table(proc / "net" / "unix"):
            if len(fields) >= 8 and int(fields[3], 16) & ACCEPTING and fields[7] == wanted_path:
                return int(fields[6])
        raise Unknown(f"no process listens on {socket_spec}")
    family, port, wanted = wanted_addresses(socket_spec)
    found: list[tuple[int, int]] = []
    for name in ("tcp", "tcp6") if family == socket.AF_INET else ("tcp6",):
        for fields in _table(proc / "net" / name):
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            address, _, hex_port = fields[1].rpartition(":")
            rank = _rank(proc_address(address), family, wanted)
            if int(hex_port, 16) == port and rank is not None:
                found.append((rank, int(fields[9])))
    if not found:
        raise Unknown(f"no process listens on {socket_spec}")
    return min(found)[1]


def _table(path: Path) -> list[list[str]]:
    try:
        with path.open("rb") as handle:
            text = handle.read(TABLE_LIMIT).decode("ascii", "replace")
    except OSError as exc:
        raise Unknown(f"cannot read {path}: {exc.strerror}") from exc
    return [line.split() for line in text.splitlines()[1:]]


def holder(inode: int, proc: Path = PROC) -> int:
    """The process holding the socket; Unknown when it cannot be seen (another user's).

    Under AutoRestart the supervisor and its child both hold it: the one named is
    the process that was started (whose parent does not hold it), whatever order
    pids wrapped around in.
    """
    target = f"socket:[{inode}]"
    hidden = False
    holders: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except PermissionError:
            hidden = True
            continue
        except OSError:
            continue  # the process ended meanwhile
        for fd in fds:
            with contextlib.suppress(OSError):
                if str(fd.readlink()) == target:
                    holders.append(int(entry.name))
                    break
    if not holders:
        why = "its process belongs to another user (run doctor as root)" if hidden else "it is gone"
        raise Unknown(f"cannot see which process holds the socket: {why}")
    return next((pid for pid in holders if _parent(pid, proc) not in holders), min(holders))


def _parent(pid: int, proc: Path) -> int | None:
    """The parent pid from /proc/PID/stat (after the command name, which may hold ')')."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
