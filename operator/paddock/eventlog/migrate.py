"""The move from the single-tenant key layout (before tenant prefixes) to the layout of
`keys`: `migrate_layout` renames every key of the old layout into its tenant's prefix.

Old layout: ``paddock:{<session>}:<suffix>``, ``paddock:agent:{<ns>/<agent>}:work|queued``,
``paddock:sandbox-requests`` and the channel ``paddock:sandbox-bound``. A session's tenant is
the namespace of the Agent in its ``meta`` hash (else the one in its ``settings``). Renames
keep the hash tag, so each is within one slot; RENAMENX never overwrites a key of the new
layout. The old shared request stream is dropped: the operator provides a sandbox to every
Session it reconciles, so no request is needed again. Idempotent; the operator runs it when
it becomes leader, and `python -m paddock.eventlog.migrate REDIS_URL` runs it by hand.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from paddock.eventlog.keys import (
    PREFIX,
    SESSION_SUFFIXES,
    check_tenant,
    session_keys,
    tenant_of,
    tenant_prefix,
)

_OLD_SESSION = re.compile(rf"^{PREFIX}:\{{(sesn_[0-9A-Za-z]+)\}}:meta$")
_OLD_SETTINGS = re.compile(rf"^{PREFIX}:\{{(sesn_[0-9A-Za-z]+)\}}:settings$")
_OLD_WORK = re.compile(rf"^{PREFIX}:agent:\{{([^}}]+)\}}:(work|queued)$")
OLD_REQUESTS = f"{PREFIX}:sandbox-requests"


async def _tenant_of_session(redis: Redis, session_id: str) -> str | None:
    agent = cast("bytes | None", await redis.hget(f"{PREFIX}:{{{session_id}}}:meta", "agent"))
    try:
        if agent is not None:
            return tenant_of(agent.decode())
        raw = await redis.get(f"{PREFIX}:{{{session_id}}}:settings")
        return check_tenant(json.loads(raw)["namespace"]) if raw else None
    except (ValueError, KeyError, TypeError):  # InvalidId is a ValueError
        return None


async def _rename(redis: Redis, moves: list[tuple[str, str]]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for old, new in moves:
            pipe.renamenx(old, new)
        replies = await pipe.execute(raise_on_error=False)
    # An old key that is not there (most sessions have no lease or idem) is no error.
    return sum(1 for reply in replies if reply is True or reply == 1)


async def migrate_layout(redis: Redis, *, batch: int = 1000) -> int:
    """Rename every key of the old layout into the tenant layout; returns how many moved.
    Keys whose tenant cannot be told (a malformed meta hash) are left, and reported by
    `old_keys`."""
    moved = 0
    sessions: set[str] = set()
    async for key in redis.scan_iter(match=f"{PREFIX}:{{sesn_*}}:*", count=batch):
        name = key.decode()
        found = _OLD_SESSION.match(name) or _OLD_SETTINGS.match(name)
        if found:
            sessions.add(found.group(1))
    for session_id in sorted(sessions):
        tenant = await _tenant_of_session(redis, session_id)
        if tenant is None:
            continue
        base = f"{PREFIX}:{{{session_id}}}"
        new_base = session_keys(tenant, session_id).events.removesuffix(":events")
        moves = [(f"{base}:{suffix}", f"{new_base}:{suffix}") for suffix in SESSION_SUFFIXES]
        moved += await _rename(redis, moves)
    moves = []
    async for key in redis.scan_iter(match=f"{PREFIX}:agent:{{*", count=batch):
        found = _OLD_WORK.match(key.decode())
        if found:
            try:
                prefix = tenant_prefix(tenant_of(found.group(1)))
            except ValueError:
                continue
            moves.append((key.decode(), f"{prefix}{key.decode().removeprefix(PREFIX + ':')}"))
    moved += await _rename(redis, moves)
    moved += int(await redis.delete(OLD_REQUESTS))
    return moved


async def old_keys(redis: Redis) -> list[str]:
    """Keys of the old layout still in Redis (after a migration: those it could not place)."""
    found = []
    for pattern in (f"{PREFIX}:{{*", f"{PREFIX}:agent:*", OLD_REQUESTS):
        found += [key.decode() async for key in redis.scan_iter(match=pattern, count=1000)]
    return sorted(found)


async def _main(url: str) -> int:
    from paddock.eventlog.log import connect

    redis = connect(url)
    try:
        moved = await migrate_layout(redis)
        left = await old_keys(redis)
    except ResponseError as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    print(f"moved {moved} keys into the tenant layout; {len(left)} old keys left")
    for key in left:
        print(f"  left: {key}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m paddock.eventlog.migrate REDIS_URL", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(_main(sys.argv[1])))
