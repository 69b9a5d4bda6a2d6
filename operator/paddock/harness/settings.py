"""What a harness worker is configured with (`python -m paddock.harness` reads it from the
environment)."""

from __future__ import annotations

from dataclasses import dataclass, field

from paddock.harness.model import RetryPolicy
from paddock.models import AgentSpec


@dataclass(frozen=True)
class WorkerSettings:
    agent: str
    """`<namespace>/<name>` of the Agent whose sessions this worker runs."""
    spec: AgentSpec
    worker_id: str
    model_base_url: str
    """The credential proxy's API listener: the harness sends no key, the proxy adds it."""
    proxy_admin_url: str | None = None
    """Mints egress tokens for sandboxes. None: sandboxes are used unbound (no egress)."""
    proxy_egress_url: str | None = None
    """The proxy address sandboxes use (the Agent's proxy Service). A name is resolved by
    the worker at each bind: the sandbox gets the address, having no resolver of its own."""
    gateway_url: str | None = None
    """The gateway's internal file routes: Files API files are mounted from there and
    outputs uploaded there. None: neither happens."""
    lease_ttl_ms: int = 15_000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    context_window_tokens: int = 200_000
    compact_at: float = 0.8
    """Compact when the conversation is estimated above this share of the window."""
