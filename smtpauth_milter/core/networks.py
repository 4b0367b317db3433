"""Trusted networks: CIDR parsing and a lookup that costs one set probe per prefix length."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from smtpauth_milter.core.errors import SettingError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr(text: str) -> IPNetwork:
    """Parse ``192.0.2.0/24``, ``2001:db8::/32`` or a bare address; host bits must be zero.

    ``::ffff:192.0.2.0/120`` becomes ``192.0.2.0/24``: clients are matched as IPv4.
    """
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise SettingError(f"bad CIDR {text!r}: {exc}") from exc
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is not None and network.prefixlen >= 96:
        # clients are matched as IPv4, so store an IPv4-mapped network as IPv4
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


MAX_ADDRESS_TEXT = 100  # "[IPv6:" + 45 + a zone: anything longer is not an address


def parse_ip(text: str) -> IPAddress | None:
    """An IP address from the MTA, IPv4-mapped IPv6 folded to IPv4; None if not an address.

    Cached: the same clients connect again and again (bounded; long texts never kept).
    """
    return _parse_ip(text) if len(text) <= MAX_ADDRESS_TEXT else None


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPAddress | None:
    candidate = text.strip().removeprefix("[").removesuffix("]").removeprefix("IPv6:")
    candidate = candidate.partition("%")[0]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class NetworkSet:
    """An immutable set of networks; ``contains`` probes one hash set per prefix length."""

    networks: tuple[IPNetwork, ...]
    # (version, netmask as an int, network addresses as ints), one per prefix length:
    # the masks are computed once here, not once per probe.
    _probes: tuple[tuple[int, int, frozenset[int]], ...]

    @classmethod
    def of(cls, networks: Iterable[IPNetwork]) -> NetworkSet:
        unique = tuple(
            sorted(set(networks), key=lambda n: (n.version, n.network_address, n.prefixlen))
        )
        groups: dict[tuple[int, int], set[int]] = {}
        for net in unique:
            key = (net.version, int(net.netmask))
            groups.setdefault(key, set()).add(int(net.network_address))
        probes = tuple((version, mask, frozenset(v)) for (version, mask), v in groups.items())
        return cls(unique, probes)

    def contains(self, address: IPAddress) -> bool:
        value = int(address)
        version = address.version
        for probe_version, mask, starts in self._probes:
            if probe_version == version and value & mask in starts:
                return True
        return False
