"""Redis users: who may run which commands on which keys (docs/security-model.md, "Redis users").

- ``paddock-operator``: everything, ACL administration included (it provisions tenants).
- ``paddock-gateway``: the keys and channels of every tenant (``paddock:t:*``), with the
  commands of ``TENANT_COMMANDS`` only: no administration, no keyspace listing.
- ``paddock-harness-<namespace>``, one per tenant: that tenant's keys and channels
  (``keys.tenant_patterns``) with ``TENANT_COMMANDS``.
- ``default``: a password that no one is given, so a client without credentials can run
  nothing (NOAUTH) and guessing gets WRONGPASS. It keeps every permission, because Redis
  replays the AOF as the default user and, up to versions with redis/redis#14545 (7.0.15,
  Debian's, is one), re-checks EXEC's commands against that user's ACL: a default user that
  is off or has no keys silently drops every MULTI/EXEC block when the AOF is loaded after a
  restart, and the scripts' writes are stored as MULTI/EXEC. (The durability tests caught it.)

Passwords are stored in Redis as SHA-256 digests (``#<hex>``), never in plain text. Redis 7
checks every key a script declares, and every command a script runs, against the caller's
user, so the scripts of this package declare their keys (they all do) and the commands
they run are in ``TENANT_COMMANDS``.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from paddock.eventlog.keys import PREFIX, check_tenant, tenant_patterns

OPERATOR_USER = f"{PREFIX}-operator"
GATEWAY_USER = f"{PREFIX}-gateway"

TENANT_COMMANDS = (
    # connection
    "auth", "hello", "ping",
    # scripts: run, and load again after a restart (redis-py answers NOSCRIPT with SCRIPT LOAD)
    "eval", "evalsha", "script|load", "script|exists",
    # transactions (atomic snapshot reads)
    "multi", "exec", "discard",
    # what the scripts and the clients run on keys, each checked against the key patterns
    "time", "exists", "del", "get", "set", "incr", "pexpire", "pttl",
    "hget", "hset", "hdel", "hexists", "hincrby", "hgetall",
    "xadd", "xrange", "xrevrange", "xread", "xreadgroup", "xack", "xdel", "xlen", "xclaim",
    "xautoclaim", "xpending", "xgroup|create",
    # sandbox binding announcements and session previews (channels checked against the
    # channel pattern)
    "subscribe", "unsubscribe", "publish",
)  # fmt: skip
"""The commands of a tenant's harness and of the gateway; nothing that lists or scans the
keyspace (SCAN, KEYS, RANDOMKEY, PUBSUB), administers (ACL, CONFIG, DEBUG, MODULE, SCRIPT
FLUSH, FUNCTION, FLUSHALL) or reaches a key by pattern (PSUBSCRIBE)."""


def harness_user(tenant: str) -> str:
    """The Redis user of tenant ``tenant``'s harness workers."""
    return f"{PREFIX}-harness-{check_tenant(tenant)}"


def password_hash(password: str) -> str:
    """How Redis stores a password: ``#`` and its SHA-256 in hex."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def _rules(patterns: tuple[str, str], password: str) -> list[str]:
    key_pattern, channel_pattern = patterns
    if not password:
        raise ValueError("a Redis user needs a password")
    commands = [f"+{command}" for command in TENANT_COMMANDS]
    return [
        "reset", "on", password_hash(password), "resetkeys", key_pattern,
        "resetchannels", channel_pattern, "-@all", *commands,
    ]  # fmt: skip


def harness_rules(tenant: str, password: str) -> list[str]:
    """``ACL SETUSER`` rules of tenant ``tenant``'s harness user (reset first: the rules
    are the whole user, whatever was there before)."""
    return _rules(tenant_patterns(tenant), password)


def gateway_rules(password: str) -> list[str]:
    return _rules(tenant_patterns(None), password)


def operator_rules(password: str) -> list[str]:
    return ["reset", "on", password_hash(password), "~*", "&*", "+@all"]


def default_rules(password: str) -> list[str]:
    """The default user: ``password`` is a random one no client is given (see the module)."""
    return ["reset", "on", password_hash(password), "~*", "&*", "+@all"]


def acl_file(*, operator_password: str, gateway_password: str, default_password: str) -> str:
    """An ACL file (``aclfile``) with the operator's and the gateway's users and the default
    user behind a password no one has; tenants are provisioned by the operator at run time."""
    lines = [
        ["user", "default", *default_rules(default_password)[1:]],
        ["user", OPERATOR_USER, *operator_rules(operator_password)[1:]],
        ["user", GATEWAY_USER, *gateway_rules(gateway_password)[1:]],
    ]
    return "".join(" ".join(line) + "\n" for line in lines)


async def provision_tenant(redis: Redis, tenant: str, password: str) -> None:
    """Create or reset tenant ``tenant``'s harness user (idempotent). Needs a client of a
    user allowed ``ACL SETUSER`` (the operator's)."""
    user, rules = harness_user(tenant), harness_rules(tenant, password)
    await redis.execute_command("ACL", "SETUSER", user, *rules)  # type: ignore[no-untyped-call]


async def tenant_has_password(redis: Redis, tenant: str, password: str) -> bool:
    """Whether tenant ``tenant``'s harness user exists with ``password`` (a Redis that
    restarted without an ACL file of tenants, or a new one, has none)."""
    found = await redis.acl_getuser(harness_user(tenant))
    hashes = found.get("passwords", []) if found else []
    return isinstance(hashes, list) and password_hash(password)[1:] in hashes
