"""The event log: one Redis stream per session, with its snapshot, lease and dedup keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from redis.asyncio import Redis

from paddock.eventlog.errors import InvalidId, LeaseLost, SessionNotFound, SessionTerminated
from paddock.eventlog.events import EVENT_TYPES, INPUT_PREFIX, AnyEvent, SessionDeletedEvent
from paddock.eventlog.ids import event_id, session_of_thread, session_tag, stream_id
from paddock.eventlog.keys import (
    COMPANION_SUFFIXES,
    WORK_GROUP,
    SessionKeys,
    TenantViews,
    check_agent,
    check_tenant,
    companion_keys,
    session_keys,
    session_previews,
    tenant_of,
    work_keys,
)
from paddock.eventlog.lease import Heartbeat, Lease
from paddock.eventlog.scripts import Scripts
from paddock.eventlog.snapshot import SessionSnapshot, changes, from_meta
from paddock.eventlog.storage import Row, decode, decode_lines, entry_time, payload
from paddock.eventlog.tail import Tail

Order = Literal["asc", "desc"]
AcquireOutcome = Literal["acquired", "held", "no_input", "no_session"]


@dataclass(frozen=True, slots=True)
class LeaseAttempt:
    """What ``EventLog.try_acquire_lease`` got: the lease, or why not."""

    lease: Lease | None
    outcome: AcquireOutcome
    held_for_ms: int = 0
    """With ``held``: how long the holder's lease still runs unless renewed."""


# Entries per read script call: large enough that a 10,000-event replay takes a handful of
# round trips, small enough that one call never blocks the server for long.
_READ_BATCH = 2000
# Replays read smaller pages: the first page is the only one not decoded while Redis reads
# another, and its wait is the one the caller sees in full.
_REPLAY_BATCH = 1000
_SEND_PASSES = 3


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of ``EventLog.list_events``."""

    data: list[AnyEvent]
    next_cursor: str | None
    """Pass as ``cursor`` (with the same ``order``) for the next page; None on the last."""


@dataclass(frozen=True, slots=True)
class Appended:
    """What ``EventLog.append_after`` stored."""

    events: list[AnyEvent]
    """The stored events, with ``id`` and ``processed_at``."""
    follows: str | None
    """The id of the event the stored ones follow directly in the log: everything before
    them is that event and the ones before it. None when the log was empty, or when the
    append repeated an earlier one (``key``), which stored nothing now."""
    agent: str
    """The session's Agent (``<namespace>/<name>``)."""


@dataclass(frozen=True, slots=True)
class IdReservation:
    """Event ids reserved for the next append of a session: ``id(i)`` for its ``i``-th
    event (all in one millisecond, so they sort in that order)."""

    millis: int
    tag: str

    def id(self, index: int) -> str:
        return event_id(f"{self.millis}-{index}", self.tag)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


SOCKET_TIMEOUT_S = 30.0
"""Longer than any blocking read (tails and work claims block 5 s at most by default)."""


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where Redis is and who to be there: the URL (``redis://`` or ``rediss://`` for TLS),
    the ACL user and its password, and for TLS the CA bundle that signed the server's
    certificate (a file, or PEM text); without one the system's CAs are trusted."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    ca_pem: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str = "PADDOCK_REDIS") -> RedisSettings:
        """``<prefix>_URL``, ``_USERNAME``, ``_PASSWORD`` or ``_PASSWORD_FILE``, ``_CA_FILE``
        or ``_CA_PEM``."""
        password = env.get(f"{prefix}_PASSWORD") or None
        if path := env.get(f"{prefix}_PASSWORD_FILE"):
            password = Path(path).read_text().strip()
        return cls(
            url=env[f"{prefix}_URL"],
            username=env.get(f"{prefix}_USERNAME") or None,
            password=password,
            ca_file=env.get(f"{prefix}_CA_FILE") or None,
            ca_pem=env.get(f"{prefix}_CA_PEM") or None,
        )

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``Redis.from_url`` / ``ConnectionPool.from_url``."""
        options: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT_S,
            "socket_connect_timeout": 5,
            "health_check_interval": 15,
        }
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if self.ca_file or self.ca_pem:
            if not self.tls:
                raise ValueError(f"a CA bundle is for TLS: use a rediss:// URL, not {self.url}")
            options["ssl_ca_certs"] = self.ca_file
            options["ssl_ca_data"] = self.ca_pem
        if self.tls:
            options["ssl_cert_reqs"] = "required"  # and the host name is checked
        return options


def connect(redis: str | RedisSettings) -> Redis:
    """A client for the event log (from a URL, or settings with credentials and TLS).
    redis-py's default read timeout (5 s) is as long as a blocking read, so an idle tail
    would fail now and then; this one waits longer, and pings an idle pooled connection
    before reusing it."""
    settings = RedisSettings(redis) if isinstance(redis, str) else redis
    return Redis.from_url(settings.url, **settings.options())


class EventLog(TenantViews):
    """Sessions' event logs in Redis (``redis.asyncio``).

    Every write is one Lua script on the keys of one session, so it is atomic: it either
    happens completely (events appended, snapshot updated, idempotency key recorded) or
    not at all. An append is acknowledged only after Redis executed it; with AOF and
    ``appendfsync always`` it is then on disk. Every acknowledged event is visible to reads.

    The client must use ``decode_responses=False`` (the default), and its
    ``socket_timeout``, if any, must exceed the ``block_ms`` of tails and work claims.

    A log is the view of one tenant (namespace): its sessions' keys are under the tenant's
    prefix (see ``keys``). ``EventLog(redis)`` without a tenant is the root that the
    operator and the gateway, which serve many tenants, hold; ``tenant(namespace)`` gives
    the view of one (sharing the client and the scripts).
    """

    def __init__(self, redis: Redis, tenant: str | None = None) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("EventLog needs a client with decode_responses=False")
        self.redis = redis
        self.scripts = Scripts.register(redis)
        self.namespace = None if tenant is None else check_tenant(tenant)
        self._views: dict[str, EventLog] = {}

    def keys(self, session_id: str) -> SessionKeys:
        """The keys of a session of this view's tenant."""
        if self.namespace is None:
            raise ValueError("a session needs its tenant: use EventLog.tenant(namespace)")
        return session_keys(self.namespace, session_id)

    def _own(self, agent: str) -> bool:
        # The agent comes from the session's meta hash, which the tenant's own harness can
        # write: a session names an Agent of its tenant, or its work goes nowhere (the
        # gateway, which reaches every tenant, must not queue it on another's queue).
        try:
            return tenant_of(agent) == self.namespace
        except InvalidId:
            return False

    # Sessions.

    async def create_session(self, session_id: str, *, agent: str) -> bool:
        """Create an empty session (status ``idle``) whose work goes to ``agent``'s queue
        (``<namespace>/<name>``, in this tenant). Returns False, changing nothing, if it
        already exists."""
        if tenant_of(agent) != self.namespace:
            raise ValueError(f"agent {agent} is not of tenant {self.namespace}")
        keys = self.keys(session_id)
        created = await self.scripts.create_session(keys=[keys.meta], args=[check_agent(agent)])
        return bool(created)

    async def snapshot(self, session_id: str) -> SessionSnapshot:
        """Status, stop reason, usage and counters of a session, read atomically."""
        keys = self.keys(session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.meta)
            pipe.get(keys.lease)
            pipe.time()
            meta, lease, (seconds, micros) = await pipe.execute()
        if not meta:
            raise SessionNotFound(session_id)
        fields = {key.decode(): value.decode() for key, value in meta.items()}
        return from_meta(session_id, fields, _text(lease), seconds * 1000 + micros // 1000)

    async def snapshots(
        self, session_ids: Collection[str], *, tenants: Mapping[str, str] | None = None
    ) -> dict[str, SessionSnapshot]:
        """Snapshots of many sessions in one round trip (for a status sync over thousands of
        sessions); sessions that do not exist are left out. Each snapshot is consistent on
        its own; together they are not one atomic read. ``tenants`` (session id ->
        namespace) reads sessions of many tenants, for the operator's sync; without it the
        sessions are this view's."""
        ids = list(session_ids)
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                if tenants is None:
                    keys = self.keys(session_id)
                else:
                    keys = session_keys(tenants[session_id], session_id)
                pipe.hgetall(keys.meta)
                pipe.get(keys.lease)
            pipe.time()
            replies = await pipe.execute()
        seconds, micros = replies[-1]
        now_ms = seconds * 1000 + micros // 1000
        found = {}
        for session_id, meta, lease in zip(ids, replies[0:-1:2], replies[1:-1:2], strict=True):
            if meta:
                fields = {key.decode(): value.decode() for key, value in meta.items()}
                found[session_id] = from_meta(session_id, fields, _text(lease), now_ms)
        return found

    async def delete_session(self, session_id: str) -> bool:
        """Delete every key of the session and every work entry for it.

        Appends ``session.deleted`` first, so open tails deliver it and end. A worker still
        on the session finds its lease gone and its appends refused (``SessionNotFound``).
        Safe to repeat; returns False if the session did not exist.
        """
        keys = self.keys(session_id)
        companions = companion_keys(self.namespace or "", session_id)
        threads = await self.threads_of(session_id)
        try:
            agent = (
                await self._write(
                    session_id, [SessionDeletedEvent()], token="", client=False, key=None
                )
            ).agent
        except SessionNotFound:
            return False
        # The threads its coordinator started go with it.
        for thread in threads:
            await self.delete_session(thread)
        await self.redis.delete(*keys, *companions)
        if self._own(agent):
            await self.scripts.forget(keys=work_keys(agent), args=[session_id, WORK_GROUP])
        return True

    async def threads_of(self, session_id: str) -> list[str]:
        """The sessions that run the threads the session's coordinator started (see
        paddock.harness.threads); [] for a session without any."""
        key = companion_keys(self.namespace or "", session_id)[COMPANION_SUFFIXES.index("threads")]
        # HGETALL: HKEYS is not among the tenants' commands.
        threads = cast(dict[bytes, bytes], await self.redis.hgetall(key))
        return [session_of_thread(thread.decode()) for thread in threads]

    # Writes.

    async def append(
        self,
        session_id: str,
        events: Sequence[AnyEvent],
        *,
        fence: Lease,
        key: str | None = None,
        reserved: Sequence[str] = (),
    ) -> list[AnyEvent]:
        """Append events as the session's worker, in order, atomically with the lease check.

        Refused with ``LeaseLost`` (nothing written) unless ``fence`` is the session's current
        lease. With ``key`` (for example a tool_use id) the append happens at most once: a
        later append with the same key writes nothing and returns the events stored the
        first time. Returns the stored events, with ``id`` and ``processed_at``.

        ``reserved``: event ids from ``reserve`` for the first ``len(reserved)`` events
        (previews announced them). They are used if nothing was appended to the session
        since they were reserved; otherwise the events get new ids, as without them.
        """
        appended = await self.append_after(
            session_id, events, fence=fence, key=key, reserved=reserved
        )
        return appended.events

    async def append_after(
        self,
        session_id: str,
        events: Sequence[AnyEvent],
        *,
        fence: Lease,
        key: str | None = None,
        reserved: Sequence[str] = (),
    ) -> Appended:
        """``append``, also telling which event the stored ones follow: a worker that has
        folded the log up to that event can fold the stored events without reading them
        back (``Appended.follows``)."""
        if fence.session_id != session_id:
            raise ValueError(f"lease of {fence.session_id} used to append to {session_id}")
        if len(reserved) > len(events):
            raise ValueError("more reserved ids than events")
        return await self._write(
            session_id, events, token=str(fence.token), client=False, key=key, reserved=reserved
        )

    async def reserve(self, session_id: str) -> IdReservation:
        """Event ids that the next append of the session can give its first events, known
        before it happens (a preview names the event it previews). They are taken from the
        server's clock one millisecond ahead, so they come after every entry appended so
        far, and hold unless something else is appended before them."""
        seconds, micros = await self.redis.time()
        return IdReservation(int(seconds) * 1000 + int(micros) // 1000 + 1, session_tag(session_id))

    async def publish_previews(self, session_id: str, message: bytes) -> None:
        """Publish ``message`` (previews of events being produced) on the session's
        previews channel: fire and forget, nothing is stored."""
        await self.redis.publish(session_previews(self.namespace or "", session_id), message)

    @contextlib.asynccontextmanager
    async def previews(self, session_id: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The messages published on the session's previews channel from now on (the
        subscription is confirmed before this yields), on a connection of their own."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(session_previews(self.namespace or "", session_id))
            # The confirmation: after it, every message published reaches us.
            await pubsub.get_message(timeout=5.0)

            async def messages() -> AsyncIterator[bytes]:
                async for item in pubsub.listen():
                    if item["type"] == "message":
                        yield bytes(item["data"])

            yield messages()
        finally:
            await pubsub.aclose()

    async def send(
        self, session_id: str, events: Sequence[AnyEvent], *, key: str | None = None
    ) -> list[AnyEvent]:
        """Append events from a client (the API), unfenced, and wake the session's worker.

        If the batch holds a ``user.*`` event the session is queued on its Agent's work
        queue after the append (at most one undelivered entry per session). Refused with
        ``SessionTerminated`` once the session is terminated. ``key`` as in ``append``;
        a repeated key also queues the session again, in case the first call failed between
        the append and the enqueue. Returns the stored events.
        """
        appended = await self._write(session_id, events, token="", client=True, key=key)
        stored, agent = appended.events, appended.agent
        if any(event.type.startswith(INPUT_PREFIX) for event in stored) and self._own(agent):
            await self.scripts.enqueue(keys=work_keys(agent), args=[session_id, WORK_GROUP, ""])
        return stored

    async def _write(
        self,
        session_id: str,
        events: Sequence[AnyEvent],
        *,
        token: str,
        client: bool,
        key: str | None,
        reserved: Sequence[str] = (),
    ) -> Appended:
        if not events:
            raise ValueError("no events to append")
        if key == "":
            raise ValueError("an idempotency key must not be empty")
        tag = session_tag(session_id)
        # Everything but the events goes in one JSON argument (see append.lua).
        head = changes(events)
        if token:
            head["token"] = token
        if client:
            head["client"] = True
        if key is not None:
            head["key"] = key
        if reserved:
            head["reserved"] = ",".join(stream_id(reserved_id, tag) for reserved_id in reserved)
        args = [json.dumps(head, separators=(",", ":"))]
        for event in events:
            if not isinstance(event, EVENT_TYPES.get(event.type, ())):
                raise TypeError(f"not an event model of the log: {type(event).__name__}")
            args += (event.type, payload(event))
        keys = self.keys(session_id)
        reply = await self.scripts.append(
            keys=[keys.events, keys.meta, keys.lease, keys.idem], args=args
        )
        follows: str | None = None
        match reply[0]:
            case b"ok":
                stored = [
                    event.model_copy(
                        update={"id": event_id(entry, tag), "processed_at": entry_time(entry)}
                    )
                    for event, entry in zip(events, reply[3:], strict=True)
                ]
                if reply[2]:
                    follows = event_id(reply[2], tag)
            case b"dup":
                rows: list[Row] = list(zip(reply[2::2], reply[3::2], strict=True))
                stored = decode(rows, tag)
            case b"no_session":
                raise SessionNotFound(session_id)
            case b"lost":
                raise LeaseLost(session_id, _text(reply[1]))
            case _:
                raise SessionTerminated(session_id)
        return Appended(stored, follows, reply[1].decode())

    # Reads.

    async def list_events(
        self,
        session_id: str,
        *,
        limit: int = 1000,
        cursor: str | None = None,
        order: Order = "asc",
        types: Collection[str] | None = None,
    ) -> EventPage:
        """One page of at most ``limit`` events in log order (``asc``) or reverse (``desc``),
        only of ``types`` if given (None or empty: all), after ``cursor``.

        Pages are exact: ``next_cursor`` is None when no further event matches, and the
        pages of one walk never repeat or skip an event, appends in between included.
        A cursor only works with the order it was made for (``InvalidId`` otherwise).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be asc or desc, not {order!r}")
        tag = session_tag(session_id)
        start = "-" if order == "asc" else "+"
        if cursor is not None:
            start = "(" + _cursor_position(cursor, order, tag)
        # One extra event tells whether another page exists.
        lines = await self._scan(session_id, start, order, types, want=limit + 1)
        data = decode_lines(b"\n".join(lines[:limit]))
        more = len(lines) > limit
        return EventPage(data=data, next_cursor=f"{order}.{data[-1].id}" if more else None)

    async def event(self, session_id: str, event: str) -> AnyEvent | None:
        """The session's event with id ``event``; None if there is none (deleted or never
        stored). ``InvalidId`` for an id of another session or a malformed one."""
        position = stream_id(event, session_tag(session_id))
        _, lines, _ = await self._page(session_id, position, "asc", 1, ())
        found = decode_lines(lines)
        return found[0] if found and found[0].id == event else None

    async def replay(self, session_id: str, *, after: str | None = None) -> list[AnyEvent]:
        """Every event of the session after event id ``after`` (None: all), in log order."""
        tag = session_tag(session_id)
        start = "-" if after is None else "(" + stream_id(after, tag)
        events: list[AnyEvent] = []
        # Each page is decoded while Redis reads the next one: on two cores the server's
        # work and this process's overlap instead of adding up.
        page: asyncio.Future[tuple[str, bytes, int]] | None = asyncio.ensure_future(
            self._page(session_id, start, "asc", _REPLAY_BATCH, ())
        )
        try:
            while page is not None:
                last, lines, scanned = await page
                if scanned < _REPLAY_BATCH:
                    page = None
                else:
                    page = asyncio.ensure_future(
                        self._page(session_id, "(" + last, "asc", _REPLAY_BATCH, ())
                    )
                    # Let the request go out before decoding starts: redis-py writes it
                    # after one pass of the event loop, two with a socket timeout (the
                    # write then runs in a task of its own). Too few passes lose only the
                    # overlap.
                    for _ in range(_SEND_PASSES):
                        await asyncio.sleep(0)
                events += decode_lines(lines)
        finally:
            if page is not None:
                page.cancel()
        return events

    def tail(
        self,
        session_id: str,
        *,
        after: str | None = "$",
        block_ms: int = 5000,
        types: Collection[str] | None = None,
    ) -> Tail:
        """A live tail of the session, opened by ``async with``; see ``Tail``.

        ``after``: ``"$"`` for events appended after opening, an event id to resume after
        it (SSE ``Last-Event-ID``), None for the whole log followed by live events.
        ``types`` filters as in ``list_events``. Blocking reads wait up to ``block_ms``.
        """
        return Tail(self, session_id, after=after, block_ms=block_ms, types=types)

    async def _scan(
        self,
        session_id: str,
        start: str,
        order: Order,
        types: Collection[str] | None,
        *,
        want: int | None,
    ) -> list[bytes]:
        """The JSON lines of the events from ``start`` on (``read.lua``), ``want`` at most."""
        filters = tuple(types or ())
        lines: list[bytes] = []
        while want is None or len(lines) < want:
            # Without a filter every scanned entry is kept: scan no more than needed.
            count = _READ_BATCH if filters or want is None else min(_READ_BATCH, want - len(lines))
            last, page, scanned = await self._page(session_id, start, order, count, filters)
            if page:
                lines += page.split(b"\n")
            if scanned < count:
                break
            start = "(" + last
        return lines if want is None else lines[:want]

    async def _page(
        self, session_id: str, start: str, order: Order, count: int, filters: Sequence[str]
    ) -> tuple[str, bytes, int]:
        """(last scanned stream id, JSON lines of the events kept, entries scanned) of one
        read script call."""
        keys = self.keys(session_id)
        reply = await self.scripts.read(
            keys=[keys.events, keys.meta],
            args=[start, order, count, session_tag(session_id), *filters],
        )
        if reply is None:
            raise SessionNotFound(session_id)
        last, lines, scanned = reply
        return (last or b"").decode(), lines, scanned

    # Leases.

    async def acquire_lease(self, session_id: str, holder: str, *, ttl_ms: int) -> Lease | None:
        """Take the session's lease for ``ttl_ms`` with a fencing token greater than any
        before; None if someone holds it. At most one holder exists at any time.

        Workers of an Agent should take leases through ``WorkQueue.claim``, which keeps the
        work entry that lets another worker resume the session if this one dies.
        """
        attempt = await self.try_acquire_lease(session_id, holder, ttl_ms=ttl_ms)
        if attempt.outcome == "no_session":
            raise SessionNotFound(session_id)
        return attempt.lease

    async def try_acquire_lease(
        self, session_id: str, holder: str, *, ttl_ms: int, only_with_input: bool = False
    ) -> LeaseAttempt:
        """``acquire_lease`` that reports why it got no lease instead of raising; with
        ``only_with_input`` it takes no lease unless input arrived after the last
        ``release_lease(handled_through=...)`` (outcome ``no_input``)."""
        if ttl_ms < 1 or not holder:
            raise ValueError("a lease needs a holder and a ttl of at least 1 ms")
        keys = self.keys(session_id)
        reply = await self.scripts.acquire_lease(
            keys=[keys.meta, keys.lease, keys.fence],
            args=[holder, ttl_ms, "1" if only_with_input else "0"],
        )
        outcome: AcquireOutcome = reply[0].decode()
        if outcome == "acquired":
            return LeaseAttempt(Lease(session_id, holder, int(reply[1]), ttl_ms), outcome)
        if outcome == "held":
            return LeaseAttempt(None, outcome, held_for_ms=max(int(reply[2]), 0))
        return LeaseAttempt(None, outcome)

    async def renew_lease(self, lease: Lease) -> None:
        """Extend the lease to ``ttl_ms`` from now; ``LeaseLost`` if it is no longer held
        with this token (expired, released, taken over or session deleted)."""
        keys = self.keys(lease.session_id)
        reply = await self.scripts.renew_lease(keys=[keys.lease], args=[lease.token, lease.ttl_ms])
        if reply[0] != b"ok":
            raise LeaseLost(lease.session_id, _text(reply[1]))

    async def release_lease(self, lease: Lease, *, handled_through: str | None = None) -> bool:
        """Give the lease up; ``LeaseLost`` if it is not held with this token.

        With ``handled_through`` (the id of the last event the holder took into account)
        the release happens only if no ``user.*`` event arrived after it: otherwise it
        returns False and the caller still holds the lease and has input to handle. On
        success that position is recorded as handled (see ``SessionSnapshot.pending_input``).
        """
        keys = self.keys(lease.session_id)
        handled = ""
        if handled_through is not None:
            handled = stream_id(handled_through, session_tag(lease.session_id))
        reply = await self.scripts.release_lease(
            keys=[keys.meta, keys.lease], args=[lease.token, handled]
        )
        match reply[0]:
            case b"released":
                return True
            case b"pending":
                return False
            case b"no_session":
                raise SessionNotFound(lease.session_id)
            case _:
                raise LeaseLost(lease.session_id, _text(reply[1]))

    def heartbeat(self, lease: Lease) -> Heartbeat:
        """A ``Heartbeat`` renewing ``lease`` every ttl/3 while its ``async with`` runs."""
        return Heartbeat(lambda: self.renew_lease(lease), ttl_ms=lease.ttl_ms)


def _cursor_position(cursor: str, order: Order, tag: str) -> str:
    made_for, _, last = cursor.partition(".")
    if made_for != order:
        raise InvalidId(f"cursor {cursor!r} is not a cursor for order={order}")
    return stream_id(last, tag)
