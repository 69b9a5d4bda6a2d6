"""kopf handlers: thin, each calls into agents, sandboxes, sessions or the sync.

Run with `python -m paddock.operator` (or `kopf run -m paddock.operator.handlers`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import kopf

from paddock.eventlog import connect
from paddock.kube import KubeClient
from paddock.models.common import parse_duration
from paddock.operator import agents, events, metrics, render, sessions
from paddock.operator import labels as L
from paddock.operator.identity import ensure_id
from paddock.operator.runtime import OperatorSettings, Runtime
from paddock.operator.sandboxes import Sandboxes
from paddock.operator.sync import SandboxRequests, StatusSync, Tracked

GROUP, VERSION = "paddock.dev", "v1alpha1"
STATUS_MANAGER = "paddock"
BACKOFF = 5  # seconds before a failed handler runs again (kopf's default is 60)


@dataclass
class Paddock:
    """Everything the handlers share, kept in kopf's memo."""

    rt: Runtime
    sandboxes: Sandboxes
    sync: StatusSync
    tasks: list[asyncio.Task[None]]


def _paddock(memo: kopf.Memo) -> Paddock:
    return memo["paddock"]  # type: ignore[no-any-return]


@asynccontextmanager
async def _measured(kind: str) -> AsyncIterator[None]:
    started = time.monotonic()
    metrics.RECONCILES.labels(kind).inc()
    try:
        yield
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind).inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Progress and the last handled spec go to annotations: status is a structural
    # subresource and would prune kopf's fields.
    settings.persistence.finalizer = "paddock.dev/cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="paddock.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="paddock.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    config = OperatorSettings.from_env(dict(os.environ))
    rt = Runtime(config, KubeClient.from_environment(), connect(config.redis_url))
    sandboxes = Sandboxes(rt)
    sync = StatusSync(rt, sandboxes)
    tasks = [
        asyncio.create_task(sync.run()),
        asyncio.create_task(SandboxRequests(rt, sandboxes).run()),
    ]
    memo["paddock"] = Paddock(rt, sandboxes, sync, tasks)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    paddock = _paddock(memo)
    for task in paddock.tasks:
        task.cancel()
    await asyncio.gather(*paddock.tasks, return_exceptions=True)
    await paddock.rt.close()


# --- Agents --------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "agents", backoff=BACKOFF)
@kopf.on.create(GROUP, VERSION, "agents", backoff=BACKOFF)
@kopf.on.update(GROUP, VERSION, "agents", backoff=BACKOFF)
async def reconcile_agent(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    paddock = _paddock(memo)
    agent = dict(body)
    async with _measured("Agent"):
        await ensure_id(paddock.rt.kube, agent)
        agent_ref = f"{body.metadata.namespace}/{body.metadata.name}"
        status = await agents.reconcile(
            paddock.rt, agent, active_sessions=paddock.sync.active_sessions(agent_ref)
        )
        await _report_agent(paddock.rt, agent, status)


@kopf.timer(GROUP, VERSION, "agents", interval=10, initial_delay=10)
async def refresh_agent(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    paddock = _paddock(memo)
    agent = dict(body)
    status = await agents.status(
        paddock.rt,
        agent,
        active_sessions=paddock.sync.active_sessions(
            f"{body.metadata.namespace}/{body.metadata.name}"
        ),
    )
    await _report_agent(paddock.rt, agent, status)


@kopf.on.event("apps", "v1", "deployments", labels={L.COMPONENT: "harness"})
async def harness_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A worker became ready or went away: the Agent's status says so at once."""
    paddock = _paddock(memo)
    agent = await paddock.rt.kube.find(
        f"{GROUP}/{VERSION}",
        "Agent",
        body.metadata.namespace,
        body.metadata.labels.get(L.AGENT, ""),
    )
    if agent is not None:
        status = await agents.status(
            paddock.rt,
            agent,
            deployment=dict(body),
            active_sessions=paddock.sync.active_sessions(
                f"{body.metadata.namespace}/{agent['metadata']['name']}"
            ),
        )
        await _report_agent(paddock.rt, agent, status)


async def _report_agent(rt: Runtime, agent: dict[str, Any], status: dict[str, Any]) -> None:
    old = next(
        (c for c in (agent.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), None
    )
    new = status["conditions"][0]
    if old is None or (old["status"], old["reason"]) != (new["status"], new["reason"]):
        await events.post(
            rt.kube, agent, new["reason"], new["message"], warning=new["status"] != "True"
        )
    await rt.kube.apply_status(agent, status, STATUS_MANAGER)


# --- Environments --------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "environments", backoff=BACKOFF)
@kopf.on.create(GROUP, VERSION, "environments", backoff=BACKOFF)
@kopf.on.update(GROUP, VERSION, "environments", backoff=BACKOFF)
async def reconcile_environment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    paddock = _paddock(memo)
    environment = dict(body)
    async with _measured("Environment"):
        await ensure_id(paddock.rt.kube, environment)
        await paddock.rt.kube.apply(
            render.sandbox_network_policy(environment), manager=agents.MANAGER
        )
        await paddock.sandboxes.reconcile_pool(environment)
        # Every Agent's proxy knows every Environment's egress rules.
        for agent in await paddock.rt.kube.list(
            f"{GROUP}/{VERSION}", "Agent", body.metadata.namespace
        ):
            await agents.apply_proxy_config(paddock.rt, agent)


@kopf.timer(GROUP, VERSION, "environments", interval=10, initial_delay=5)
async def refresh_pool(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    paddock = _paddock(memo)
    await paddock.sandboxes.reconcile_pool(dict(body))


@kopf.on.event("", "v1", "pods", labels={L.COMPONENT: "sandbox"})
async def sandbox_changed(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Pool pods refill the pool; bound pods finish a cold start or are replaced."""
    paddock = _paddock(memo)
    rt, pod = paddock.rt, dict(body)
    labels, namespace = body.metadata.labels, body.metadata.namespace
    if labels.get(L.SANDBOX_STATE) == "bound":
        await sessions.bound_pod_changed(rt, paddock.sandboxes, pod, deleted=type == "DELETED")
    if labels.get(L.ENVIRONMENT) and (type == "DELETED" or labels.get(L.SANDBOX_STATE) == "warm"):
        environment = await rt.kube.find(
            f"{GROUP}/{VERSION}", "Environment", namespace, labels[L.ENVIRONMENT]
        )
        if environment is not None and not environment["metadata"].get("deletionTimestamp"):
            await paddock.sandboxes.reconcile_pool(environment)


# --- Sessions ------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "sessions", backoff=BACKOFF)
@kopf.on.create(GROUP, VERSION, "sessions", backoff=BACKOFF)
async def accept_session(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    paddock = _paddock(memo)
    session = dict(body)
    async with _measured("Session"):
        try:
            session_id, agent, environment = await sessions.accept(
                paddock.rt, paddock.sandboxes, session
            )
        except sessions.Unresolved as exc:
            await events.post(paddock.rt.kube, session, "Unresolved", str(exc), warning=True)
            raise kopf.TemporaryError(str(exc), delay=10) from exc
        idle_timeout = None
        if environment is not None:
            idle_timeout = parse_duration(environment.get("spec", {}).get("idleTimeout", "15m"))
        ttl = body.spec.get("ttl")
        paddock.sync.track(
            session_id,
            Tracked(
                resource=session,
                agent=f"{body.metadata.namespace}/{agent['metadata']['name']}",
                model=agent["spec"].get("model"),
                ttl_s=parse_duration(ttl) if ttl else None,
                idle_timeout_s=idle_timeout,
            ),
        )
        if body.spec.get("cancel"):
            await sessions.cancel(paddock.rt, paddock.sandboxes, session, session_id)


@kopf.on.field(GROUP, VERSION, "sessions", field="spec.cancel", new=True, backoff=BACKOFF)
async def cancel_session(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    paddock = _paddock(memo)
    session_id = body.metadata.labels.get(L.SESSION_ID)
    if session_id:
        await sessions.cancel(paddock.rt, paddock.sandboxes, dict(body), session_id)
        await events.post(
            paddock.rt.kube,
            dict(body),
            "Cancelled",
            "spec.cancel is set: the session is terminated",
        )


@kopf.on.delete(GROUP, VERSION, "sessions", backoff=BACKOFF)
async def delete_session(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    paddock = _paddock(memo)
    session_id = body.metadata.labels.get(L.SESSION_ID)
    if session_id:
        paddock.sync.forget(session_id)
    await sessions.delete(paddock.rt, paddock.sandboxes, dict(body))
