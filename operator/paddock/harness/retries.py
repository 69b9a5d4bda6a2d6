"""Retrying a step that can fail for a while (a model request, the bind of a sandbox's
egress): bounded attempts with exponential backoff, each failure handed to the caller to
report (as a `session.error` with `retry_status`) before the wait."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from paddock.eventlog import ErrorDetail, RetryStatus, SessionErrorEvent

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Attempts per step before the turn ends with `retries_exhausted`."""
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 1.0
    """The share of each backoff that is random. 1 (full jitter) spreads clients the most;
    0.5 keeps each wait at least half its backoff, so that successive waits grow."""

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: the server's `retry-after` when it
        gave one, else exponential backoff with jitter."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.max_delay, self.base_delay * 2.0**attempt)
        return backoff * (1 - self.jitter * random.random())


@dataclass
class Failure:
    """A failed attempt, classified the way `session.error` reports it."""

    error_type: str
    message: str
    retryable: bool
    retry_after: float | None = None


def session_error(failure: Failure, will_retry: bool) -> SessionErrorEvent:
    """The `session.error` that reports ``failure``: `retrying`, or `exhausted` when the turn
    ends with it."""
    status = RetryStatus(type="retrying" if will_retry else "exhausted")
    return SessionErrorEvent(
        error=ErrorDetail(type=failure.error_type, message=failure.message, retry_status=status)
    )


async def call_with_retries(
    attempt_call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    classify: Callable[[Exception], Failure | None],
    on_failure: Callable[[Failure, bool], Awaitable[None]],
) -> T | None:
    """Run ``attempt_call`` until it succeeds or retries run out. An exception that
    ``classify`` makes no `Failure` of propagates; ``on_failure(failure, will_retry)``
    records each other one before the wait. None means retries are exhausted."""
    for attempt in range(policy.attempts):
        try:
            return await attempt_call()
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            will_retry = failure.retryable and attempt + 1 < policy.attempts
            await on_failure(failure, will_retry)
            if not will_retry:
                return None
            await asyncio.sleep(policy.delay(attempt, failure.retry_after))
    return None
