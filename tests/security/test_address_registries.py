"""Every entry of the IANA special-purpose address registries is refused (the pure rule; the
same table goes through the real proxy in `test_egress_attacks.py`)."""

from __future__ import annotations

import ipaddress

import pytest
from tests.security.registries import ENTRIES, REPORTED_BYPASSES, Entry

from paddock.proxy.addresses import classify


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.prefix)
def test_the_probe_of_every_registry_entry_is_refused_naming_its_class(entry: Entry) -> None:
    assert classify(ipaddress.ip_address(entry.probe)) == entry.category


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.prefix)
def test_the_first_middle_and_last_address_of_every_entry_are_refused(entry: Entry) -> None:
    network = ipaddress.ip_network(entry.prefix)
    for ip in (network[0], network[network.num_addresses // 2], network[-1]):
        assert classify(ip) is not None, f"{ip} ({entry.name}) counted as public"


@pytest.mark.parametrize(("address", "category"), REPORTED_BYPASSES.items())
def test_the_reported_ipv6_bypasses_are_classified(address: str, category: str) -> None:
    assert classify(ipaddress.ip_address(address)) == category


def test_site_local_is_refused_although_python_may_call_it_global() -> None:
    assert classify(ipaddress.ip_address("fec0::1")) == "site-local"
    assert classify(ipaddress.ip_address("feff:ffff::1")) == "site-local"


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "9.255.255.255",  # just below 10/8
        "100.128.0.0",  # just above 100.64/10
        "172.32.0.1",  # just above 172.16/12
        "198.20.0.1",  # just above 198.18/15
        "223.255.255.254",  # just below multicast
        "2606:4700::1111",
        "2a00:1450:4001::1",
        "2001:200::1",  # just above 2001::/23
        "2003::1",  # just above 2002::/16
    ],
)
def test_public_unicast_addresses_pass(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:0:127.0.0.1", "loopback"),  # SIIT
        ("64:ff9b::127.0.0.1", "loopback"),  # NAT64
        ("64:ff9b:1:ffff::10.0.0.1", "private"),  # NAT64 local-use, a /96 inside it
        ("2002:a00:1::", "private"),  # 6to4 around 10.0.0.1
        ("::10.0.0.1", "private"),  # IPv4-compatible
        ("::ffff:8.8.8.8", "ipv4-translation"),  # a public IPv4 inside is refused too
        ("64:ff9b::8.8.8.8", "ipv4-translation"),
        ("2002:808:808::1", "ipv4-translation"),
    ],
)
def test_ipv4_embedded_in_a_translation_prefix_names_the_refusal(
    address: str, category: str
) -> None:
    assert classify(ipaddress.ip_address(address)) == category
