"""Cursor pagination of agent, environment and session lists, and their query parameters.

The lists are small enough to be read whole from the apiserver, filtered and sorted by
(`created_at`, id) here. A cursor names the item a page ends (or starts) at, so it stays
valid while objects are created or deleted: pages never repeat or skip an item that
exists throughout the walk. A cursor encodes its order and direction; reusing it with the
other order is refused (reference §1.3).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

from multidict import MultiMapping

from paddock.gateway.convert.meta import parse_time
from paddock.gateway.errors import invalid

T = TypeVar("T")
Order = Literal["asc", "desc"]
Key = tuple[str, str]


@dataclass(frozen=True)
class Page(Generic[T]):
    data: list[T]
    next_page: str | None
    prev_page: str | None


def _encode(order: Order, direction: str, key: Key) -> str:
    raw = json.dumps([order, direction, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, order: Order) -> tuple[str, Key]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, direction, created, object_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise invalid(f"page: not a cursor: {cursor!r}") from None
    if made_for != order:
        raise invalid(f"page: the cursor was made for order={made_for}")
    if direction not in ("next", "prev") or not isinstance(created, str):
        raise invalid(f"page: not a cursor: {cursor!r}")
    return direction, (created, str(object_id))


def paginate(
    items: Sequence[T], key: Callable[[T], Key], *, limit: int, order: Order, page: str | None
) -> Page[T]:
    """One page of ``items`` sorted by ``key`` in ``order``, after (or before) ``page``."""
    descending = order == "desc"
    ordered = sorted(items, key=key, reverse=descending)
    keys = [key(item) for item in ordered]
    start, stop = 0, min(limit, len(ordered))
    if page is not None:
        direction, mark = _decode(page, order)
        # Items that come before the marked one in this order form a prefix.
        before = sum(1 for k in keys if (k > mark if descending else k < mark))
        if direction == "next":
            start = before + (1 if keys[before : before + 1] == [mark] else 0)
            stop = min(start + limit, len(ordered))
        else:
            start, stop = max(before - limit, 0), before
    data = list(ordered[start:stop])
    next_page = _encode(order, "next", keys[stop - 1]) if data and stop < len(ordered) else None
    prev_page = _encode(order, "prev", keys[start]) if data and start > 0 else None
    return Page(data, next_page, prev_page)


# Query parameters.


def limit_param(query: MultiMapping[str], *, default: int, maximum: int) -> int:
    text = query.get("limit")
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise invalid(f"limit: not an integer: {text!r}") from None
    if not 1 <= value <= maximum:
        raise invalid(f"limit: must be between 1 and {maximum}")
    return value


def order_param(query: MultiMapping[str], default: Order) -> Order:
    value = query.get("order", default)
    if value not in ("asc", "desc"):
        raise invalid("order: must be asc or desc")
    return value  # type: ignore[return-value]  # checked above: one of Order's values


def bool_param(query: MultiMapping[str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise invalid(f"{name}: must be true or false")
    return value == "true"


def list_param(query: MultiMapping[str], name: str, *, maximum: int = 100) -> list[str]:
    """Every value of `name[]` (the SDK's spelling) or `name`."""
    values = query.getall(f"{name}[]", []) + query.getall(name, [])
    if len(values) > maximum:
        raise invalid(f"{name}: at most {maximum} values")
    return values


def time_filters(
    query: MultiMapping[str], allowed: Sequence[str]
) -> list[Callable[[datetime], bool]]:
    """Tests for `created_at[gt|gte|lt|lte]`; 400 for ones not in ``allowed``."""
    tests: list[Callable[[datetime], bool]] = []
    operators: dict[str, Callable[[datetime, datetime], bool]] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    for name, test in operators.items():
        text = query.get(f"created_at[{name}]")
        if text is None:
            continue
        if name not in allowed:
            raise invalid(f"created_at[{name}] is not a filter of this list")
        try:
            bound = parse_time(text)
        except ValueError:
            raise invalid(f"created_at[{name}]: not an RFC 3339 time: {text!r}") from None
        tests.append(_against(test, bound))
    return tests


def _against(
    test: Callable[[datetime, datetime], bool], bound: datetime
) -> Callable[[datetime], bool]:
    return lambda moment: test(moment, bound)
