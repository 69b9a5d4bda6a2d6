"""The limits that stop a turn before its next model request: the Agent's cap on model
requests per turn, and the session's token and list-cost budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from paddock.eventlog import (
    ErrorDetail,
    Money,
    RetryStatus,
    SessionErrorEvent,
    SessionSettings,
    SessionUsageEvent,
    UsageSnapshot,
)
from paddock.harness.transcript import Transcript
from paddock.models import AgentSpec, list_cost_cents

_TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


@dataclass(frozen=True)
class LimitReached:
    """The turn ends with ``stop_reason`` after ``event``, which says which limit it hit."""

    stop_reason: Literal["retries_exhausted", "budget_reached"]
    event: SessionErrorEvent | SessionUsageEvent


def limit_reached(
    spec: AgentSpec, settings: SessionSettings | None, transcript: Transcript
) -> LimitReached | None:
    """The limit that forbids the next model request of the turn, if one is reached."""
    max_turns = spec.limits.max_turns
    if transcript.model_calls_this_turn >= max_turns:
        error = ErrorDetail(
            type="tool_use_limit_reached_error",
            message=f"the turn reached the limit of {max_turns} model requests",
            retry_status=RetryStatus(type="exhausted"),
        )
        return LimitReached("retries_exhausted", SessionErrorEvent(error=error))
    if budget_reached(spec, settings, transcript.usage):
        usage = usage_snapshot(spec.model, transcript.usage)
        return LimitReached("budget_reached", SessionUsageEvent(usage=usage))
    return None


def budget_reached(
    spec: AgentSpec, settings: SessionSettings | None, usage: dict[str, int]
) -> bool:
    """Whether the session used up its tokens or list cost: the Session's budget, else the
    Agent's limits. A model without a list price counts as over any cost budget."""
    budget = settings.budget if settings else None
    max_tokens = (budget and budget.max_tokens) or spec.limits.max_session_tokens
    max_cost = (budget and budget.max_list_cost) or spec.limits.max_list_cost
    used = sum(usage.get(kind, 0) for kind in _TOKEN_KINDS)
    if max_tokens is not None and used >= max_tokens:
        return True
    if max_cost is not None:
        cents = list_cost_cents(spec.model, usage)
        return cents is None or cents >= int(max_cost.amount)
    return False


def usage_snapshot(model: str, usage: dict[str, int]) -> UsageSnapshot:
    """The session's usage so far, with its list cost if the model has a price."""
    cents = list_cost_cents(model, usage)
    return UsageSnapshot(
        input_tokens=usage.get("input_tokens", 0),
        output_tokens=usage.get("output_tokens", 0),
        cache_read_input_tokens=usage.get("cache_read_input_tokens", 0),
        list_cost=None if cents is None else Money(amount=str(cents), currency="USD"),
    )
