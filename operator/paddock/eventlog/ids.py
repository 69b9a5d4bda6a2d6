"""Prefixed, sortable ids: ``sesn_`` for sessions, ``sevt_`` for events, ``new_id`` for others.

An event id is a fixed-width base62 encoding of its Redis stream entry id, so it maps to
its position in the session's stream without a lookup (list cursors, SSE
``Last-Event-ID``), followed by a short discriminator derived from the session id, so ids
are unique across sessions and an id from another session is rejected instead of being
silently read as a position.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from functools import lru_cache

from paddock.eventlog.errors import InvalidId

# ASCII order, so fixed-width strings sort exactly like the numbers they encode.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {char: value for value, char in enumerate(ALPHABET)}
# Two digits at a time halves the work of encoding, which replays do for every event.
_PAIRS = [high + low for high in ALPHABET for low in ALPHABET]

SESSION_PREFIX = "sesn_"
THREAD_PREFIX = "sthr_"
EVENT_PREFIX = "sevt_"

# 62**8 milliseconds reach the year 8900; 62**6 entries within one millisecond is far more
# than Redis can generate (it only exceeds 0 when the clock stalls or steps back).
_MS_WIDTH = 8
_SEQ_WIDTH = 6
_TAG_WIDTH = 4
_RANDOM_WIDTH = 14  # ~83 bits of randomness after the timestamp in a session id
_EVENT_BODY = _MS_WIDTH + _SEQ_WIDTH + _TAG_WIDTH

# Session ids end up inside a Redis Cluster hash tag, so no braces or separators allowed.
SESSION_ID_PATTERN = re.compile(r"^sesn_[0-9A-Za-z]{1,64}$")


def encode_base62(value: int, width: int) -> str:
    """``value`` in base62, left-padded to exactly ``width`` characters. ``read.lua``
    encodes event ids the same way (tests/eventlog/test_reads.py checks they agree)."""
    if value < 0 or value >= 62**width:
        raise ValueError(f"{value} does not fit in {width} base62 digits")
    digits = []
    for _ in range(width // 2):
        value, pair = divmod(value, 62 * 62)
        digits.append(_PAIRS[pair])
    if width % 2:
        digits.append(ALPHABET[value])  # what is left is a single digit
    return "".join(reversed(digits))


def decode_base62(text: str) -> int:
    """The number a base62 string encodes; ``ValueError`` on other characters."""
    value = 0
    for char in text:
        try:
            value = value * 62 + _INDEX[char]
        except KeyError:
            raise ValueError(f"not base62: {text!r}") from None
    return value


def new_id(prefix: str) -> str:
    """A new id such as ``agent_…`` or ``env_…``: ``prefix``, the creation time in
    milliseconds, then randomness, all base62.

    Ids with one prefix sort by creation time (to the millisecond) and never collide in
    practice.
    """
    millis = time.time_ns() // 1_000_000
    return (
        prefix
        + encode_base62(millis, _MS_WIDTH)
        + encode_base62(secrets.randbelow(62**_RANDOM_WIDTH), _RANDOM_WIDTH)
    )


def new_session_id() -> str:
    """A new ``sesn_`` id (see ``new_id``)."""
    return new_id(SESSION_PREFIX)


def check_session_id(session_id: str) -> str:
    """Return ``session_id`` if it is a well-formed ``sesn_`` id, else raise ``InvalidId``."""
    if not SESSION_ID_PATTERN.match(session_id):
        raise InvalidId(f"not a session id: {session_id!r}")
    return session_id


@lru_cache(maxsize=4096)
def session_tag(session_id: str) -> str:
    """The four-character discriminator that ends every event id of ``session_id``."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=4).digest()
    return encode_base62(int.from_bytes(digest, "big") % 62**_TAG_WIDTH, _TAG_WIDTH)


def event_id(stream_id: str | bytes, tag: str) -> str:
    """The ``sevt_`` id of the stream entry ``stream_id`` ("<ms>-<seq>") of a session."""
    if isinstance(stream_id, bytes):
        stream_id = stream_id.decode()
    millis, _, seq = stream_id.partition("-")
    return _millis_head(int(millis)) + _seq_digits(int(seq)) + tag


@lru_cache(maxsize=256)
def _millis_head(millis: int) -> str:
    # Every append encodes the ids of its events: concurrent appends share milliseconds.
    return EVENT_PREFIX + encode_base62(millis, _MS_WIDTH)


def event_ids(stream_ids: Iterable[bytes], tag: str) -> list[str]:
    """``event_id`` of many entries of one session, in order, faster: entries added in the
    same millisecond share the encoding of their time."""
    ids = []
    last_millis = b""
    head = ""
    for entry in stream_ids:
        millis, _, seq = entry.partition(b"-")
        if millis != last_millis:
            last_millis = millis
            head = EVENT_PREFIX + encode_base62(int(millis), _MS_WIDTH)
        ids.append(head + _seq_digits(int(seq)) + tag)
    return ids


@lru_cache(maxsize=1024)
def _seq_digits(seq: int) -> str:
    # Sequence numbers are nearly always small: 0 for the first entry of a millisecond.
    return encode_base62(seq, _SEQ_WIDTH)


def stream_id(event_id: str, tag: str) -> str:
    """The stream entry id ("<ms>-<seq>") an event id of the session with ``tag`` points at.

    Raises ``InvalidId`` if ``event_id`` is malformed or belongs to another session.
    """
    body = event_id.removeprefix(EVENT_PREFIX)
    if len(event_id) - len(body) != len(EVENT_PREFIX) or len(body) != _EVENT_BODY:
        raise InvalidId(f"not an event id: {event_id!r}")
    if body[_MS_WIDTH + _SEQ_WIDTH :] != tag:
        raise InvalidId(f"event id {event_id!r} belongs to another session")
    try:
        millis = decode_base62(body[:_MS_WIDTH])
        seq = decode_base62(body[_MS_WIDTH : _MS_WIDTH + _SEQ_WIDTH])
    except ValueError:
        raise InvalidId(f"not an event id: {event_id!r}") from None
    return f"{millis}-{seq}"


def thread_session_id(session_id: str, key: str) -> str:
    """The session that runs the thread a coordinator of ``session_id`` starts for ``key``
    (its tool call id): derived, not random, so a worker resuming the call finds the same
    thread instead of starting a second one."""
    digest = hashlib.blake2b(f"{session_id}:{key}".encode(), digest_size=16).digest()
    return SESSION_PREFIX + encode_base62(int.from_bytes(digest, "big"), 22)


def thread_id(thread_session: str) -> str:
    """The public ``sthr_`` id of the thread that session ``thread_session`` runs."""
    return THREAD_PREFIX + check_session_id(thread_session).removeprefix(SESSION_PREFIX)


def session_of_thread(thread: str) -> str:
    """The session that runs thread ``thread`` (``InvalidId`` if it is no ``sthr_`` id)."""
    if not thread.startswith(THREAD_PREFIX):
        raise InvalidId(f"not a thread id: {thread!r}")
    return check_session_id(SESSION_PREFIX + thread.removeprefix(THREAD_PREFIX))
