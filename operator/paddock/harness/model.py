"""Calling Claude: one streamed request, and the retry policy around it.

The SDK's own retries are off (`max_retries=0`): the harness retries itself so that every
attempt is visible in the log as a `session.error` with `retry_status`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anthropic
from anthropic.types import Message

from paddock.kube import retry_after as parse_retry_after

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Model requests per step before the turn ends with `retries_exhausted`."""
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: the server's `retry-after` when it
        gave one, else exponential backoff with full jitter."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


@dataclass
class ModelFailure:
    """A failed request, classified the way `session.error` reports it."""

    error_type: str
    message: str
    retryable: bool
    retry_after: float | None = None


def classify(exc: Exception) -> ModelFailure:
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        retry_after = _retry_after(exc.response.headers)
        error_type = {429: "model_rate_limited_error", 529: "model_overloaded_error"}.get(
            status, "model_request_failed_error"
        )
        return ModelFailure(
            error_type, f"HTTP {status}: {_message(exc)}", status in RETRYABLE_STATUS, retry_after
        )
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APITimeoutError):
        return ModelFailure("model_request_failed_error", f"connection failed: {exc}", True)
    return ModelFailure("unknown_error", repr(exc), False)


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return str(exc)


def _retry_after(headers: Any) -> float | None:
    """The API's `retry-after-ms` (its own, finer header) if readable, else `retry-after`."""
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except (KeyError, TypeError, ValueError):
        return parse_retry_after(headers.get("retry-after"))


async def stream_message(
    client: anthropic.AsyncAnthropic,
    request: dict[str, Any],
    on_first_token: Callable[[], None] | None = None,
) -> Message:
    """Stream one model response and return the complete message. Cancelling the calling task
    closes the HTTP stream at once (how a user interrupt stops a model call)."""
    async with client.messages.stream(**request) as stream:
        first = True
        async for _ in stream:
            if first and on_first_token:
                on_first_token()
            first = False
        return await stream.get_final_message()


async def call_with_retries(
    attempt_call: Callable[[], Awaitable[Message]],
    policy: RetryPolicy,
    on_failure: Callable[[ModelFailure, bool], Awaitable[None]],
) -> Message | None:
    """Run ``attempt_call`` until it succeeds or retries run out. ``on_failure(failure,
    will_retry)`` records each failure before the wait; None means retries are exhausted."""
    for attempt in range(policy.attempts):
        try:
            return await attempt_call()
        except (anthropic.APIError, OSError) as exc:
            failure = classify(exc)
            will_retry = failure.retryable and attempt + 1 < policy.attempts
            await on_failure(failure, will_retry)
            if not will_retry:
                return None
            await asyncio.sleep(policy.delay(attempt, failure.retry_after))
    return None
