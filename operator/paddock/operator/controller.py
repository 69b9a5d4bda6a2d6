"""The sandbox controller: warm pools and bound sandboxes, driven by the pod and
Environment informers rather than by kopf.

Every change of a sandbox pod or an Environment puts a key on a work queue: `("pool",
namespace, environment)` or `("sandbox", namespace, session id)`. A key waits at most once
however many events name it (a burst of pod events is one reconcile), and is never handled
twice at the same time. Workers handle keys level-triggered: they read the current state
from the informers, not from the event.

Only the replica that holds the sandbox lease in Redis handles keys; the others keep
their informers current, ready to take over. A replica that gains the lease reconciles
every pool and every bound sandbox; the lease holder also does every pool again every
`RESYNC_S` seconds, in case an event was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from typing import Any, cast

from redis.exceptions import RedisError

from paddock.kube import ApiError
from paddock.operator import labels as L
from paddock.operator.informer import Informer
from paddock.operator.leases import Leadership
from paddock.operator.runtime import Runtime
from paddock.operator.sandboxes import Sandboxes, pool_index, session_index
from paddock.operator.sessions import reconcile_sandbox
from paddock.operator.status import pod_dead, pod_ready
from paddock.operator.sync import StatusSync, slim_session

log = logging.getLogger(__name__)
RESYNC_S = 10.0
RETRY_S = 2.0
POOL_INTERVAL_S = 0.25


class WorkQueue:
    """Keys to handle: each waits at most once, and is handled by one worker at a time
    (a key added while it is being handled is handled again afterwards)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._waiting: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._again: set[Hashable] = set()

    def add(self, key: Hashable) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._queue.put_nowait(key)

    async def get(self) -> Hashable:
        key = await self._queue.get()
        self._waiting.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Hashable) -> None:
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return len(self._waiting)


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


class SandboxController:
    def __init__(
        self, rt: Runtime, sandboxes: Sandboxes, lease: Leadership, *, workers: int = 8
    ) -> None:
        self.rt, self.sandboxes, self.lease, self.workers = rt, sandboxes, lease, workers
        self.queue = WorkQueue()
        self._gained = asyncio.Event()
        self._pool_done: dict[Hashable, float] = {}
        sandboxes.schedule = self._later

    def _later(self, key: Hashable, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.queue.add, key)

    # --- what the informers report -------------------------------------------------

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
                self.queue.add(("pool", namespace, labels[L.ENVIRONMENT]))
            if state == "bound" and labels.get(L.SESSION_ID) and _sandbox_news(old, new):
                self.queue.add(("sandbox", namespace, labels[L.SESSION_ID]))

    def environment_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None or new["metadata"].get("deletionTimestamp"):
            return
        # Its own status writes come back as events too: only the spec matters.
        if old is None or old["metadata"].get("generation") != new["metadata"].get("generation"):
            self.queue.add(("pool", new["metadata"]["namespace"], new["metadata"]["name"]))

    # --- the work ------------------------------------------------------------------

    async def run(self) -> None:
        environments, pods = self.rt.informers["Environment"], self.rt.informers["Pod"]
        # A pool reconciled before its pods are known would be filled twice.
        await environments.wait_synced()
        await pods.wait_synced()
        tasks = [
            asyncio.create_task(self.lease.keep(self._gained)),
            asyncio.create_task(self._resync()),
            *(asyncio.create_task(self._work()) for _ in range(self.workers)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.lease.held():
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
            for environment in list(self.rt.informers["Environment"].values()):
                meta = environment["metadata"]
                self.queue.add(("pool", meta["namespace"], meta["name"]))
            if gained:  # the previous holder may have left work half done
                for pod in list(self.rt.informers["Pod"].values()):
                    labels = _labels(pod)
                    if labels.get(L.SANDBOX_STATE) == "bound" and labels.get(L.SESSION_ID):
                        key = ("sandbox", pod["metadata"]["namespace"], labels[L.SESSION_ID])
                        self.queue.add(key)

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                if self.lease.held():
                    await self.handle(key)
            except (ApiError, RedisError, OSError) as exc:
                log.warning("%s: %s; again in %s s", key, exc, RETRY_S)
                self._later(key, RETRY_S)
            except Exception:
                log.exception("%s failed; again in %s s", key, RETRY_S)
                self._later(key, RETRY_S)
            finally:
                self.queue.done(key)

    async def handle(self, key: Hashable) -> None:
        what, namespace, name = cast("tuple[str, str, str]", key)
        if what == "pool":
            # A burst of sessions changes the pool's count of bound pods with every pod:
            # reconcile (and write its status) at most every POOL_INTERVAL_S.
            loop = asyncio.get_running_loop()
            wait = self._pool_done.get(key, 0.0) + POOL_INTERVAL_S - loop.time()
            if wait > 0:
                self._later(key, wait)
                return
            environment = self.rt.informers["Environment"].get(namespace, name)
            if environment is not None and not environment["metadata"].get("deletionTimestamp"):
                try:
                    await self.sandboxes.reconcile_pool(environment)
                finally:
                    self._pool_done[key] = loop.time()
        elif what == "sandbox":
            await reconcile_sandbox(self.rt, self.sandboxes, namespace, name)


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


def informers(rt: Runtime, controller: SandboxController, sync: StatusSync) -> dict[str, Informer]:
    """The informers the operator keeps, wired to ``controller`` and ``sync``."""
    kube, namespaces = rt.kube, rt.settings.namespaces or None
    return {
        "Pod": Informer(
            kube,
            "v1",
            "Pod",
            namespaces,
            labels={L.COMPONENT: "sandbox"},
            indexes={"pool": pool_index, "session": session_index},
            on_change=controller.pod_changed,
        ),
        "Environment": Informer(
            kube,
            "paddock.dev/v1alpha1",
            "Environment",
            namespaces,
            on_change=controller.environment_changed,
        ),
        "Agent": Informer(kube, "paddock.dev/v1alpha1", "Agent", namespaces),
        "Session": Informer(
            kube,
            "paddock.dev/v1alpha1",
            "Session",
            namespaces,
            transform=slim_session,
            on_change=sync.session_changed,
        ),
    }
