"""The operator's one leadership mechanism: a lease in Redis.

Only the replica holding `paddock:operator:leader` reconciles anything; the others keep
their informers current and take over when the lease is free. It is a mutex (`SET NX PX`,
renewed by its holder only), and its holder stops acting before the lease can have passed
to another replica. (kopf's peering, used before, paused replicas but not atomically: a
replica being paused could still handle an event, and two replicas filled one pool.)
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_HOLD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lease_key(namespaces: tuple[str, ...]) -> str:
    """The lease among the replicas that serve the same namespaces: `paddock:operator:leader`,
    with `:<namespace>,...` when they serve only some (operators serving different
    namespaces can share a Redis)."""
    scope = ",".join(sorted(namespaces))
    return f"paddock:operator:leader:{scope}" if scope else "paddock:operator:leader"


class Leadership:
    """A lease in Redis: at most one holder, kept by calling `hold` more often than the TTL.

    `held` answers without a round trip: true while a `hold` that succeeded started less
    than the TTL minus a safety margin ago (the lease cannot have passed to another replica
    before the TTL ran out from the moment the request was sent)."""

    def __init__(self, redis: Redis, key: str, identity: str, ttl_ms: int = 10_000) -> None:
        self.redis, self.key, self.identity, self.ttl_ms = redis, key, identity, ttl_ms
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)
        self._valid_until = 0.0

    async def hold(self) -> bool:
        sent = time.monotonic()
        # A renewal answered after the margin is worthless (`held` is already false), so
        # it may not hang: a stuck call would keep the replica from seeing it lost the lease.
        async with asyncio.timeout(self.ttl_ms / 1000 * 0.8):
            done = await self._hold(keys=[self.key], args=[self.identity, self.ttl_ms])
        if done:
            self._valid_until = sent + self.ttl_ms / 1000 * 0.8
            return True
        self._valid_until = 0.0
        return False

    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    async def release(self) -> None:
        self._valid_until = 0.0
        await self._release(keys=[self.key], args=[self.identity])

    async def keep(self, on_gained: asyncio.Event | None = None) -> None:
        """Hold the lease whenever it is free, forever (run it as a task); sets
        ``on_gained`` each time this replica becomes the holder."""
        while True:
            was = self.held()
            try:
                now = await self.hold()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("lease %s: %r", self.key, exc)
                now = self.held()
            if now and not was:
                log.info("lease %s: this replica (%s) holds it", self.key, self.identity)
                if on_gained is not None:
                    on_gained.set()
            elif was and not now:
                log.info("lease %s: lost", self.key)
            await asyncio.sleep(self.ttl_ms / 1000 / 4)
