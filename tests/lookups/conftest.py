"""A real DNS server (unbound with the SPF test zones) for the lookup tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.dnsserver import Blackhole, DnsServer


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    with DnsServer(tmp_path_factory.mktemp("dns")) as server:
        yield server


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    with Blackhole() as hole:
        yield hole
