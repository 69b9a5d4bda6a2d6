"""The Redis key layout. Every key that belongs to a tenant namespace ``N`` starts with
``paddock:t:<N>:`` (``tenant_prefix``), so one ACL key pattern ``~paddock:t:<N>:*`` and one
channel pattern ``&paddock:t:<N>:*`` cover exactly that tenant: a namespace name is a
DNS-1123 label, which holds neither ``:`` nor a glob character, so no tenant's prefix is a
prefix of another's. Operator-only keys (the leader lease) live outside every tenant prefix.

Every key of a session shares the Redis Cluster hash tag ``{<session id>}`` and every key of
an Agent's work queue the tag ``{<namespace>/<agent>}``, so each Lua script touches keys of
exactly one slot."""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import NamedTuple, Self

from paddock.eventlog.errors import InvalidId
from paddock.eventlog.ids import check_session_id

PREFIX = "paddock"
WORK_GROUP = "workers"
"""The consumer group of every work stream: all harness workers of an Agent."""

# namespace/name, both DNS-1123 labels/subdomains as Kubernetes allows them.
_NAME = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
AGENT_PATTERN = re.compile(rf"^{_NAME}/{_NAME}$")
TENANT_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A namespace name (DNS-1123 label): no ``:``, ``*``, ``?``, ``[`` or ``\\``."""


class SessionKeys(NamedTuple):
    events: str
    """Stream: one entry per event, fields ``t`` (type) and ``e`` (JSON without id and time)."""
    meta: str
    """Hash: agent, status, stop_reason, usage counters, event_count, input markers, times."""
    lease: str
    """String ``<token>:<holder>`` with a TTL: who may append as the session's worker."""
    fence: str
    """Counter: the last fencing token handed out (INCR), so tokens only grow."""
    idem: str
    """Hash: caller key -> comma-separated stream ids of the events that append stored."""


# Per-session keys that live next to the log but are written elsewhere (the session state
# of paddock.eventlog.sessionstate: settings, sandbox binding, tool-call journal). They carry
# the session's hash tag too, and EventLog.delete_session removes them with the log's keys:
# a new per-session key must be listed here, or it outlives its session.
COMPANION_SUFFIXES = ("settings", "sandbox", "calls", "agent", "threads")
SESSION_SUFFIXES = (*SessionKeys._fields, *COMPANION_SUFFIXES)
"""Every per-session key, by suffix (the migration of the old layout renames these)."""


def check_tenant(tenant: str) -> str:
    """Return ``tenant`` if it is a namespace name, else raise ``InvalidId``."""
    if not TENANT_PATTERN.match(tenant):
        raise InvalidId(f"not a namespace name: {tenant!r}")
    return tenant


class TenantViews:
    """A root object (``namespace`` None) that hands out per-tenant views sharing its client,
    scripts and view cache: ``tenant(namespace)``."""

    namespace: str | None
    _views: dict[str, Self]

    def tenant(self, namespace: str) -> Self:
        """The view of tenant ``namespace`` (``InvalidId`` if it is no namespace name)."""
        if namespace == self.namespace:
            return self
        view = self._views.get(namespace)
        if view is None:
            view = copy.copy(self)  # shallow: the client, scripts and cache are shared
            view.namespace = check_tenant(namespace)
            self._views[namespace] = view
        return view


def tenant_prefix(tenant: str) -> str:
    """``paddock:t:<tenant>:``, the start of every key and channel of the tenant."""
    return f"{PREFIX}:t:{check_tenant(tenant)}:"


def _session_base(tenant: str, session_id: str) -> str:
    return f"{tenant_prefix(tenant)}{{{check_session_id(session_id)}}}"


def companion_keys(tenant: str, session_id: str) -> list[str]:
    """The keys of ``COMPANION_SUFFIXES`` for a session of ``tenant``."""
    base = _session_base(tenant, session_id)
    return [f"{base}:{suffix}" for suffix in COMPANION_SUFFIXES]


class WorkKeys(NamedTuple):
    stream: str
    """Stream with a consumer group: one entry (field ``session``) per piece of work."""
    queued: str
    """Hash: session id -> the entry that queues it and is not yet delivered (dedup)."""


@lru_cache(maxsize=4096)
def session_keys(tenant: str, session_id: str) -> SessionKeys:
    """The event log's keys of a session of ``tenant``; ``InvalidId`` for a malformed id."""
    base = _session_base(tenant, session_id)
    return SessionKeys(
        f"{base}:events", f"{base}:meta", f"{base}:lease", f"{base}:fence", f"{base}:idem"
    )


def check_agent(agent: str) -> str:
    """Return ``agent`` if it is ``<namespace>/<name>``, else raise ``InvalidId``."""
    if not AGENT_PATTERN.match(agent):
        raise InvalidId(f"not an agent reference <namespace>/<name>: {agent!r}")
    return agent


def tenant_of(agent: str) -> str:
    """The namespace of ``agent`` (``<namespace>/<name>``): the tenant its queue belongs to."""
    return check_tenant(check_agent(agent).partition("/")[0])


def work_keys(agent: str) -> WorkKeys:
    """The keys of the work queue of ``agent`` (``<namespace>/<name>``), in its namespace's
    tenant prefix."""
    base = f"{tenant_prefix(tenant_of(agent))}agent:{{{agent}}}"
    return WorkKeys(f"{base}:work", f"{base}:queued")


def sandbox_requests(tenant: str) -> str:
    """Stream of the tenant's `SandboxRequest`s, read by the operator's leader."""
    return f"{tenant_prefix(tenant)}sandbox-requests"


def sandbox_bound(tenant: str) -> str:
    """Channel on which the tenant's sandbox bindings are announced (message: session id)."""
    return f"{tenant_prefix(tenant)}sandbox-bound"


def session_previews(tenant: str, session_id: str) -> str:
    """Channel of a session's previews (``event_start``/``event_delta`` of events being
    produced): published by its harness, read by gateways, never stored. Under the
    tenant's prefix, so only that tenant's harness user (and the gateway) may use it."""
    return f"{_session_base(tenant, session_id)}:previews"


def tenant_patterns(tenant: str | None) -> tuple[str, str]:
    """The ACL key pattern (``~...``) and channel pattern (``&...``) that cover exactly
    ``tenant``'s keys and channels; with None, every tenant's (and nothing outside them)."""
    prefix = tenant_prefix(tenant) if tenant is not None else f"{PREFIX}:t:"
    return f"~{prefix}*", f"&{prefix}*"
