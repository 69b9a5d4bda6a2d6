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
from dataclasses import dataclass, field
from typing import Any

import kopf
from redis.asyncio import BlockingConnectionPool, Redis

from paddock.eventlog.log import SOCKET_TIMEOUT_S
from paddock.kube import Credentials
from paddock.operator import agents, events, metrics, render, sessions
from paddock.operator import labels as L
from paddock.operator.apiclient import AioKubeClient
from paddock.operator.controller import SandboxController, informers
from paddock.operator.identity import ensure_id
from paddock.operator.leases import Leadership, lease_key
from paddock.operator.runtime import OperatorSettings, Runtime
from paddock.operator.sandboxes import Sandboxes
from paddock.operator.sync import SandboxRequests, StatusSync

GROUP, VERSION = "paddock.dev", "v1alpha1"
STATUS_MANAGER = "paddock"
BACKOFF = 5  # seconds before a failed handler runs again (kopf's default is 60)
ADMISSIONS = 32


@dataclass
class Paddock:
    """Everything the handlers share, kept in kopf's memo."""

    rt: Runtime
    sandboxes: Sandboxes
    sync: StatusSync
    tasks: list[asyncio.Task[None]]
    admission: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(ADMISSIONS))
    """Sessions accepted at once. kopf runs a handler per object at once, however many:
    10,000 new Sessions would queue 10,000 requests for a few connections, and wait longer
    for each than for all of one session's requests."""


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
    # Under load the watch can lag kopf's own patches by more than the default 5 s; kopf
    # would then take an older event for the truth and run a create handler again.
    settings.persistence.consistency_timeout = 30
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    config = OperatorSettings.from_env(dict(os.environ))
    # Requests through aiohttp; watches (4 kinds, each namespace) through httpx.
    kube = AioKubeClient(Credentials.load(), watches=4 * max(1, len(config.namespaces)) + 4)
    # The event log's client settings (see `connect`), with a pool whose callers wait for
    # one of 64 connections rather than fail when all are taken.
    redis = Redis(
        connection_pool=BlockingConnectionPool.from_url(
            config.redis_url,
            max_connections=64,
            timeout=None,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=5,
            health_check_interval=15,
        )
    )
    rt = Runtime(config, kube, redis)
    sandboxes = Sandboxes(rt)
    sync = StatusSync(rt, sandboxes)
    controller = SandboxController(
        rt, sandboxes, Leadership(rt.redis, lease_key(rt, "sandboxes"), config.identity)
    )
    rt.informers.update(informers(rt, controller, sync))
    tasks = [
        *(asyncio.create_task(informer.run()) for informer in rt.informers.values()),
        asyncio.create_task(controller.run()),
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
    agent = await paddock.rt.find(
        f"{GROUP}/{VERSION}",
        "Agent",
        body.metadata.namespace or "",  # deployments are namespaced: always set
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
        # The pool is the SandboxController's: it sees the change through its informer.
        # Every Agent's proxy knows every Environment's egress rules.
        for agent in await paddock.rt.kube.list(
            f"{GROUP}/{VERSION}", "Agent", body.metadata.namespace
        ):
            await agents.apply_proxy_config(paddock.rt, agent)


# --- Sessions ------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "sessions", backoff=BACKOFF)
@kopf.on.create(GROUP, VERSION, "sessions", backoff=BACKOFF)
async def accept_session(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    paddock = _paddock(memo)
    session = dict(body)
    async with paddock.admission, _measured("Session"):
        try:
            session_id = (await sessions.accept(paddock.rt, paddock.sandboxes, session))[0]
        except sessions.Unresolved as exc:
            await events.post(paddock.rt.kube, session, "Unresolved", str(exc), warning=True)
            raise kopf.TemporaryError(str(exc), delay=10) from exc
        # The status sync learns of the session from its informer (it has an id now).
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
    await sessions.delete(paddock.rt, paddock.sandboxes, dict(body))
