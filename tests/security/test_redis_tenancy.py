"""Tenants apart in Redis, by attack: tenant A's harness credentials (the user the operator
provisions, `paddock.eventlog.provision_tenant`) against tenant B's keys, the gateway's user
against administration, and logins that must fail, on the real redis-server of the suite
(Paddock's ACL file, as the chart configures the bundled Redis). Each technique is one case
asserting what Redis answers (NOPERM, WRONGPASS, NOAUTH); the last tests show tenant A
still runs its own session end to end, and that its writes survive a hard restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from paddock.eventlog import (
    GATEWAY_USER,
    EventLog,
    SandboxBinding,
    SandboxWaiter,
    SessionSettings,
    SessionState,
    TextBlock,
    UserMessageEvent,
    WorkQueue,
    harness_user,
    new_session_id,
    provision_tenant,
    sandbox_bound,
    sandbox_requests,
    session_keys,
    session_previews,
    work_keys,
)
from paddock.harness import RetryPolicy, Worker, WorkerSettings
from paddock.models import AgentSpec
from paddock.testing.fakemodel import FakeModelServer, Reply, Text, turns
from paddock.testing.ports import wait_until_async
from paddock.testing.redis import RedisServer

A, B = "tenant-a", "tenant-b"
LEADER = "paddock:operator:leader"


@dataclass
class Victim:
    """Tenant B's session, with everything a session has in Redis."""

    session: str
    keys: Any  # SessionKeys
    work: Any  # WorkKeys
    settings: str
    binding: str
    calls: str
    requests: str
    channel: str
    previews: str


@pytest.fixture
async def victim(redis: Redis, redis_server: RedisServer) -> Victim:
    for tenant in (A, B):  # as the operator does for every namespace with an Agent
        await provision_tenant(redis, tenant, redis_server.tenant_password(tenant))
    log, state = EventLog(redis, B), SessionState(redis, B)
    session = new_session_id()
    await log.create_session(session, agent=f"{B}/coder")
    await state.put_settings(session, SessionSettings(namespace=B, name="secret-work"))
    await log.send(session, [UserMessageEvent(content=[TextBlock(text="B's secret")])])
    await state.bind_sandbox(
        session, SandboxBinding(url="http://10.0.0.9:8080", token="t", pod="p")
    )
    await state.mark_started(session, "toolu_1", "p")
    await state.request_sandbox(session)
    await redis.set(LEADER, "operator-0", px=60_000)
    companions = dict(zip(("settings", "binding", "calls"), _companions(session), strict=True))
    return Victim(
        session=session,
        keys=session_keys(B, session),
        work=work_keys(f"{B}/coder"),
        requests=sandbox_requests(B),
        channel=sandbox_bound(B),
        previews=session_previews(B, session),
        **companions,
    )


def _companions(session: str) -> list[str]:
    base = session_keys(B, session).meta.removesuffix(":meta")
    return [f"{base}:settings", f"{base}:sandbox", f"{base}:calls"]


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2)


@pytest.fixture
def tenant_a(redis_server: RedisServer, victim: Victim) -> Iterator[redis.Redis]:
    """Tenant A's harness credentials (what its harness container holds)."""
    client = _client(redis_server.tenant_url(A))
    assert client.ping()
    yield client
    client.close()


@pytest.fixture
def gateway(redis_server: RedisServer, victim: Victim) -> Iterator[redis.Redis]:
    client = _client(redis_server.gateway_url)
    yield client
    client.close()


Attack = Callable[[redis.Redis, Victim], object]
_REFUSALS = (
    "no permissions",  # NOPERM: the command, a key or a channel is not the user's
    "can't access at least one of the keys",  # inside a script (NOPERM too, as ERR)
    "can't run this command or subcommand",  # likewise
    "command not allowed",  # DEBUG and MODULE are off in the server (belt and braces)
    "not allowed from script",  # ACL in a script: refused whoever runs it
)


def refused(call: Callable[[], object]) -> str:
    """Run ``call``, which must be refused for lack of permission; returns Redis's answer."""
    with pytest.raises(ResponseError) as answer:
        call()
    text = str(answer.value)
    assert any(refusal in text for refusal in _REFUSALS), text
    return text


def _script(source: str, *keys: str) -> Attack:
    return lambda r, v: r.eval(source, len(keys), *(k.format(v=v) for k in keys))


# Tenant A's harness user against tenant B: every way to read, write, list, subscribe to or
# script its keys. A case names one technique; each must be refused with NOPERM.
ACROSS_TENANTS: dict[str, Attack] = {
    # reads
    "GET B's settings": lambda r, v: r.get(v.settings),
    "GET B's sandbox binding (its bearer token)": lambda r, v: r.get(v.binding),
    "HGETALL B's session snapshot": lambda r, v: r.hgetall(v.keys.meta),
    "HGET B's tool-call journal": lambda r, v: r.hget(v.calls, "toolu_1"),
    "XRANGE B's event log": lambda r, v: r.xrange(v.keys.events),
    "XREVRANGE B's event log": lambda r, v: r.xrevrange(v.keys.events),
    "XREAD B's event log": lambda r, v: r.xread({v.keys.events: "0-0"}),
    "XREAD BLOCK on B's log (a live tail)": lambda r, v: r.xread({v.keys.events: "$"}, block=10),
    "XREADGROUP B's work queue": lambda r, v: r.xreadgroup("workers", "x", {v.work.stream: ">"}),
    "XLEN B's work queue": lambda r, v: r.xlen(v.work.stream),
    "EXISTS on B's session (an existence oracle)": lambda r, v: r.exists(v.keys.meta),
    "HGETALL B's queued marks": lambda r, v: r.hgetall(v.work.queued),
    "XRANGE B's sandbox requests": lambda r, v: r.xrange(v.requests),
    # writes
    "SET B's sandbox binding (hijack its tool calls)": lambda r, v: r.set(v.binding, "{}"),
    "SET B's settings (name another namespace)": lambda r, v: r.set(v.settings, "{}"),
    "XADD an event to B's log": lambda r, v: r.xadd(v.keys.events, {"t": "x", "e": "{}"}),
    "XADD a sandbox request for B's session": lambda r, v: r.xadd(v.requests, {"session": "x"}),
    "HSET B's status": lambda r, v: r.hset(v.keys.meta, "status", "terminated"),
    "DEL B's event log": lambda r, v: r.delete(v.keys.events),
    "INCR B's fencing counter": lambda r, v: r.incr(v.keys.fence),
    "SET B's lease (take its session over)": lambda r, v: r.set(v.keys.lease, "999:me"),
    "PEXPIRE B's lease": lambda r, v: r.pexpire(v.keys.lease, 1),
    "XGROUP CREATE on B's work queue": lambda r, v: r.xgroup_create(v.work.stream, "mine", "0"),
    "XAUTOCLAIM B's work": lambda r, v: r.xautoclaim(v.work.stream, "workers", "me", 0),
    "XCLAIM B's work": lambda r, v: r.xclaim(v.work.stream, "workers", "me", 0, ["0-1"]),
    "XPENDING B's work": lambda r, v: r.xpending(v.work.stream, "workers"),
    "XACK B's work": lambda r, v: r.xack(v.work.stream, "workers", "0-1"),
    "XDEL B's work": lambda r, v: r.xdel(v.work.stream, "0-1"),
    "HDEL B's queued mark": lambda r, v: r.hdel(v.work.queued, v.session),
    # scripts: the keys a script declares, and the keys and commands it runs, are checked
    "EVAL reading a declared key of B": _script(
        "return redis.call('GET', KEYS[1])", "{v.settings}"
    ),
    "EVAL reading an undeclared key of B": lambda r, v: r.eval(
        f"return redis.call('GET', '{v.settings}')", 0
    ),
    "EVAL declaring its own key, writing B's": lambda r, v: r.eval(
        f"redis.call('SET', KEYS[1], 1) return redis.call('DEL', '{v.keys.events}')",
        1,
        f"paddock:t:{A}:x",
    ),
    "EVAL running FLUSHALL": lambda r, v: r.eval("return redis.call('FLUSHALL')", 0),
    "EVAL running KEYS": lambda r, v: r.eval("return redis.call('KEYS', '*')", 0),
    "EVAL running ACL SETUSER": lambda r, v: r.eval(
        f"return redis.call('ACL', 'SETUSER', '{harness_user(A)}', '~*')", 0
    ),
    "the log's own append script, on B's keys": lambda r, v: _append_on(r, v),
    # listing the keyspace or the channels
    "SCAN the keyspace": lambda r, v: r.scan(0, match="paddock:t:*"),
    "KEYS *": lambda r, v: r.keys("*"),
    "RANDOMKEY": lambda r, v: r.randomkey(),
    "DBSIZE": lambda r, v: r.dbsize(),
    "PUBSUB CHANNELS": lambda r, v: r.pubsub_channels(),
    "SORT BY/GET patterns (reads keys by pattern)": lambda r, v: r.sort(
        f"paddock:t:{A}:x", by="paddock:t:*", get="paddock:t:*"
    ),
    "SLOWLOG GET (other clients' arguments)": lambda r, v: r.slowlog_get(),
    "CLIENT TRACKING BCAST (every key name)": lambda r, v: r.execute_command(
        "CLIENT", "TRACKING", "on", "BCAST"
    ),
    "CLIENT LIST": lambda r, v: r.client_list(),
    "MONITOR": lambda r, v: r.execute_command("MONITOR"),
    # copying or moving B's keys into reach
    "RENAME B's log into A's prefix": lambda r, v: r.rename(v.keys.events, f"paddock:t:{A}:x"),
    "COPY B's settings into A's prefix": lambda r, v: r.copy(v.settings, f"paddock:t:{A}:x"),
    "DUMP B's settings": lambda r, v: r.dump(v.settings),
    "OBJECT ENCODING of B's key": lambda r, v: r.object("encoding", v.settings),
    "MEMORY USAGE of B's key": lambda r, v: r.memory_usage(v.settings),
    "XINFO STREAM B's log": lambda r, v: r.xinfo_stream(v.keys.events),
    "GETDEL B's binding": lambda r, v: r.getdel(v.binding),
    "SELECT another database": lambda r, v: r.execute_command("SELECT", "1"),
    "SWAPDB": lambda r, v: r.swapdb(0, 1),
    # the operator's own key
    "GET the operator's leader lease": lambda r, v: r.get(LEADER),
    "SET the operator's leader lease (seize leadership)": lambda r, v: r.set(LEADER, "me"),
    # pub/sub
    "PUBLISH on B's binding channel": lambda r, v: r.publish(v.channel, v.session),
    "PUBLISH forged previews on B's session": lambda r, v: r.publish(v.previews, b"[]"),
}


def _append_on(client: redis.Redis, victim: Victim) -> object:
    """The package's own append script (what a tenant's worker runs), aimed at B."""
    from paddock.eventlog.scripts import source

    keys = victim.keys
    return client.eval(
        source("append"),
        4,
        keys.events,
        keys.meta,
        keys.lease,
        keys.idem,
        "",
        "0",
        "",
        "{}",
        "",
        "user.message",
        "{}",
    )


@pytest.mark.parametrize("technique", sorted(ACROSS_TENANTS))
def test_tenant_a_cannot_reach_tenant_b(
    technique: str, tenant_a: redis.Redis, victim: Victim, redis: Redis
) -> None:
    refused(lambda: ACROSS_TENANTS[technique](tenant_a, victim))


async def test_tenant_b_is_untouched_after_every_attack(
    redis_server: RedisServer, victim: Victim
) -> None:
    client = _client(redis_server.tenant_url(A))
    for attack in ACROSS_TENANTS.values():
        refused(lambda attack=attack: attack(client, victim))
    client.close()
    admin = Redis.from_url(redis_server.url)
    log, state = EventLog(admin, B), SessionState(admin, B)
    assert [e.type for e in await log.replay(victim.session)] == ["user.message"]
    assert (await log.snapshot(victim.session)).status == "idle"
    assert (await state.settings(victim.session)).name == "secret-work"
    assert (await state.sandbox(victim.session)).url == "http://10.0.0.9:8080"
    assert await admin.get(LEADER) == b"operator-0"
    await admin.aclose()


SUBSCRIPTIONS: dict[str, Callable[[Any, Victim], object]] = {
    "SUBSCRIBE B's binding channel": lambda p, v: p.subscribe(v.channel),
    "SUBSCRIBE B's session previews": lambda p, v: p.subscribe(v.previews),
    "PSUBSCRIBE every tenant's channels": lambda p, v: p.psubscribe("paddock:t:*"),
    "PSUBSCRIBE B's channels": lambda p, v: p.psubscribe(f"paddock:t:{B}:*"),
}


@pytest.mark.parametrize("technique", sorted(SUBSCRIPTIONS))
def test_tenant_a_cannot_listen_to_tenant_b(
    technique: str, tenant_a: redis.Redis, victim: Victim
) -> None:
    pubsub = tenant_a.pubsub()

    def listen() -> None:
        SUBSCRIPTIONS[technique](pubsub, victim)
        pubsub.get_message(timeout=1)  # the refusal arrives as the reply

    try:
        refused(listen)
    finally:
        pubsub.close()


async def test_tenant_a_through_the_eventlog_api_of_tenant_b(
    redis_server: RedisServer, victim: Victim
) -> None:
    """The package's own views, built for B on A's credentials (a worker that was told the
    wrong namespace): every call is refused, none reads or writes."""
    client = Redis.from_url(redis_server.tenant_url(A))
    log, state = EventLog(client, B), SessionState(client, B)
    calls = {
        "replay": lambda: log.replay(victim.session),
        "snapshot": lambda: log.snapshot(victim.session),
        "send": lambda: log.send(victim.session, [UserMessageEvent(content=[TextBlock(text="x")])]),
        "lease": lambda: log.acquire_lease(victim.session, "me", ttl_ms=1000),
        "claim": lambda: WorkQueue(log, f"{B}/coder").claim("me", block_ms=50),
        "settings": lambda: state.settings(victim.session),
        "unbind": lambda: state.unbind_sandbox(victim.session),
        "request": lambda: state.request_sandbox(victim.session, dead_pod="p"),
    }
    for name, call in calls.items():
        try:
            await call()
        except NoPermissionError:
            continue
        pytest.fail(f"{name} was allowed")
    waiter = SandboxWaiter(state, recheck_s=0.05)
    with pytest.raises(NoPermissionError):
        await waiter.wait(victim.session, 0.2)  # the binding read is refused
    await waiter.close()
    await client.aclose()


# Administration and dangerous commands: neither a tenant's harness user nor the gateway's.
ADMIN: dict[str, Callable[[redis.Redis], object]] = {
    "ACL LIST": lambda r: r.acl_list(),
    "ACL SETUSER (widen its own keys)": lambda r: r.execute_command(
        "ACL", "SETUSER", harness_user(A), "~*"
    ),
    "ACL GETUSER paddock-operator": lambda r: r.acl_getuser("paddock-operator"),
    "ACL DELUSER another tenant": lambda r: r.acl_deluser(harness_user(B)),
    "CONFIG GET requirepass": lambda r: r.config_get("*"),
    "CONFIG SET dir (write files elsewhere)": lambda r: r.config_set("dir", "/tmp"),
    "FLUSHALL": lambda r: r.flushall(),
    "FLUSHDB": lambda r: r.flushdb(),
    "DEBUG SLEEP": lambda r: r.execute_command("DEBUG", "SLEEP", "0"),
    "DEBUG OBJECT": lambda r: r.execute_command("DEBUG", "OBJECT", "x"),
    "MODULE LIST": lambda r: r.execute_command("MODULE", "LIST"),
    "MODULE LOAD": lambda r: r.execute_command("MODULE", "LOAD", "/tmp/evil.so"),
    "SCRIPT FLUSH": lambda r: r.script_flush(),
    "SCRIPT KILL": lambda r: r.script_kill(),
    "FUNCTION LOAD": lambda r: r.function_load(
        "#!lua name=evil\nredis.register_function('f', function() return 1 end)"
    ),
    "FUNCTION FLUSH": lambda r: r.function_flush(),
    "SHUTDOWN": lambda r: r.execute_command("SHUTDOWN", "NOSAVE"),
    "CLIENT KILL": lambda r: r.execute_command("CLIENT", "KILL", "TYPE", "normal"),
    "REPLICAOF (copy everything elsewhere)": lambda r: r.execute_command(
        "REPLICAOF", "127.0.0.1", "1"
    ),
    "SAVE": lambda r: r.save(),
    "BGREWRITEAOF": lambda r: r.bgrewriteaof(),
    "INFO (server internals)": lambda r: r.info(),
    "KEYS *": lambda r: r.keys("*"),
    "SCAN": lambda r: r.scan(0),
    "GET the operator's leader lease": lambda r: r.get(LEADER),
    "SET the operator's leader lease": lambda r: r.set(LEADER, "me"),
}


@pytest.mark.parametrize("technique", sorted(ADMIN))
@pytest.mark.parametrize("user", ["harness", "gateway"])
def test_no_administration_for_tenants_or_the_gateway(
    technique: str, user: str, tenant_a: redis.Redis, gateway: redis.Redis
) -> None:
    refused(lambda: ADMIN[technique](tenant_a if user == "harness" else gateway))


def test_the_gateway_reaches_every_tenant_but_nothing_else(
    gateway: redis.Redis, victim: Victim
) -> None:
    assert gateway.hget(victim.keys.meta, "agent") == f"{B}/coder".encode()
    with pytest.raises(NoPermissionError):
        gateway.set("paddock:elsewhere", 1)


# Logins that must fail. Each returns (user, password) against the plain URL.
LOGINS: dict[str, Callable[[RedisServer], tuple[str | None, str | None]]] = {
    "no credentials at all (the default user)": lambda s: (None, None),
    "the default user with a guessed password": lambda s: ("default", "default"),
    "the default user with the operator's password": lambda s: ("default", s.operator_password),
    "tenant A's user with a wrong password": lambda s: (harness_user(A), "wrong"),
    "tenant B's user with tenant A's password": lambda s: (harness_user(B), s.tenant_password(A)),
    "the gateway user with tenant A's password": lambda s: (GATEWAY_USER, s.tenant_password(A)),
    "the operator user with the gateway's password": lambda s: (
        "paddock-operator",
        s.gateway_password,
    ),
    "the operator user with an empty password": lambda s: ("paddock-operator", ""),
    "a user that does not exist": lambda s: (harness_user("tenant-c"), "x"),
}


@pytest.mark.parametrize("technique", sorted(LOGINS))
def test_wrong_logins_are_refused(
    technique: str, redis_server: RedisServer, victim: Victim
) -> None:
    username, password = LOGINS[technique](redis_server)
    client = redis.Redis(
        port=redis_server.port, username=username, password=password, socket_connect_timeout=2
    )
    try:
        with pytest.raises((AuthenticationError, ResponseError)) as refused:
            client.get(victim.settings)
        assert not isinstance(refused.value, NoPermissionError)  # not even logged in
        # WRONGPASS, or NOAUTH without credentials.
        text = str(refused.value)
        assert any(
            answer in text
            for answer in (
                "invalid username-password pair",
                "Authentication required",
                "HELLO must be called with the client already authenticated",
            )
        ), text
    finally:
        client.close()


def test_an_unauthenticated_connection_can_do_nothing(
    redis_server: RedisServer, victim: Victim
) -> None:
    """A raw RESP2 connection without AUTH: every command but AUTH/HELLO gets NOAUTH."""
    client = redis.Redis(port=redis_server.port, protocol=2, socket_connect_timeout=2)
    try:
        for command in (("GET", victim.settings), ("KEYS", "*"), ("ACL", "WHOAMI"), ("PING",)):
            with pytest.raises(AuthenticationError, match="Authentication required"):
                client.execute_command(*command)
    finally:
        client.close()


# Tenant A, on its own keys: the session runs end to end and survives a restart.


async def test_tenant_a_publishes_and_reads_its_own_previews(
    redis_server: RedisServer, victim: Victim
) -> None:
    client = Redis.from_url(redis_server.tenant_url(A))
    log = EventLog(client, A)
    session = new_session_id()
    try:
        async with log.previews(session) as messages:
            await log.publish_previews(session, b'[{"type":"event_start"}]')
            received = await asyncio.wait_for(anext(messages), timeout=5)
            assert received == b'[{"type":"event_start"}]'
    finally:
        await client.aclose()


async def test_tenant_a_runs_its_own_session_end_to_end(
    redis: Redis, redis_server: RedisServer, victim: Victim
) -> None:
    worker_redis = Redis.from_url(redis_server.tenant_url(A))
    spec = AgentSpec.model_validate(
        {
            "model": "claude-sonnet-4-6",
            "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
        }
    )
    log = EventLog(redis, A)  # the gateway's side, as the test plays it
    session = new_session_id()
    with FakeModelServer(turns(Reply([Text("hello from A")]))) as model:
        settings = WorkerSettings(
            agent=f"{A}/coder",
            spec=spec,
            worker_id="worker-a",
            model_base_url=model.url,
            lease_ttl_ms=3000,
            retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.1),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(Worker(settings, worker_redis).run(stop))
        try:
            await log.create_session(session, agent=f"{A}/coder")
            await SessionState(redis, A).put_settings(
                session, SessionSettings(namespace=A, name="mine")
            )
            await log.send(session, [UserMessageEvent(content=[TextBlock(text="hi")])])

            async def answered() -> list[str] | None:
                types = [e.type for e in await log.replay(session)]
                return types if "session.status_idle" in types else None

            types = await wait_until_async(answered, timeout=20, what="tenant A's answer")
        finally:
            stop.set()
            await task
            await worker_redis.aclose()
    assert "agent.message" in types
    snapshot = await log.snapshot(session)
    assert snapshot.stop_reason is not None
    assert snapshot.stop_reason.type == "end_turn"


async def test_a_tenants_writes_survive_a_hard_restart(
    redis_server: RedisServer, victim: Victim
) -> None:
    """Scripts' writes are stored in the AOF as MULTI/EXEC, which Redis replays as the
    default user: a default user without permissions would drop them (paddock.eventlog.acl)."""
    client = Redis.from_url(redis_server.tenant_url(A))
    log = EventLog(client, A)
    admin_log = EventLog(Redis.from_url(redis_server.url), A)
    session = new_session_id()
    await admin_log.create_session(session, agent=f"{A}/coder")
    lease = await log.acquire_lease(session, "worker-a", ttl_ms=60_000)
    assert lease is not None
    stored = await log.append(
        session, [UserMessageEvent(content=[TextBlock(text="kept")])], fence=lease, key="k"
    )
    await client.aclose()
    await admin_log.redis.aclose()
    await asyncio.to_thread(redis_server.restart, hard=True)
    client = Redis.from_url(redis_server.tenant_url(A))  # the operator provisions again
    try:
        assert await EventLog(client, A).replay(session) == stored
    finally:
        await client.aclose()


TECHNIQUES = len(ACROSS_TENANTS) + len(SUBSCRIPTIONS) + 2 * len(ADMIN) + len(LOGINS) + 1
"""The attacks of this file, one case each (the EventLog-API test adds nine more calls)."""
