"""Calling Claude: one streamed request, and how its failures are classified for retries.

The SDK's own retries are off (`max_retries=0`): the harness retries itself (`retries`) so
that every attempt is visible in the log as a `session.error` with `retry_status`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
from anthropic.types import Message, RawMessageStreamEvent

from paddock.harness.retries import Failure
from paddock.kube import retry_after as parse_retry_after

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def classify(exc: Exception) -> Failure | None:
    """A failed model request as `session.error` reports it; None for what is no request
    failure (a bug propagates)."""
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        retry_after = _retry_after(exc.response.headers)
        error_type = {429: "model_rate_limited_error", 529: "model_overloaded_error"}.get(
            status, "model_request_failed_error"
        )
        return Failure(
            error_type, f"HTTP {status}: {_message(exc)}", status in RETRYABLE_STATUS, retry_after
        )
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APITimeoutError):
        return Failure("model_request_failed_error", f"connection failed: {exc}", True)
    if isinstance(exc, anthropic.APIError | OSError):
        return Failure("unknown_error", repr(exc), False)
    return None


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
    on_event: Callable[[RawMessageStreamEvent], Awaitable[None]] | None = None,
) -> Message:
    """Stream one model response and return the complete message; ``on_event`` sees each
    raw stream event as it arrives (previews). Cancelling the calling task closes the HTTP
    stream at once (how a user interrupt stops a model call)."""
    async with client.messages.stream(**request) as stream:
        first = True
        async for event in stream:
            if first and on_first_token:
                on_first_token()
            first = False
            if on_event is not None and event.type in _RAW_EVENTS:
                await on_event(event)  # type: ignore[arg-type]
        return await stream.get_final_message()


# The SDK's stream also yields its own derived events (`text`, `thinking`, ...); previews
# need only the wire events.
_RAW_EVENTS = frozenset({"content_block_start", "content_block_delta", "content_block_stop"})
