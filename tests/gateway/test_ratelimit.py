"""Per-credential rate limits: the token bucket (pure, on a made-up clock), and the 429 a
client of the official SDK gets from the gateway, with `retry-after`, for its key only."""

from __future__ import annotations

import anthropic
import pytest

from paddock.gateway.ratelimit import RateLimiter

from .stack import Stack


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.take(b"k") for _ in range(3)] == [None, None, None]
    assert limiter.take(b"k") == pytest.approx(0.5)  # the next token in half a second
    clock.now += 0.25
    assert limiter.take(b"k") == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.take(b"k") is None
    clock.now += 100  # idle: full again, never more than the burst
    assert [limiter.take(b"k") for _ in range(4)][-1] is not None


def test_keys_have_their_own_buckets() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=Clock())
    assert limiter.take(b"a") is None
    assert limiter.take(b"a") is not None
    assert limiter.take(b"b") is None


def test_memory_is_bounded_and_idle_buckets_go() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=20, max_buckets=1000, clock=clock)
    for i in range(10_000):  # a flood of distinct (wrong) keys
        limiter.take(i.to_bytes(4, "big"))
    assert len(limiter) == 1000
    clock.now += 2  # burst / rate: every bucket is full again, the same as none
    limiter.take(b"new")
    assert len(limiter) == 1


def test_rate_zero_disables() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.take(b"k") is None for _ in range(1000))
    assert len(limiter) == 0


async def test_the_sdk_gets_a_rate_limit_error_with_retry_after(stack: Stack) -> None:
    assert stack.gateway is not None
    stack.gateway.limiter = RateLimiter(rate=0.5, burst=5)
    a, b = stack.client(stack.a), stack.client(stack.b)  # max_retries=0
    for _ in range(5):
        await a.beta.agents.list()
    with pytest.raises(anthropic.RateLimitError) as limited:
        await a.beta.agents.list()
    error = limited.value
    assert error.status_code == 429
    assert error.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(error.response.headers["retry-after"]) in (1, 2)  # a token every 2 s
    assert error.response.headers["request-id"].startswith("req_")
    # Another key has its own bucket.
    for _ in range(5):
        await b.beta.agents.list()
    # The limit comes first: over it, a wrong key is not even looked up.
    async with stack.http(auth=False) as http:
        for status in [401] * 5 + [429]:
            response = await http.get("/v1/agents", headers={"x-api-key": "sk-wrong"})
            assert response.status_code == status, response.text
        assert response.json()["error"]["type"] == "rate_limit_error"
