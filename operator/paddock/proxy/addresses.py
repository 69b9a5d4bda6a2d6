"""Which IP addresses egress may connect to, and name resolution that feeds the check.

The rule is "public unicast only": every address is classified after DNS resolution, and an
IPv6 address that embeds an IPv4 one (mapped, 6to4, Teredo, NAT64) is judged by the embedded
address too, so ``::ffff:127.0.0.1`` is loopback however it is spelled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba). All of them are
# non-public anyway; the name makes refusals readable and pins them against exceptions.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

# Checked in order; the first match names the refusal. Anything not listed but not globally
# routable (documentation, benchmarking, reserved ranges) is refused as "reserved".
_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unspecified", ("0.0.0.0/8", "::/128")),
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("link-local", ("169.254.0.0/16", "fe80::/10")),
    ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("cgnat", ("100.64.0.0/10",)),
    ("multicast", ("224.0.0.0/4", "ff00::/8")),
    ("broadcast", ("255.255.255.255/32",)),
    # Deprecated IPv4-compatible IPv6 (::a.b.c.d): never a legitimate destination.
    ("reserved", ("::/96",)),
)
_NETWORKS = tuple((name, ipaddress.ip_network(net)) for name, nets in _CATEGORIES for net in nets)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

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


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def classify(ip: IPAddress) -> str | None:
    """Why egress must not connect to ``ip`` ("loopback", "metadata", ...), or None if public."""
    if ip in METADATA:
        return "metadata"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        category = classify(embedded)
        if category is not None:
            return category
    for name, network in _NETWORKS:
        if ip.version == network.version and ip in network:
            return name
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
