"""Which IP addresses egress may connect to, and name resolution that feeds the check.

The rule is "public unicast only". Every address is classified after DNS resolution against
the IANA IPv4 and IPv6 Special-Purpose Address Registries (plus multicast, the deprecated
site-local and IPv4-compatible ranges, and the obsolete SIIT prefix, which the registries no
longer list but which stacks still route): an address in any entry is refused, whether the
registry calls the entry globally reachable or not. Python's ``ipaddress.is_global`` is not
the rule: it calls site-local ``fec0::/10`` global, among others.

An IPv6 address that embeds an IPv4 one (IPv4-mapped, SIIT, NAT64, 6to4, Teredo,
IPv4-compatible) is refused for its prefix anyway; the embedded address only names the
refusal, so ``::ffff:127.0.0.1`` is "loopback" however it is spelled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata services (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba). All of them are
# non-public anyway; the name makes refusals readable and pins them against exceptions.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

# (prefix, class). The most specific prefix that holds an address names its class.
SPECIAL_PURPOSE: tuple[tuple[str, str], ...] = (
    # IANA IPv4 Special-Purpose Address Registry.
    ("0.0.0.0/8", "unspecified"),  # "this network"
    ("0.0.0.0/32", "unspecified"),  # "this host on this network"
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),  # shared address space
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
    ("192.0.0.0/29", "reserved"),  # IPv4 service continuity prefix (DS-Lite)
    ("192.0.0.8/32", "reserved"),  # IPv4 dummy address
    ("192.0.0.9/32", "reserved"),  # Port Control Protocol anycast
    ("192.0.0.10/32", "reserved"),  # TURN anycast
    ("192.0.0.170/31", "reserved"),  # NAT64/DNS64 discovery (.170 and .171)
    ("192.0.2.0/24", "documentation"),  # TEST-NET-1
    ("192.31.196.0/24", "reserved"),  # AS112-v4
    ("192.52.193.0/24", "reserved"),  # AMT
    ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "reserved"),  # direct delegation AS112 service
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),  # TEST-NET-2
    ("203.0.113.0/24", "documentation"),  # TEST-NET-3
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),  # limited broadcast
    # IANA IPv4 Multicast Address Space Registry.
    ("224.0.0.0/4", "multicast"),
    # IANA IPv6 Special-Purpose Address Registry.
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
    ("::ffff:0:0/96", "ipv4-translation"),  # IPv4-mapped
    ("64:ff9b::/96", "ipv4-translation"),  # NAT64 well-known prefix
    ("64:ff9b:1::/48", "ipv4-translation"),  # NAT64 local-use prefix
    ("100::/64", "reserved"),  # discard-only
    ("100:0:0:1::/64", "reserved"),  # dummy IPv6 prefix
    ("2001::/23", "reserved"),  # IETF protocol assignments
    ("2001::/32", "ipv4-translation"),  # Teredo
    ("2001:1::1/128", "reserved"),  # Port Control Protocol anycast
    ("2001:1::2/128", "reserved"),  # TURN anycast
    ("2001:1::3/128", "reserved"),  # DNS-SD service registration protocol anycast
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", "reserved"),  # AMT
    ("2001:4:112::/48", "reserved"),  # AS112-v6
    ("2001:10::/28", "reserved"),  # deprecated ORCHID
    ("2001:20::/28", "reserved"),  # ORCHIDv2
    ("2001:30::/28", "reserved"),  # drone remote ID entity tags
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "ipv4-translation"),  # 6to4
    ("2620:4f:8000::/48", "reserved"),  # direct delegation AS112 service
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved"),  # segment routing (SRv6) SIDs
    ("fc00::/7", "private"),  # unique local
    ("fe80::/10", "link-local"),
    # Not (or no longer) in the IPv6 registry, still routed by some stacks.
    ("::/96", "ipv4-translation"),  # IPv4-compatible, deprecated (RFC 4291)
    ("::ffff:0:0:0/96", "ipv4-translation"),  # SIIT (RFC 2765, obsoleted)
    ("fec0::/10", "site-local"),  # deprecated (RFC 3879); Python calls it global
    ("ff00::/8", "multicast"),
)
_TABLE: tuple[tuple[Network, str], ...] = tuple(
    sorted(
        ((ipaddress.ip_network(prefix), name) for prefix, name in SPECIAL_PURPOSE),
        key=lambda entry: -entry[0].prefixlen,  # most specific first
    )
)

_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def parse_ip(text: str) -> IPAddress | None:
    """The address ``text`` spells literally (``[::1]`` brackets allowed), or None."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def normalize_host(text: str) -> str | None:
    """A hostname in canonical form (lower case, no trailing dot) or an IP literal as text;
    None when ``text`` is neither, so that odd spellings never reach policy matching."""
    ip = parse_ip(text)
    if ip is not None:
        return str(ip)
    host = text.lower().removesuffix(".")
    return host if len(host) <= 253 and _HOSTNAME.fullmatch(host) else None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    """The IPv4 address inside a translation prefix: 6to4 and Teredo have their own places,
    every other prefix (mapped, SIIT, NAT64 in its /96 form, IPv4-compatible) the last 32
    bits."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def classify(ip: IPAddress) -> str | None:
    """Why egress must not connect to ``ip`` ("loopback", "metadata", ...), or None if public."""
    if ip in METADATA:
        return "metadata"
    for network, name in _TABLE:
        if ip.version == network.version and ip in network:
            if name == "ipv4-translation" and isinstance(ip, ipaddress.IPv6Address):
                # Refused either way; the embedded address names the refusal if it can.
                return classify(_embedded_ipv4(ip)) or name
            return name
    # Belt and braces: whatever Python also finds non-global is refused too.
    return None if ip.is_global else "reserved"


async def resolve(host: str, port: int) -> list[IPAddress]:
    """All TCP addresses of ``host`` (an IP literal resolves to itself), without duplicates.

    Raises OSError when the name does not resolve. The caller checks every address and then
    connects only to these, so a DNS answer that changes later (rebinding) changes nothing.
    """
    literal = parse_ip(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # Scope ids ("fe80::1%eth0") are dropped; such addresses are link-local and refused.
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses
