"""Just enough HTTP/1.1 for a forward proxy: message heads, body framing, raw relaying.

Bodies are relayed byte for byte in their original framing (``Content-Length`` or chunked), so
nothing is decoded or re-encoded. Parsing is strict where lenient parsers disagree (request
smuggling): no obsolete line folding, no space before a header colon, no request that has both
``Content-Length`` and ``Transfer-Encoding``, no transfer coding but ``chunked``, no control
character in a header value, and a request line of exactly ``method SP target SP version``
whose target is visible ASCII only (a tab, a space or any other control character in it is a
400, never forwarded).

Why not h11: it relays nothing byte for byte (bodies come out decoded and would have to be
re-framed), and it accepts two things this proxy must refuse, a request with both
``Content-Length`` and ``Transfer-Encoding`` (it uses the latter) and obsolete line folding
(it unfolds), so the checks here would stay on top of it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
CHUNK = 64 * 1024
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# RFC 9112 §3: request-line = method SP request-target SP HTTP-version; the target is visible
# ASCII (RFC 3986 characters; anything else, tabs and spaces included, is refused).
_REQUEST_TARGET = re.compile(r"[\x21-\x7e]+")
_HTTP_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
# Field values: visible characters, spaces, tabs and obs-text; no other control character.
_FIELD_VALUE_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus the proxy's own.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "upgrade",
    }
)

Headers = list[tuple[str, str]]
Count = Callable[[int], None]


class HttpError(Exception):
    """A request the proxy answers itself with ``status`` (and never forwards)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Head:
    """A parsed start line and header fields, in their original order and case."""

    start: tuple[str, str, str]
    headers: Headers

    def get(self, name: str) -> str | None:
        """All values of ``name`` joined with ``,`` (None if absent)."""
        values = [value for key, value in self.headers if key.lower() == name]
        return ", ".join(values) if values else None


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next message head, or None if the peer closed the connection before sending one.

    Raises `HttpError` (400/431) for a head that is malformed or too large.
    """
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError(400, "incomplete message head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "message head too large") from None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    start = lines[0].split(" ", 2)
    if len(start) == 2:  # a status line may omit the reason phrase
        start.append("")
    if len(start) != 3:
        raise HttpError(400, "malformed start line")
    headers: Headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name) or _FIELD_VALUE_CTL.search(value):
            raise HttpError(400, "malformed header field")
        headers.append((name, value.strip(" \t")))
    return Head((start[0], start[1], start[2]), headers)


def check_request_line(head: Head) -> None:
    """Raise `HttpError` (400) unless ``head`` starts with a well-formed request line:
    a token method, a target of visible ASCII, ``HTTP/x.y``."""
    method, target, version = head.start
    if not _TOKEN.fullmatch(method):
        raise HttpError(400, "malformed request method")
    if not _REQUEST_TARGET.fullmatch(target):
        raise HttpError(400, "the request target holds a space or a control character")
    if not _HTTP_VERSION.fullmatch(version):
        raise HttpError(400, "malformed HTTP version")


@dataclass(frozen=True)
class Framing:
    """How a body ends: ``length`` bytes, ``chunked``, or at connection close (``length`` None,
    responses only)."""

    length: int | None = 0
    chunked: bool = False


def request_framing(head: Head) -> Framing:
    """The framing of a request body. Raises `HttpError` for ambiguous framing."""
    coding = head.get("transfer-encoding")
    length = head.get("content-length")
    if coding is not None:
        if length is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if coding.strip().lower() != "chunked":
            raise HttpError(501, f"unsupported transfer coding {coding!r}")
        return Framing(None, chunked=True)
    if length is None:
        return Framing(0)
    return Framing(_content_length(length))


def response_framing(head: Head, request_method: str) -> Framing:
    """The framing of a response body to a ``request_method`` request (RFC 9112 §6.3)."""
    status = int(head.start[1])
    if request_method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Framing(0)
    coding = head.get("transfer-encoding")
    if coding is not None:
        chunked = coding.lower().rsplit(",", 1)[-1].strip() == "chunked"
        return Framing(None, chunked=chunked)
    length = head.get("content-length")
    return Framing(None) if length is None else Framing(_content_length(length))


def _content_length(value: str) -> int:
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise HttpError(400, "invalid Content-Length")
    return int(values.pop())


def serialize_head(start: tuple[str, str, str], headers: Headers) -> bytes:
    """The wire form of a message head."""
    lines = [" ".join(start), *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def end_to_end(headers: Headers) -> Headers:
    """``headers`` without hop-by-hop fields, including those named in ``Connection``."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP and n.lower() not in named]


async def _read(reader: asyncio.StreamReader, size: int, idle: float | None) -> bytes:
    return await asyncio.wait_for(reader.read(size), idle)


async def relay_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    framing: Framing,
    *,
    idle: float | None,
    count: Count,
) -> None:
    """Copy one body in ``framing`` from ``reader`` to ``writer``, calling ``count`` with the
    size of every piece of payload copied.

    Raises `HttpError` on malformed chunking, ConnectionError if the body ends early, and
    TimeoutError when a read waits ``idle`` seconds (None: no limit).
    """
    if framing.chunked:
        await _relay_chunked(reader, writer, idle, count)
    elif framing.length is None:
        await pipe(reader, writer, idle=idle, count=count)
    else:
        await _relay_exact(reader, writer, framing.length, idle, count)


async def _relay_exact(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    size: int,
    idle: float | None,
    count: Count,
) -> None:
    left = size
    while left:
        data = await _read(reader, min(left, CHUNK), idle)
        if not data:
            raise ConnectionError("body ended early")
        writer.write(data)
        await writer.drain()
        count(len(data))
        left -= len(data)


async def _relay_line(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: float | None
) -> bytes:
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), idle)
    except asyncio.IncompleteReadError:
        raise ConnectionError("body ended early") from None
    except asyncio.LimitOverrunError:
        raise HttpError(400, "chunk line too long") from None
    writer.write(line)
    return line


async def _relay_chunked(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: float | None, count: Count
) -> None:
    while True:
        line = await _relay_line(reader, writer, idle)
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise HttpError(400, "malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            while await _relay_line(reader, writer, idle) != b"\r\n":  # trailer fields
                pass
            await writer.drain()
            return
        await _relay_exact(reader, writer, size, idle, count)
        if await _relay_line(reader, writer, idle) != b"\r\n":
            raise HttpError(400, "malformed chunk")


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, idle: float | None, count: Count
) -> None:
    """Copy until ``reader`` ends. Raises TimeoutError when a read waits ``idle`` seconds."""
    while data := await _read(reader, CHUNK, idle):
        writer.write(data)
        await writer.drain()
        count(len(data))
