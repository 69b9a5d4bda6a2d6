"""List prices, for cost budgets and the `list_cost` a session reports.

Prices are US dollars per million tokens (input, output), from Anthropic's public price list.
Cache reads cost 0.1x input and cache writes 1.25x input. A model missing here has no list
price: a session with a cost budget stops with `budget_reached` rather than spend blindly.
"""

from __future__ import annotations

import math
from typing import Any

_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4": (15.0, 75.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
}


def price(model: str) -> tuple[float, float] | None:
    """(input, output) dollars per million tokens; dated ids (`-20250929`) match their family."""
    name = model
    while name:
        if name in _PRICES:
            return _PRICES[name]
        name = name.rpartition("-")[0]
    return None


def list_cost_cents(model: str, usage: dict[str, Any]) -> int | None:
    """Cost of cumulative ``usage`` in US cents, rounded up; None when the model has no price."""
    prices = price(model)
    if prices is None:
        return None
    per_input, per_output = prices
    dollars: float = (
        usage.get("input_tokens", 0) * per_input
        + usage.get("cache_creation_input_tokens", 0) * per_input * 1.25
        + usage.get("cache_read_input_tokens", 0) * per_input * 0.1
        + usage.get("output_tokens", 0) * per_output
    ) / 1_000_000
    return math.ceil(dollars * 100 - 1e-9)
