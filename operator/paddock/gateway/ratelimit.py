"""Per-credential request rate limits: a token bucket per API key or Kubernetes token.

A bucket holds up to ``burst`` tokens and refills at ``rate`` a second; a request takes
one, and a request that finds none is answered 429 with the wait until the next token.
Buckets are keyed by a digest of the credential as presented, so the limit applies before
the credential is checked (no apiserver or Redis work for a request over the limit).

Memory is bounded: a bucket that has been idle long enough to be full again is the same as
no bucket and is dropped; past ``max_buckets`` the least recently used go first (its owner
then starts again with a full bucket, which is the price of the bound).

Hand-written rather than pyrate-limiter (installed as a dependency of another package):
the 25 lines below give the retry-after an envelope needs and idle eviction, where that
library's buckets are sliding windows with a background leaker per bucket factory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` requests a second per key with bursts of ``burst``; ``rate`` 0 disables."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_buckets: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or (rate > 0 and burst < 1):
            raise ValueError("the rate must be >= 0 and the burst >= 1")
        self.rate, self.burst, self.max_buckets, self.clock = rate, burst, max_buckets, clock
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: bytes) -> float | None:
        """Take a token of ``key``'s bucket: None if there was one, else the seconds until
        there will be."""
        if self.rate == 0:
            return None
        now = self.clock()
        self._evict_idle(now)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        self._buckets[key] = bucket  # the most recently used last
        if len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.rate

    def _evict_idle(self, now: float) -> None:
        # The least recently used come first; a bucket idle for burst/rate seconds is full.
        refill_s = self.burst / self.rate
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated < refill_s:
                break
            del self._buckets[key]
