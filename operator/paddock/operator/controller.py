"""The operator's one way to reconcile: level-triggered workers on a work queue.

Informers (`informer.py`) keep in-memory copies of Agents, Environments, Sessions, harness
Deployments and sandbox pods; every change puts a key on a work queue:

| key | handled by | when |
|---|---|---|
| `Agent/<ns>/<name>` | `agents.reconcile_agent` | its spec changed, its harness Deployment changed, every `RESYNC_S` |
| `Environment/<ns>/<name>` | `environments.reconcile_environment` | its spec changed |
| `pool/<ns>/<environment>` | `Sandboxes.reconcile_pool` | a pool pod or the Environment changed, every `RESYNC_S` |
| `Session/<ns>/<name>` | `sessions.reconcile_session` | not yet accepted by this replica, cancelled, being deleted |
| `sandbox/<ns>/<session id>` | `sessions.reconcile_sandbox` | a bound pod appeared, became ready, died or went |

A key waits at most once however many events name it (a burst of pod events is one
reconcile) and is never handled twice at the same time. Handlers are level-triggered:
they read the current state from the informers, not from the event. A key whose handler
fails is handled again after `retry.retry_delay_s` (the one retry policy).

Only the replica that holds the leader lease in Redis handles keys, runs the status sync
and serves the harness workers' sandbox requests; the others keep their informers
current, ready to take over. A replica that gains the lease handles every key (as if each
object were new to it): the previous holder may have left work half done.

Sessions have their own lane of workers (`SESSION_WORKERS`): a burst of 10,000 new
Sessions waits its turn there, while pools keep refilling in the other lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from redis.exceptions import RedisError

from paddock.eventlog import migrate_layout
from paddock.kube import ApiError
from paddock.models import Agent, Environment, Session, Vault
from paddock.operator import agents, environments, metrics, render, sessions, vaults
from paddock.operator import labels as L
from paddock.operator.informer import Informer
from paddock.operator.leases import Leadership
from paddock.operator.retry import retry_delay_s
from paddock.operator.runtime import Runtime
from paddock.operator.sandboxes import Sandboxes, pool_index, session_index, tree_index
from paddock.operator.status import pod_dead, pod_ready
from paddock.operator.sync import SandboxRequests, StatusSync, slim_session

log = logging.getLogger(__name__)
RESYNC_S = 10.0
POOL_INTERVAL_S = 0.25
WORKERS = 8
SESSION_WORKERS = 32
"""Sessions accepted at once: more would only queue requests for the client's connections,
each session then waiting longer for all of its own requests."""


class Key(NamedTuple):
    kind: str
    """`Agent`, `Environment`, `pool`, `Session` or `sandbox`."""
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


class WorkQueue:
    """Keys to handle: each waits at most once, and is handled by one worker at a time
    (a key added while it is being handled is handled again afterwards)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._waiting: set[Key] = set()
        self._active: set[Key] = set()
        self._again: set[Key] = set()

    def add(self, key: Key) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._queue.put_nowait(key)

    async def get(self) -> Key:
        key = await self._queue.get()
        self._waiting.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return len(self._waiting)


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


def _generation_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """A new object, or a new spec (its own status writes come back as events too)."""
    return old is None or old["metadata"].get("generation") != new["metadata"].get("generation")


class Controller:
    def __init__(self, rt: Runtime, sandboxes: Sandboxes, lease: Leadership) -> None:
        self.rt, self.sandboxes, self.lease = rt, sandboxes, lease
        self.sync = StatusSync(rt, sandboxes, lease)
        self.requests = SandboxRequests(rt, sandboxes, lease)
        self.sessions = sessions.SessionReconciler(rt, sandboxes, self.sync.first_status)
        self.agents = agents.AgentReconciler(rt, self.sync.active_sessions)
        self.queue, self.session_queue = WorkQueue(), WorkQueue()
        self._failures: dict[Key, int] = {}
        self._gained = asyncio.Event()
        self._pool_done: dict[Key, float] = {}
        self._vaults_rendered: dict[Key, tuple[Any, ...] | None] = {}
        sandboxes.schedule = lambda key, delay: self.later(Key(*key), delay)
        self._handlers: dict[str, Callable[[Key], Awaitable[None]]] = {
            "Agent": self._agent,
            "Environment": self._environment,
            "pool": self._pool,
            "Session": self._session,
            "sandbox": self._sandbox,
            "Vault": self._vault,
        }

    def add(self, key: Key) -> None:
        (self.session_queue if key.kind == "Session" else self.queue).add(key)

    def later(self, key: Key, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    # --- what the informers report -------------------------------------------------

    def agent_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is not None and _generation_changed(old, new):
            meta = new["metadata"]
            self.add(Key("Agent", meta["namespace"], meta["name"]))
            if old is None:
                self._retry_unresolved(meta["namespace"])

    def deployment_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A harness worker became ready or went away: the Agent's status says so at once."""
        for deployment in (old, new):
            if deployment is not None and _labels(deployment).get(L.AGENT):
                meta = deployment["metadata"]
                self.add(Key("Agent", meta["namespace"], _labels(deployment)[L.AGENT]))

    def environment_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None or new["metadata"].get("deletionTimestamp"):
            return
        if _generation_changed(old, new):
            meta = new["metadata"]
            # A new spec may well start: not after the old one's backoff.
            self.sandboxes.failures.pop((meta["namespace"], meta["name"]), None)
            self.add(Key("Environment", meta["namespace"], meta["name"]))
            self.add(Key("pool", meta["namespace"], meta["name"]))
            if old is None:
                self._retry_unresolved(meta["namespace"])

    def vault_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A Vault's credentials, id or archival changed (not its status): it is reconciled and
        every Agent of its namespace renders its credentials again."""
        if _vault_facts(old) != _vault_facts(new):
            meta = (new or old or {})["metadata"]
            self.add(Key("Vault", meta["namespace"], meta["name"]))

    def pod_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for pod in (old, new):
            if pod is None:
                continue
            labels, namespace = _labels(pod), pod["metadata"]["namespace"]
            state = labels.get(L.SANDBOX_STATE)
            # The pool cares for its warm pods, and counts (only) the bound ones.
            if labels.get(L.ENVIRONMENT) and (
                state == "warm"
                or old is None
                or new is None
                or _labels(old).get(L.SANDBOX_STATE) != _labels(new).get(L.SANDBOX_STATE)
            ):
                self.add(Key("pool", namespace, labels[L.ENVIRONMENT]))
            if state == "bound" and labels.get(L.SESSION_ID) and _sandbox_news(old, new):
                self.add(Key("sandbox", namespace, labels[L.SESSION_ID]))

    def session_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        self.sync.session_changed(old, new)
        if new is not None and self.sessions.wants(new):
            self.add(Key("Session", new["metadata"]["namespace"], new["metadata"]["name"]))

    def _retry_unresolved(self, namespace: str) -> None:
        """An Agent or Environment appeared: Sessions that named it go on at once."""
        for name in self.sessions.unresolved.pop(namespace, set()):
            self.add(Key("Session", namespace, name))

    # --- the work ------------------------------------------------------------------

    async def run(self) -> None:
        # A pool reconciled before its pods are known would be filled twice; a Session
        # accepted before the Agents are known would be reported unresolved.
        for informer in self.rt.informers.values():
            await informer.wait_synced()
        tasks = [
            asyncio.create_task(self.lease.keep(self._gained)),
            asyncio.create_task(self._resync()),
            asyncio.create_task(self.sync.run()),
            asyncio.create_task(self.requests.run()),
            *(asyncio.create_task(self._work(self.queue)) for _ in range(WORKERS)),
            *(asyncio.create_task(self._work(self.session_queue)) for _ in range(SESSION_WORKERS)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.lease.held():  # another replica need not wait for the lease to expire
                with contextlib.suppress(RedisError, OSError):
                    await self.lease.release()

    async def _resync(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gained.wait(), RESYNC_S)
            gained = self._gained.is_set()
            self._gained.clear()
            if not self.lease.held():
                continue
            if gained:
                await self._migrate()
            informers = self.rt.informers
            for agent in list(informers["Agent"].values()):
                self.add(Key("Agent", agent["metadata"]["namespace"], agent["metadata"]["name"]))
            for environment in list(informers["Environment"].values()):
                meta = environment["metadata"]
                self.add(Key("pool", meta["namespace"], meta["name"]))
                if gained:
                    self.add(Key("Environment", meta["namespace"], meta["name"]))
            if gained:  # the previous holder may have left work half done
                self.sessions.forget_accepted()
                self.agents.forget_applied()
                for session in list(informers["Session"].values()):
                    self.session_changed(None, session)
                for pod in list(informers["Pod"].values()):
                    labels = _labels(pod)
                    if labels.get(L.SANDBOX_STATE) == "bound" and labels.get(L.SESSION_ID):
                        self.add(Key("sandbox", pod["metadata"]["namespace"], labels[L.SESSION_ID]))

    async def _migrate(self) -> None:
        """Keys of the layout before tenant prefixes move into it (docs/operations.md)."""
        try:
            moved = await migrate_layout(self.rt.redis)
        except (RedisError, OSError):
            log.exception("moving old Redis keys into the tenant layout failed; next leadership")
            return
        if moved:
            log.info("moved %d Redis keys into the tenant layout", moved)

    async def _work(self, queue: WorkQueue) -> None:
        while True:
            key = await queue.get()
            started = time.monotonic()
            try:
                if self.lease.held():
                    metrics.RECONCILES.labels(key.kind).inc()
                    await self._handlers[key.kind](key)
                    metrics.RECONCILE_SECONDS.labels(key.kind).observe(time.monotonic() - started)
                self._failures.pop(key, None)
            except Exception as exc:  # a dead worker would leave its lane behind
                metrics.RECONCILE_ERRORS.labels(key.kind).inc()
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = retry_delay_s(failures)
                if isinstance(exc, ApiError | RedisError | OSError | sessions.Unresolved):
                    log.warning("%s: %s; again in %.0f s", key, exc, delay)
                else:
                    log.exception("%s failed; again in %.0f s", key, delay)
                self.later(key, delay)
            finally:
                queue.done(key)

    # --- the handlers, by kind -----------------------------------------------------

    async def _agent(self, key: Key) -> None:
        agent = self.rt.informers["Agent"].get(key.namespace, key.name)
        if agent is not None and not agent["metadata"].get("deletionTimestamp"):
            await self.agents.reconcile(Agent.model_validate(agent))

    async def _environment(self, key: Key) -> None:
        environment = self.rt.informers["Environment"].get(key.namespace, key.name)
        if environment is not None and not environment["metadata"].get("deletionTimestamp"):
            await environments.reconcile_environment(
                self.rt, Environment.model_validate(environment)
            )

    async def _vault(self, key: Key) -> None:
        vault = self.rt.informers["Vault"].get(key.namespace, key.name)
        live = vault is not None and not vault["metadata"].get("deletionTimestamp")
        if live and not await vaults.reconcile_vault(self.rt, Vault.model_validate(vault)):
            self.later(key, vaults.RECHECK_S)
        facts = _vault_facts(vault)
        if self._vaults_rendered.get(key, ()) == facts:
            return  # a recheck of its Secrets: nothing the Agents render changed
        self._vaults_rendered[key] = facts
        self.agents.vaults_changed(key.namespace)
        for agent in list(self.rt.informers["Agent"].values()):
            if agent["metadata"]["namespace"] == key.namespace:
                self.add(Key("Agent", key.namespace, agent["metadata"]["name"]))

    async def _pool(self, key: Key) -> None:
        # A burst of sessions changes the pool's count of bound pods with every pod:
        # reconcile (and write its status) at most every POOL_INTERVAL_S.
        loop = asyncio.get_running_loop()
        wait = self._pool_done.get(key, 0.0) + POOL_INTERVAL_S - loop.time()
        if wait > 0:
            self.later(key, wait)
            return
        environment = self.rt.informers["Environment"].get(key.namespace, key.name)
        if environment is not None and not environment["metadata"].get("deletionTimestamp"):
            try:
                await self.sandboxes.reconcile_pool(Environment.model_validate(environment))
            finally:
                self._pool_done[key] = loop.time()

    async def _session(self, key: Key) -> None:
        session = self.rt.informers["Session"].get(key.namespace, key.name)
        if session is not None:
            await self.sessions.reconcile(Session.model_validate(session))

    async def _sandbox(self, key: Key) -> None:
        await sessions.reconcile_sandbox(self.rt, self.sandboxes, key.namespace, key.name)


def _vault_facts(obj: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What of a Vault the proxies render: its generation (credentials), id and archival."""
    if obj is None:
        return None
    meta = obj["metadata"]
    return (
        meta.get("generation"),
        (meta.get("labels") or {}).get(L.VAULT_ID),
        (meta.get("annotations") or {}).get(render.ARCHIVED_AT_ANNOTATION),
        bool(meta.get("deletionTimestamp")),
    )


def _sandbox_news(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Whether a bound pod's change can matter to its session: it appeared, became ready,
    died, or is gone."""
    if old is None or new is None:
        return True
    return (pod_ready(old), pod_dead(old), _labels(old).get(L.SESSION_ID)) != (
        pod_ready(new),
        pod_dead(new),
        _labels(new).get(L.SESSION_ID),
    )


def informers(rt: Runtime, controller: Controller) -> dict[str, Informer]:
    """The informers the operator keeps, wired to ``controller``."""
    kube, namespaces = rt.kube, rt.settings.namespaces or None
    return {
        "Pod": Informer(
            kube,
            "v1",
            "Pod",
            namespaces,
            labels={L.COMPONENT: "sandbox"},
            indexes={"pool": pool_index, "session": session_index, "tree": tree_index},
            on_change=controller.pod_changed,
        ),
        "Deployment": Informer(
            kube,
            "apps/v1",
            "Deployment",
            namespaces,
            labels={L.COMPONENT: "harness"},
            on_change=controller.deployment_changed,
        ),
        "Environment": Informer(
            kube,
            "paddock.dev/v1alpha1",
            "Environment",
            namespaces,
            on_change=controller.environment_changed,
        ),
        "Agent": Informer(
            kube, "paddock.dev/v1alpha1", "Agent", namespaces, on_change=controller.agent_changed
        ),
        "Vault": Informer(
            kube, "paddock.dev/v1alpha1", "Vault", namespaces, on_change=controller.vault_changed
        ),
        "Session": Informer(
            kube,
            "paddock.dev/v1alpha1",
            "Session",
            namespaces,
            transform=slim_session,
            on_change=controller.session_changed,
        ),
    }
