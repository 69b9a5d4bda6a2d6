"""Egress decisions: may this session's sandbox reach host:port, and at which addresses.

`decide` applies, in order: the Environment's mode and allowlist, the port rules, and the
address rules on every address the host resolves to. A refusal names its rule and says why in
a sentence the sandbox user can act on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from paddock.proxy.addresses import IPAddress, classify, parse_ip, resolve
from paddock.proxy.config import AddressException, Credential, EnvironmentPolicy, ProxyConfig

# Public registries allowed by `allow_package_managers` in limited mode.
PACKAGE_REGISTRIES = (
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "ports.ubuntu.com",
    "dl-cdn.alpinelinux.org",
    "proxy.golang.org",
    "sum.golang.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "rubygems.org",
    "index.rubygems.org",
    "repo.maven.apache.org",
    "repo1.maven.org",
)


@dataclass(frozen=True)
class Decision:
    """The outcome for one destination. ``addresses`` are the checked addresses to connect to
    (empty when refused)."""

    allowed: bool
    rule: str
    message: str
    addresses: tuple[IPAddress, ...] = field(default=())


def deny(rule: str, message: str) -> Decision:
    """A refusal by ``rule``."""
    return Decision(False, rule, message)


def host_matches(host: str, pattern: str) -> bool:
    """``pattern`` is a host or ``*.domain``, which matches subdomains but not the domain."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def check_host(environment: str, policy: EnvironmentPolicy | None, host: str) -> Decision:
    """The Environment's own rule for ``host`` (a normalized name or IP literal)."""
    if policy is None:
        return deny(
            "unknown-environment", f'environment "{environment}" is not configured on this proxy'
        )
    if policy.mode == "none":
        return deny(
            "mode-none", f'environment "{environment}" allows no egress (networking mode "none")'
        )
    if policy.mode == "open":
        return Decision(True, "mode-open", "")
    for pattern in policy.allowed_domains:
        if host_matches(host, pattern):
            return Decision(True, f"allowlist:{pattern}", "")
    if policy.allow_package_managers and host in PACKAGE_REGISTRIES:
        return Decision(True, "package-registry", "")
    return deny(
        "allowlist", f'host "{host}" is not in the allowlist of environment "{environment}"'
    )


GIT_SERVICES = ("git-upload-pack", "git-receive-pack")
_GIT_QUERIES = frozenset(f"service={service}" for service in GIT_SERVICES)
_GIT_POSTS = tuple(f"/{service}" for service in GIT_SERVICES)
# Spellings an upstream may decode or normalize into another path: encoded dots, slashes,
# backslashes, "?", "#" and NUL, raw backslashes and fragments.
_AMBIGUOUS_PATH = re.compile(r"%(2e|2f|5c|3f|23|00)|[\\#]", re.IGNORECASE)


def credential_applies(credential: Credential, method: str, target: str) -> bool:
    """Whether a git-path request (``method``, origin-form ``target`` as sent upstream) gets
    ``credential``: git smart-HTTP (``GET .../info/refs?service=git-upload-pack`` or
    ``git-receive-pack``, ``POST .../git-upload-pack`` or ``.../git-receive-pack``) and the
    credential's `api_routes`; nothing else, whatever the method or path."""
    path, _, query = target.partition("?")
    if _AMBIGUOUS_PATH.search(target) or not path.startswith("/"):
        return False
    if any(segment.split(";", 1)[0] in (".", "..") for segment in path.split("/")):
        return False
    if method == "GET" and path.endswith("/info/refs") and query in _GIT_QUERIES:
        return True
    if method == "POST" and not query and path.endswith(_GIT_POSTS):
        return True
    return any(
        method in route.methods and path.startswith(route.path_prefix)
        for route in credential.api_routes
    )


def check_port(
    port: int, own_ports: Iterable[int], blocked_ports: Iterable[int]
) -> Decision | None:
    """A refusal if ``port`` is one of the proxy's own or a blocked port, on any host."""
    if port in own_ports:
        return deny("proxy-port", f"port {port} is one of the credential proxy's own ports")
    if port in blocked_ports:
        return deny("blocked-port", f"port {port} is blocked for egress")
    return None


def check_addresses(
    host: str, port: int, addresses: Iterable[IPAddress], exceptions: Iterable[AddressException]
) -> tuple[Decision | None, bool]:
    """A refusal if any address is not public and not excepted for this port; and whether an
    exception was used. One bad address refuses the host: a name must not mix public and
    internal answers to get lucky."""
    excepted = {(e.ip, e.port) for e in exceptions}
    used_exception = False
    for ip in addresses:
        category = classify(ip)
        if category is None:
            continue
        # The config refuses exceptions for anything but loopback and private addresses.
        if (ip, port) in excepted:
            used_exception = True
            continue
        where = f"{ip} is" if parse_ip(host) is not None else f'host "{host}" resolves to {ip},'
        return deny(
            f"address:{category}",
            f"{where} a {category} address; egress only reaches public addresses",
        ), used_exception
    return None, used_exception


async def check_destination(config: ProxyConfig, host: str, port: int) -> Decision:
    """Whether the proxy may connect to ``host``:``port`` at all, whoever asks: not one of its
    own or a blocked port, and every address public (or excepted). Egress, MCP servers and
    OAuth token endpoints all pass here. An allowed decision carries the checked addresses
    and the rule ``address-exception`` when an exception was used; a host that does not
    resolve is refused with rule ``dns``."""
    refusal = check_port(port, config.listeners.ports, config.blocked_ports)
    if refusal is not None:
        return refusal
    try:
        addresses = await resolve(host, port)
    except OSError:
        return deny("dns", f'host "{host}" does not resolve')
    if not addresses:
        return deny("dns", f'host "{host}" does not resolve')
    refusal, used_exception = check_addresses(host, port, addresses, config.address_exceptions)
    if refusal is not None:
        return refusal
    return Decision(True, "address-exception" if used_exception else "", "", tuple(addresses))


async def decide(config: ProxyConfig, environment: str, host: str, port: int) -> Decision:
    """Whether a session of ``environment`` may connect to ``host``:``port``, and where to.

    ``host`` is normalized (see `addresses.normalize_host`).
    """
    decision = check_host(environment, config.environments.get(environment), host)
    if not decision.allowed:
        return decision
    destination = await check_destination(config, host, port)
    if not destination.allowed:
        return destination
    rule = f"{decision.rule}+{destination.rule}" if destination.rule else decision.rule
    return Decision(True, rule, "", destination.addresses)
