"""What a harness worker is configured with (`python -m paddock.harness` reads it from the
environment)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from paddock.eventlog import SessionSettings
from paddock.harness.previews import DEFAULT_INTERVAL_S
from paddock.harness.retries import RetryPolicy
from paddock.models import AgentSpec

BIND_RETRY = RetryPolicy(attempts=10, base_delay=1.0, max_delay=16.0, jitter=0.25)
"""Egress tokens for a sandbox: waits of 1, 2, 4, 8 and then 16 s (each up to a quarter
shorter; 71-95 s in all). A ConfigMap that names a new Environment reaches a running proxy
when the kubelet next syncs the pod (its `syncFrequency`, a minute by default, plus the
cache TTL), so a first turn right after an Environment is created must outlast that; a
proxy that is really broken still ends the turn within two minutes."""


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
    mcp_timeout: float = 30.0
    """Longest connecting to an MCP server and listing its tools may take (a call may take
    the Agent's `limits.toolTimeout`)."""
    lease_ttl_ms: int = 15_000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    bind_retry: RetryPolicy = BIND_RETRY
    context_window_tokens: int = 200_000
    compact_at: float = 0.8
    """Compact when the conversation is estimated above this share of the window."""
    preview_interval_s: float = DEFAULT_INTERVAL_S
    """How long text previews are coalesced before they are published (docs/harness.md)."""
    outcome_heartbeat_s: float = 10.0
    """Seconds between `span.outcome_evaluation_ongoing` heartbeats while a grader works."""


def session_worker_settings(
    worker: WorkerSettings, session: SessionSettings | None
) -> WorkerSettings:
    """The settings a worker runs one session with: the spec of the Agent version the session
    is pinned to (prompt, model, tools, limits), not its pod's, which may be another version
    while harness pods roll. What belongs to the pod stays the pod's: `credentials` (its
    credential proxy holds those Secrets and no others) and `harness`. A session opened
    before versions were pinned runs its pod's spec.

    A thread (a session with a parent) never delegates, even if its Agent is a coordinator
    itself: threads are one level deep, as in the API (the gateway refuses such rosters; one
    applied with kubectl is reported in the coordinator's `Ready` condition)."""
    if session is None:
        return worker
    spec = worker.spec
    if session.agent is not None:
        pod = worker.spec
        spec = session.agent.spec.model_copy(
            update={"credentials": pod.credentials, "harness": pod.harness}
        )
    if session.parent_session_id is not None and spec.multiagent is not None:
        spec = spec.model_copy(update={"multiagent": None})
    return worker if spec is worker.spec else replace(worker, spec=spec)
