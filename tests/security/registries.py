"""The IANA special-purpose address registries, as a table the tests check the proxy against.

Written from the registries themselves, not from `paddock.proxy.addresses`:

- IANA "IPv4 Special-Purpose Address Registry" (RFC 6890 and the RFCs each entry names);
- IANA "IPv6 Special-Purpose Address Registry" (same);
- IANA "IPv4 Multicast Address Space Registry" and "IPv6 Multicast Address Space Registry";
- ranges the registries no longer list but that stacks still route: the deprecated
  IPv4-compatible ``::/96`` (RFC 4291 §2.5.5.1), SIIT's ``::ffff:0:0:0/96`` (RFC 2765,
  obsoleted) and site-local ``fec0::/10`` (RFC 3879), which Python's ``ipaddress`` calls
  global.

Each row: the prefix, the registry's name for it, one address inside it to probe, and the
class the proxy must name when it refuses that address. Every address of every row is
refused, including the entries the registry marks "globally reachable" (anycast services,
AS112, AMT, the NAT64 well-known prefix): none is a destination a sandbox needs.
"""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    prefix: str
    name: str
    probe: str
    category: str


IPV4 = [
    Entry("0.0.0.0/8", '"This network"', "0.1.2.3", "unspecified"),
    Entry("0.0.0.0/32", '"This host on this network"', "0.0.0.0", "unspecified"),
    Entry("10.0.0.0/8", "Private-Use", "10.200.0.1", "private"),
    Entry("100.64.0.0/10", "Shared Address Space", "100.127.255.254", "cgnat"),
    Entry("127.0.0.0/8", "Loopback", "127.8.9.10", "loopback"),
    Entry("169.254.0.0/16", "Link Local", "169.254.10.20", "link-local"),
    Entry("172.16.0.0/12", "Private-Use", "172.31.0.1", "private"),
    Entry("192.0.0.0/24", "IETF Protocol Assignments", "192.0.0.200", "reserved"),
    Entry("192.0.0.0/29", "IPv4 Service Continuity Prefix", "192.0.0.1", "reserved"),
    Entry("192.0.0.8/32", "IPv4 dummy address", "192.0.0.8", "reserved"),
    Entry("192.0.0.9/32", "Port Control Protocol Anycast", "192.0.0.9", "reserved"),
    Entry("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "192.0.0.10", "reserved"),
    Entry("192.0.0.170/32", "NAT64/DNS64 Discovery", "192.0.0.170", "reserved"),
    Entry("192.0.0.171/32", "NAT64/DNS64 Discovery", "192.0.0.171", "reserved"),
    Entry("192.0.2.0/24", "Documentation (TEST-NET-1)", "192.0.2.77", "documentation"),
    Entry("192.31.196.0/24", "AS112-v4", "192.31.196.1", "reserved"),
    Entry("192.52.193.0/24", "AMT", "192.52.193.1", "reserved"),
    Entry("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "192.88.99.1", "reserved"),
    Entry("192.168.0.0/16", "Private-Use", "192.168.77.1", "private"),
    Entry("192.175.48.0/24", "Direct Delegation AS112 Service", "192.175.48.6", "reserved"),
    Entry("198.18.0.0/15", "Benchmarking", "198.19.255.1", "benchmarking"),
    Entry("198.51.100.0/24", "Documentation (TEST-NET-2)", "198.51.100.9", "documentation"),
    Entry("203.0.113.0/24", "Documentation (TEST-NET-3)", "203.0.113.9", "documentation"),
    Entry("240.0.0.0/4", "Reserved", "250.1.2.3", "reserved"),
    Entry("255.255.255.255/32", "Limited Broadcast", "255.255.255.255", "broadcast"),
    Entry(
        "224.0.0.0/4", "Multicast (IPv4 Multicast Address Space)", "239.255.255.250", "multicast"
    ),
]

IPV6 = [
    Entry("::1/128", "Loopback Address", "::1", "loopback"),
    Entry("::/128", "Unspecified Address", "::", "unspecified"),
    Entry("::ffff:0:0/96", "IPv4-mapped Address", "::ffff:10.0.0.1", "private"),
    Entry("64:ff9b::/96", "IPv4-IPv6 Translat.", "64:ff9b::a9fe:a9fe", "metadata"),
    Entry("64:ff9b:1::/48", "IPv4-IPv6 Translat. (local-use)", "64:ff9b:1::7f00:1", "loopback"),
    Entry("100::/64", "Discard-Only Address Block", "100::1", "reserved"),
    Entry("100:0:0:1::/64", "Dummy IPv6 Prefix", "100:0:0:1::1", "reserved"),
    Entry("2001::/23", "IETF Protocol Assignments", "2001:1ff::1", "reserved"),
    # Teredo: server 65.54.227.120, client 192.0.2.45 (RFC 4380's example, obfuscated).
    Entry("2001::/32", "TEREDO", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation"),
    Entry("2001:1::1/128", "Port Control Protocol Anycast", "2001:1::1", "reserved"),
    Entry("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "2001:1::2", "reserved"),
    Entry("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "2001:1::3", "reserved"),
    Entry("2001:2::/48", "Benchmarking", "2001:2::9", "benchmarking"),
    Entry("2001:3::/32", "AMT", "2001:3::1", "reserved"),
    Entry("2001:4:112::/48", "AS112-v6", "2001:4:112::1", "reserved"),
    Entry("2001:10::/28", "Deprecated (previously ORCHID)", "2001:10::1", "reserved"),
    Entry("2001:20::/28", "ORCHIDv2", "2001:20::1", "reserved"),
    Entry(
        "2001:30::/28",
        "Drone Remote ID Protocol Entity Tags (DETs) Prefix",
        "2001:30::1",
        "reserved",
    ),
    Entry("2001:db8::/32", "Documentation", "2001:db8::1", "documentation"),
    Entry("2002::/16", "6to4", "2002:a9fe:a9fe::1", "metadata"),
    Entry("2620:4f:8000::/48", "Direct Delegation AS112 Service", "2620:4f:8000::1", "reserved"),
    Entry("3fff::/20", "Documentation", "3fff:fff::1", "documentation"),
    Entry("5f00::/16", "Segment Routing (SRv6) SIDs", "5f00::1", "reserved"),
    Entry("fc00::/7", "Unique-Local", "fd12:3456::1", "private"),
    Entry("fe80::/10", "Link-Local Unicast", "fe80::1", "link-local"),
    Entry("ff00::/8", "Multicast (IPv6 Multicast Address Space)", "ff05::2", "multicast"),
    Entry("::/96", "IPv4-compatible (deprecated, RFC 4291)", "::7f00:1", "loopback"),
    Entry("::ffff:0:0:0/96", "SIIT (RFC 2765, obsoleted)", "::ffff:0:a9fe:a9fe", "metadata"),
    Entry("fec0::/10", "Site-local (deprecated, RFC 3879)", "fec0::a9fe:a9fe", "site-local"),
]

ENTRIES = IPV4 + IPV6

# The bypasses reported in issue 15, and what each must be refused as.
REPORTED_BYPASSES = {
    "fec0::a9fe:a9fe": "site-local",
    "64:ff9b:1::7f00:1": "loopback",
    "::ffff:0:7f00:1": "loopback",
    "::ffff:0:a9fe:a9fe": "metadata",
}
