"""The audit trail: one JSON line on stdout per request, and request counters for /metrics.

An `Entry` has no field that could hold a header value, a URL path or a body, so nothing that
is written can carry an API key, an injected token or an egress token.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

ListenerName = Literal["api", "egress", "admin"]


@dataclass
class Entry:
    """What happened to one request; filled in as the request progresses."""

    listener: ListenerName
    method: str | None = None
    host: str | None = None
    port: int | None = None
    session: str | None = None
    """Only a session id that a valid token vouched for."""
    decision: Literal["allow", "deny"] = "deny"
    rule: str = "malformed-request"
    status: int = 400
    bytes_up: int = 0
    """Body (or tunnel) bytes from the client to the destination."""
    bytes_down: int = 0
    """Body (or tunnel) bytes from the destination to the client."""
    injected: str | None = None
    """The credential host pattern whose token was added upstream, if any."""


def write_line(fields: dict[str, object]) -> None:
    """One audit line on stdout, time-stamped, flushed so a crash loses no earlier line."""
    line = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields}
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Audit:
    """Writes entries as JSON lines and counts them by listener and decision."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def record(self, entry: Entry) -> None:
        """Write ``entry`` as one line (`write_line`)."""
        write_line(asdict(entry))
        self._counts[(entry.listener, entry.decision)] += 1

    def metrics(self) -> str:
        """The counters in the Prometheus text format."""
        lines = [
            "# HELP paddock_proxy_requests_total Requests handled, by listener and decision.",
            "# TYPE paddock_proxy_requests_total counter",
        ]
        for (listener, decision), count in sorted(self._counts.items()):
            lines.append(
                f'paddock_proxy_requests_total{{listener="{listener}",decision="{decision}"}} {count}'
            )
        return "\n".join(lines) + "\n"
