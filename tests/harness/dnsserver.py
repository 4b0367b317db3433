"""A real, private DNS server for tests: unbound serving test zones on a loopback port.

``DnsServer(root, zones)`` writes the zone files and an ``unbound.conf`` into
``root``, starts ``unbound -d`` on 127.0.0.1 and a free port (UDP and TCP), and
polls until it answers.  It never asks any other server: every name outside
the test zones goes to a closed local port, so no test depends on the
machine's resolver or the Internet.  Besides the zones given:

- ``spf.test`` (:data:`SPF_TEST_ZONE`): one record per SPF case, see the table test;
- ``2.0.192.in-addr.arpa`` answers the ``ptr`` case;
- ``sf.test`` answers SERVFAIL for every name (an auth-zone without data);
- ``to.test`` never answers (unbound drops the queries): the timeout case;
  only ``lp.to.test`` has an SPF record, ``exists:%{l}.%{d}``, whose lookups
  are dropped: every local part costs a check its whole ``spf-timeout``.

:class:`Blackhole` is a "resolver" that never answers at all.

    with DnsServer(tmp_path, {"example.com": 'example.com. TXT "v=spf1 -all"'}) as dns:
        dns.address  # "127.0.0.1:PORT", for the dns-resolver setting
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import dns.exception
import dns.message
import dns.query

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
SOA_MINIMUM = 60  # the negative-answer TTL of every test zone


def _nibbles(ip6: str) -> str:
    return ".".join(ipaddress.ip_address(ip6).exploded.replace(":", ""))


def _big_record() -> str:
    """A 699-byte SPF text in character-strings of at most 250 bytes: over 512 with UDP."""
    mechanisms = [f"ip4:203.0.113.{i}" for i in range(1, 41)] + ["ip4:192.0.2.0/24", "-all"]
    text = "v=spf1 " + " ".join(mechanisms)
    return " ".join(f'"{text[i : i + 250]}"' for i in range(0, len(text), 250))


_A_MECHANISMS = [f"a:h{i}.spf.test" for i in range(1, 11)]

SPF_TEST_ZONE = f"""\
; ip4 / ip6
ip4          TXT   "v=spf1 ip4:192.0.2.0/24 -all"
ip6          TXT   "v=spf1 ip6:2001:db8:1::/48 -all"
; a (own name, A+AAAA) and a:<domain>/cidr
a            TXT   "v=spf1 a a:host.spf.test/28 -all"
a            A     192.0.2.20
a            AAAA  2001:db8:20::1
host         A     198.51.100.1
; mx
mx           TXT   "v=spf1 mx -all"
mx           MX    10 mail1.spf.test.
mx           MX    20 mail2.spf.test.
mail1        A     192.0.2.30
mail2        AAAA  2001:db8:30::1
; include / redirect / CNAME
include      TXT   "v=spf1 include:ip4.spf.test include:ip6.spf.test ~all"
inc-exists   TXT   "v=spf1 include:exists.spf.test -all"
inc-none     TXT   "v=spf1 include:nospf.spf.test -all"
redirect     TXT   "v=spf1 redirect=ip4.spf.test"
redir-nx     TXT   "v=spf1 redirect=nx.spf.test"
cname        CNAME ip4.spf.test.
; exists + macros: reversed IP, in-addr, the last '+'-part of the local part, 2 labels
exists       TXT   "v=spf1 exists:%{{ir}}.%{{v}}.%{{l1r+}}._x.%{{d2}} -all"
40.2.0.192.in-addr.bob._x  A 127.0.0.2
exists6      TXT   "v=spf1 exists:%{{i}}._v6.%{{d}} -all"
{_nibbles("2001:db8:1::5")}._v6.exists6 A 127.0.0.2
; void lookups (nx1/nx2 NXDOMAIN, nodata has no MX): 2 allowed, the 3rd is permerror
void2        TXT   "v=spf1 a:nx1.spf.test mx:nodata.spf.test ip4:192.0.2.0/24 -all"
void3        TXT   "v=spf1 a:nx1.spf.test a:nx2.spf.test mx:nodata.spf.test ip4:192.0.2.0/24 -all"
nodata       TXT   "just some text, not SPF"
nospf        TXT   "google-site-verification=xyz"
; the 10 DNS-mechanism limit
lim10        TXT   "v=spf1 {" ".join(_A_MECHANISMS[:9])} include:ip4.spf.test -all"
lim11        TXT   "v=spf1 {" ".join(_A_MECHANISMS)} include:ip4.spf.test -all"
lim-nest     TXT   "v=spf1 include:lim10.spf.test -all"
{"".join(f"h{i} A 198.51.100.{100 + i}{chr(10)}" for i in range(1, 11))}\
; over 512 bytes: truncated over plain UDP, answered over TCP
big          TXT   {_big_record()}
; two SPF records: permerror
two          TXT   "v=spf1 ip4:192.0.2.0/24 -all"
two          TXT   "v=spf1 -all"
; syntax error, neutral
bad          TXT   "v=spf1 ip4:192.0.2.300 -all"
neutral      TXT   "v=spf1 ?all"
; includes of a dropped name (timeout) and of a SERVFAIL zone
inc-timeout  TXT   "v=spf1 include:x.to.test -all"
inc-servfail TXT   "v=spf1 include:x.sf.test -all"
; exp= is never fetched, not even a slow one
exp          TXT   "v=spf1 ip4:192.0.2.0/24 -all exp=why.%{{d}}"
why.exp      TXT   "%{{i}} is not one of %{{d}}'s designated mail servers"
exp-slow     TXT   "v=spf1 ip4:192.0.2.0/24 -all exp=x.to.test"
; ptr (deprecated but still evaluated)
ptr          TXT   "v=spf1 ptr:ptr.spf.test -all"
mail.ptr     A     192.0.2.50
"""
# Keep explicit TTLs last: unbound's zone parser reuses the last explicit TTL
# for the records after it, despite $TTL.
SPF_TEST_ZONE_LAST = 'short        5     TXT "v=spf1 include:ip4.spf.test -all"\n'

REVERSE_ZONE = "50  PTR mail.ptr.spf.test.\n"

_CONF = """\
server:
  interface: {host}@{port}
  do-ip6: no
  do-udp: yes
  do-tcp: yes
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  # unbound answers test. and 2.0.192.in-addr.arpa. itself (RFC 6761/5737) unless told not to
  local-zone: "test." nodefault
  local-zone: "2.0.192.in-addr.arpa." nodefault
  # queries for to.test are dropped: the timeout case; all but lp.to.test's own record,
  # whose exists: names (one per local part) are dropped: a slow record an attacker can vary
  local-zone: "to.test." deny
  local-data: 'lp.to.test. 300 IN TXT "v=spf1 exists:%{{l}}.%{{d}} -all"'
{auth_zones}
# never recurse anywhere: every other name goes to a closed local port
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@9
"""

_AUTH_ZONE = """\
auth-zone:
  name: "{name}."
  zonefile: "{file}"
  for-downstream: yes
  for-upstream: no
  fallback-enabled: no
"""


def _zone_text(name: str, records: str) -> str:
    return (
        f"$ORIGIN {name}.\n$TTL 300\n"
        f"@ SOA ns.spf.test. hostmaster.spf.test. 1 3600 600 86400 {SOA_MINIMUM}\n"
        "@ NS ns.spf.test.\n" + records
    )


def free_udp_tcp_port(host: str = HOST) -> int:
    """A port free for both UDP and TCP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


class DnsServer:
    """unbound on 127.0.0.1:PORT serving the test zones; ``close()`` stops it."""

    def __init__(self, root: Path, zones: Mapping[str, str] | None = None) -> None:
        if shutil.which("unbound") is None:
            raise RuntimeError("unbound is not installed (scripts/test installs it)")
        self.root = root
        self.port = free_udp_tcp_port()
        self.address = f"{HOST}:{self.port}"
        files = {
            "spf.test": _zone_text("spf.test", SPF_TEST_ZONE + SPF_TEST_ZONE_LAST),
            "2.0.192.in-addr.arpa": _zone_text("2.0.192.in-addr.arpa", REVERSE_ZONE),
            "sf.test": "",  # no SOA: unbound answers SERVFAIL for the whole zone
        }
        files.update({name: _zone_text(name, records) for name, records in (zones or {}).items()})
        blocks = []
        for name, text in files.items():
            path = root / f"{name}.zone"
            path.write_text(text)
            blocks.append(_AUTH_ZONE.format(name=name, file=path))
        conf = root / "unbound.conf"
        conf.write_text(
            _CONF.format(host=HOST, port=self.port, dir=root, auth_zones="".join(blocks))
        )
        self._log = (root / "unbound.log").open("wb")
        self.process = subprocess.Popen(
            ["unbound", "-d", "-c", str(conf)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        query = dns.message.make_query("spf.test.", "SOA")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"unbound exited: {(self.root / 'unbound.log').read_text()}")
            with contextlib.suppress(dns.exception.DNSException, OSError):
                if dns.query.udp(query, HOST, port=self.port, timeout=0.1).answer:
                    return
        raise RuntimeError(f"unbound did not answer within {START_TIMEOUT} s")

    def close(self) -> None:
        # SIGKILL: a private unbound keeps nothing, and takes ~2 s to exit on SIGTERM
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Blackhole:
    """A "DNS server" that reads every UDP query and TCP connection and never answers."""

    def __init__(self, host: str = HOST) -> None:
        self.port = free_udp_tcp_port(host)
        self.address = f"{host}:{self.port}"
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((host, self.port))
        self._udp.settimeout(0.2)
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.bind((host, self.port))
        self._tcp.listen(16)  # connections wait in the backlog, never accepted
        self.received = 0  # UDP queries read so far: a test can wait for one to arrive
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stopped.is_set():
            try:
                self._udp.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received += 1

    def close(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._udp.close()
        self._tcp.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
