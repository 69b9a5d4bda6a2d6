"""The sandboxes' only way out: an authenticated HTTP forward proxy.

Three routes, one request per connection (every response says ``Connection: close``):

- ``CONNECT host:port``: a byte tunnel, usually TLS the proxy cannot see into;
- absolute-form ``http://host/...``: plain HTTP relayed as is;
- the git path ``/git/<host>/<rest>`` (origin-form, or absolute-form to the proxy's own egress
  port): forwarded to ``https://<host>/<rest>`` with the host's configured credential added.
  The sandbox's git rewrites ``https://<host>/`` to this path, so the token never reaches it.

Every request authenticates with ``Proxy-Authorization: Basic base64(<session>:<token>)`` and
is checked against its token's Environment by `policy.decide`; the connection then goes only to
the addresses that check approved.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal
from urllib.parse import urlsplit

from paddock.proxy import policy
from paddock.proxy.addresses import IPAddress, normalize_host, parse_ip
from paddock.proxy.audit import Audit, Entry
from paddock.proxy.files import SecretUnavailable
from paddock.proxy.http1 import (
    Count,
    Framing,
    Head,
    HttpError,
    check_request_line,
    end_to_end,
    pipe,
    read_head,
    relay_body,
    request_framing,
    response_framing,
    serialize_head,
)
from paddock.proxy.runtime import Runtime
from paddock.proxy.tokens import InvalidToken

HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0
GIT_PREFIX = "/git/"


class Refused(Exception):
    """A request the proxy answers itself: ``status`` with a JSON body naming ``rule``."""

    def __init__(
        self, status: int, rule: str, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.rule, self.message = status, rule, message
        self.headers = headers or []


@dataclass(frozen=True)
class Target:
    """Where a request wants to go."""

    route: Literal["connect", "forward", "git"]
    host: str
    """Normalized host name or IP literal: what policy judges."""
    port: int
    authority: str
    """``host[:port]`` for the upstream ``Host`` header."""
    path: str = ""
    """Origin-form path and query sent upstream (forward and git routes)."""
    tls: bool = False


def split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """``(normalized host, port)`` of ``host[:port]`` / ``[v6][:port]``. Raises `HttpError`."""
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise HttpError(400, f"invalid authority {authority!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = authority.partition(":")
    normalized = normalize_host(host)
    if normalized is None:
        raise HttpError(400, f"invalid host {host!r}")
    if not port_text:
        if default_port is None:
            raise HttpError(400, f"authority {authority!r} has no port")
        return normalized, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HttpError(400, f"invalid port in {authority!r}")
    return normalized, int(port_text)


def parse_target(
    method: str,
    target: str,
    *,
    egress_port: int,
    overrides: Mapping[str, str],
    own_addresses: frozenset[str] = frozenset(),
) -> Target:
    """The route and destination of a request line. Raises `HttpError` (400).

    An absolute-form ``http://<authority>/git/...`` is the git path only when the authority is
    the proxy itself: the egress port at one of ``own_addresses`` (the address the client
    connected to, as an IP literal). Any other authority is plain forwarding to it."""
    if method == "CONNECT":
        host, port = split_authority(target, None)
        return Target("connect", host, port, target)
    if target.startswith(GIT_PREFIX):
        return _git_target(target, overrides)
    if target[:7].lower() == "http://":
        parts = urlsplit(target)
        # "http://allowed.example@evil.example/" must not confuse anyone: no userinfo at all.
        if "@" in parts.netloc:
            raise HttpError(400, "userinfo in the request target is not allowed")
        host, port = split_authority(parts.netloc, 80)
        path = target[7 + len(parts.netloc) :] or "/"
        if path.startswith(GIT_PREFIX) and port == egress_port and host in own_addresses:
            return _git_target(path, overrides)
        return Target("forward", host, port, parts.netloc, path)
    if target[:8].lower() == "https://":
        raise HttpError(400, "send https:// requests through CONNECT")
    raise HttpError(
        400, "this is a forward proxy: send absolute-form http:// requests, CONNECT, or /git/ paths"
    )


def _git_target(path: str, overrides: Mapping[str, str]) -> Target:
    authority, _, rest = path[len(GIT_PREFIX) :].partition("/")
    authority = authority.lower()
    tls = overrides.get(authority, "https") == "https"
    host, port = split_authority(authority, 443 if tls else 80)
    return Target("git", host, port, authority, "/" + rest, tls)


def _refusal_bytes(refused: Refused) -> bytes:
    body = json.dumps({"error": {"rule": refused.rule, "message": refused.message}}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Paddock-Rule", refused.rule),
        ("Connection", "close"),
        *refused.headers,
    ]
    start = ("HTTP/1.1", str(refused.status), HTTPStatus(refused.status).phrase)
    return serialize_head(start, headers) + body + b"\n"


class EgressProxy:
    """Serves the egress listener; pass `handle` to `asyncio.start_server`."""

    def __init__(self, runtime: Runtime, audit: Audit) -> None:
        self.runtime = runtime
        self.audit = audit
        self.tls = ssl.create_default_context()
        self._active = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection: at most one request, audited once, closed afterwards.

        Nothing is forwarded before the request authenticated and its destination was allowed.
        """
        if self._active >= self.runtime.config.max_egress_connections:
            writer.close()  # a flood of connections must not starve the API listener
            return
        self._active += 1
        try:
            await _Connection(self, reader, writer).run()
        finally:
            self._active -= 1


class _Connection:
    """One client connection of the egress listener and its single request."""

    def __init__(
        self, proxy: EgressProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.runtime = proxy.runtime
        self.reader, self.writer = reader, writer
        self.entry = Entry("egress")
        self.responded = False

    async def run(self) -> None:
        entry = self.entry
        try:
            head = await asyncio.wait_for(read_head(self.reader), HEAD_TIMEOUT)
            if head is None:
                return
            entry.method = head.start[0]
            await self._serve(head)
        except (HttpError, Refused) as exc:
            refused = (
                exc
                if isinstance(exc, Refused)
                else Refused(exc.status, "malformed-request", exc.message)
            )
            if not self.responded:
                entry.rule, entry.status = refused.rule, refused.status
                self.writer.write(_refusal_bytes(refused))
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            # A peer went away or stalled. Before any response, tell the client (if it still
            # listens) that the exchange failed; after, cutting the connection is the signal.
            if entry.method is not None and not self.responded:
                entry.status = 502
                failed = Refused(502, entry.rule, "the exchange with the upstream failed")
                self.writer.write(_refusal_bytes(failed))
        finally:
            # Audit first: when the client sees the connection end, the line is written.
            if entry.method is not None:
                self.proxy.audit.record(entry)
            self.writer.close()

    def _respond(self, data: bytes, status: int) -> None:
        self.writer.write(data)
        self.responded = True
        self.entry.status = status

    async def _serve(self, head: Head) -> None:
        """Authorize and carry out one request. Raises `Refused` or `HttpError` for anything the
        proxy answers itself."""
        check_request_line(head)
        method, raw_target, version = head.start
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise HttpError(505, "only HTTP/1.x is supported")
        config = self.runtime.config
        target = parse_target(
            method,
            raw_target,
            egress_port=config.listeners.egress.port,
            overrides=config.upstream_scheme_overrides,
            own_addresses=self._own_addresses(),
        )
        self.entry.host, self.entry.port = target.host, target.port
        environment = self._authenticate(head)
        framing = None if target.route == "connect" else request_framing(head)
        decision = await policy.decide(config, environment, target.host, target.port)
        self.entry.rule = decision.rule
        if not decision.allowed:
            raise Refused(502 if decision.rule == "dns" else 403, decision.rule, decision.message)
        authorization = self._credential(method, target)
        self.entry.decision = "allow"
        up_reader, up_writer = await self._open(target, decision.addresses)
        try:
            if framing is None:
                self._respond(b"HTTP/1.1 200 Connection Established\r\n\r\n", 200)
                await self._tunnel(up_reader, up_writer)
            else:
                await self._send_request(head, target, authorization, framing, up_writer)
                await self._relay_response(method, up_reader)
        finally:
            up_writer.close()

    def _authenticate(self, head: Head) -> str:
        """The Environment of a valid egress token; raise `Refused` (407, or 503 without key)."""
        challenge = [("Proxy-Authenticate", 'Basic realm="paddock"')]
        value = head.get("proxy-authorization")
        if value is None:
            raise Refused(407, "auth", "proxy authentication required", challenge)
        scheme, _, encoded = value.partition(" ")
        try:
            if scheme.lower() != "basic":
                raise ValueError(scheme)
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (ValueError, binascii.Error):
            raise Refused(407, "auth", "malformed Proxy-Authorization", challenge) from None
        session_id, _, token = decoded.partition(":")
        try:
            claims = self.runtime.verify_token(session_id, token)
        except InvalidToken as exc:
            raise Refused(407, "auth", str(exc), challenge) from None
        except SecretUnavailable:
            raise Refused(503, "token-key-unavailable", "the proxy cannot verify tokens") from None
        self.entry.session = claims.session_id
        return claims.environment

    def _own_addresses(self) -> frozenset[str]:
        """The address this connection reached, as normalized IP literals (an IPv4 client of
        a dual-stack socket arrives on ``::ffff:a.b.c.d``: both spellings)."""
        sockname = self.writer.get_extra_info("sockname")
        ip = parse_ip(str(sockname[0])) if sockname else None
        if ip is None:
            return frozenset()
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return frozenset(str(a) for a in (ip, mapped) if a is not None)

    def _credential(self, method: str, target: Target) -> str | None:
        """The ``Authorization`` to add: only on the git path, only for git smart-HTTP and the
        credential's API routes (see `policy.credential_applies`)."""
        if target.route != "git":
            return None
        credential = self.runtime.credential_for(target.host)
        if credential is None or not policy.credential_applies(credential, method, target.path):
            return None
        try:
            authorization = self.runtime.authorization(credential)
        except SecretUnavailable:
            message = f'the credential for "{target.host}" is unavailable'
            raise Refused(502, "credential-unavailable", message) from None
        self.entry.injected = credential.host
        return authorization

    async def _open(
        self, target: Target, addresses: tuple[IPAddress, ...]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the first reachable checked address (TLS on the git path unless
        overridden). Only addresses `policy.decide` approved are ever dialled."""
        for ip in addresses:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(
                        str(ip),
                        target.port,
                        ssl=self.proxy.tls if target.tls else None,
                        server_hostname=target.host if target.tls else None,
                    ),
                    CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError):
                continue
        raise Refused(502, self.entry.rule, f"cannot connect to {target.authority}")

    async def _tunnel(
        self, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> None:
        """Relay both ways until both sides finished, or nothing moved for IDLE_TIMEOUT."""
        entry = self.entry
        last_activity = time.monotonic()

        def up(size: int) -> None:
            nonlocal last_activity
            entry.bytes_up += size
            last_activity = time.monotonic()

        def down(size: int) -> None:
            nonlocal last_activity
            entry.bytes_down += size
            last_activity = time.monotonic()

        async def one_way(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, count: Count
        ) -> None:
            await pipe(source, sink, idle=None, count=count)
            if sink.can_write_eof():
                sink.write_eof()  # half-close: the other direction may still be sending

        relays = [
            asyncio.create_task(one_way(self.reader, up_writer, up)),
            asyncio.create_task(one_way(up_reader, self.writer, down)),
        ]
        try:
            # One shared idle clock: a long download with a silent client is not idle.
            while (idle_left := last_activity + IDLE_TIMEOUT - time.monotonic()) > 0:
                done, pending = await asyncio.wait(
                    relays, timeout=idle_left, return_when=asyncio.FIRST_EXCEPTION
                )
                for relay in done:
                    relay.result()  # re-raises a failed direction
                if not pending:
                    return
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

    async def _send_request(
        self,
        head: Head,
        target: Target,
        authorization: str | None,
        framing: Framing,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Send the request in origin-form with end-to-end headers only, then its body."""
        drop = {"host", "expect"} | ({"authorization"} if authorization else set())
        headers = [("Host", target.authority)]
        headers += [(n, v) for n, v in end_to_end(head.headers) if n.lower() not in drop]
        if authorization:
            headers.append(("Authorization", authorization))
        headers.append(("Connection", "close"))
        up_writer.write(serialize_head((head.start[0], target.path, "HTTP/1.1"), headers))
        # The proxy answers Expect itself: upstream was reached, so the body may come.
        expect = (head.get("expect") or "").lower() == "100-continue"
        if expect and (framing.chunked or framing.length):
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await relay_body(self.reader, up_writer, framing, idle=IDLE_TIMEOUT, count=self._up)

    async def _relay_response(self, method: str, up_reader: asyncio.StreamReader) -> None:
        """Relay the final response (interim 1xx responses are dropped) and its body."""
        invalid = Refused(502, self.entry.rule, "the upstream sent no valid response")
        try:
            while True:
                head = await asyncio.wait_for(read_head(up_reader), IDLE_TIMEOUT)
                if head is None or not head.start[0].startswith("HTTP/1."):
                    raise invalid
                status = head.start[1]
                if not (status.isdigit() and len(status) == 3) or status == "101":
                    raise invalid
                if not status.startswith("1"):
                    break
            framing = response_framing(head, method)
        except HttpError:
            raise invalid from None
        headers = [*end_to_end(head.headers), ("Connection", "close")]
        self._respond(serialize_head(("HTTP/1.1", status, head.start[2]), headers), int(status))
        await relay_body(up_reader, self.writer, framing, idle=IDLE_TIMEOUT, count=self._down)

    def _up(self, size: int) -> None:
        self.entry.bytes_up += size

    def _down(self, size: int) -> None:
        self.entry.bytes_down += size
