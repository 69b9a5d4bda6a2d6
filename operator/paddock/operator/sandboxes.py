"""Sandboxes: an Environment's warm pool, and binding one sandbox to each session.

Pods move from `warm` (owned by the Environment) to `bound` (owned by the Session,
labelled with its id) by a JSON patch that tests the pod's resourceVersion, so two
operators (or two sessions) can never claim the same pod. When the pool is empty, a pod is
created for the session directly (`cold`) and bound once it is ready. A bound pod is
never returned to the pool.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from paddock.eventlog import SessionNotFound
from paddock.eventlog.sessionstate import SandboxBinding
from paddock.kube import JSON_PATCH, Conflict, NotFound
from paddock.models.environment import EnvironmentSpec
from paddock.operator import labels as L
from paddock.operator import metrics, render
from paddock.operator.runtime import Runtime
from paddock.operator.status import environment_status, pod_dead, pod_ready

log = logging.getLogger(__name__)
DEFAULT_SANDBOX_IMAGE = EnvironmentSpec().image


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def with_image_default(environment: dict[str, Any], image: str | None) -> dict[str, Any]:
    """The Environment with the operator's sandbox image where it uses the built-in default."""
    if (
        not image
        or environment.get("spec", {}).get("image", DEFAULT_SANDBOX_IMAGE) != DEFAULT_SANDBOX_IMAGE
    ):
        return environment
    return {**environment, "spec": {**environment.get("spec", {}), "image": image}}


class Sandboxes:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.kube = rt.kube
        self._cold_started: dict[str, float] = {}
        self._pool_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._pool_waiting: set[tuple[str, str]] = set()

    def _effective(self, environment: dict[str, Any]) -> dict[str, Any]:
        return with_image_default(environment, self.rt.settings.sandbox_image)

    async def pods(self, namespace: str, **selector: str) -> list[dict[str, Any]]:
        return await self.kube.list(
            "v1", "Pod", namespace, labels={L.COMPONENT: "sandbox", **selector}
        )

    # --- the warm pool ---------------------------------------------------------------

    async def reconcile_pool(self, environment: dict[str, Any]) -> None:
        """Replace stale and dead pooled pods, start missing ones, and report the status.

        One reconcile of a pool runs at a time (concurrent ones would each fill the pool),
        and a burst of pod events coalesces: while one runs, at most one more waits, and it
        reads the pods afresh when it starts."""
        key = (environment["metadata"]["namespace"], environment["metadata"]["name"])
        lock = self._pool_locks.setdefault(key, asyncio.Lock())
        if key in self._pool_waiting:
            return
        self._pool_waiting.add(key)
        async with lock:
            self._pool_waiting.discard(key)
            status = await self._reconcile_pool(environment)
        await self.kube.apply_status(environment, status, "paddock")

    async def _reconcile_pool(self, environment: dict[str, Any]) -> dict[str, Any]:
        environment = self._effective(environment)
        namespace, name = environment["metadata"]["namespace"], environment["metadata"]["name"]
        current = render.sandbox_template_hash(environment)
        # Only the pool's pods are listed: bound ones are counted, never fetched.
        pods = await self.pods(namespace, **{L.ENVIRONMENT: name, L.SANDBOX_STATE: "warm"})
        bound = await self.kube.count(
            "v1",
            "Pod",
            namespace,
            labels={L.COMPONENT: "sandbox", L.ENVIRONMENT: name, L.SANDBOX_STATE: "bound"},
        )
        warm = []
        for pod in pods:
            pod_labels = pod["metadata"].get("labels", {})
            if pod_dead(pod) or pod_labels.get(L.TEMPLATE_HASH) != current:
                if not pod["metadata"].get("deletionTimestamp"):
                    await self.kube.delete("v1", "Pod", namespace, pod["metadata"]["name"])
            else:
                warm.append(pod)
        size = environment.get("spec", {}).get("warmPool", {}).get("size", 0)
        for _ in range(size - len(warm)):
            warm.append(await self.kube.create(self._new_pod(environment)))
        for pod in warm[size:]:  # the pool shrank
            await self.kube.delete("v1", "Pod", namespace, pod["metadata"]["name"])
        warm = warm[:size]
        status = environment_status(
            environment, warm=warm, bound=bound, template_hash=current, now=datetime.now(UTC)
        )
        for state, count in (
            ("ready", status["warmPool"]["ready"]),
            ("warm", len(warm)),
            ("bound", bound),
        ):
            metrics.WARM_POOL.labels(namespace, name, state).set(count)
        return status

    def _new_pod(self, environment: dict[str, Any]) -> dict[str, Any]:
        name = f"{environment['metadata']['name']}-{secrets.token_hex(4)}"
        return render.sandbox_pod(environment, name, secrets.token_urlsafe(32))

    # --- binding ---------------------------------------------------------------------

    async def bind(
        self, session: dict[str, Any], session_id: str, environment: dict[str, Any]
    ) -> str:
        """Give the session a sandbox; returns `existing`, `warm` or `cold` (bound when ready)."""
        started = time.monotonic()
        namespace = session["metadata"]["namespace"]
        if await self.rt.state.sandbox(session_id) is not None:
            return "existing"
        # Label-selected lists stay small however many sandboxes the Environment has bound.
        own = [
            p for p in await self.pods(namespace, **{L.SESSION_ID: session_id}) if not pod_dead(p)
        ]
        if own:  # a cold sandbox is starting, or one is bound and not recorded yet
            if pod_ready(own[0]):
                await self.record(session_id, own[0])
            return "existing"
        warm = await self.pods(
            namespace, **{L.ENVIRONMENT: environment["metadata"]["name"], L.SANDBOX_STATE: "warm"}
        )
        ready = [p for p in warm if pod_ready(p)]
        # In random order: concurrent claims then rarely race for the same pod.
        for pod in random.sample(ready, len(ready)):
            claimed = await self._claim(pod, session, session_id)
            if claimed is not None:
                await self.record(session_id, claimed)
                metrics.CLAIM_SECONDS.labels("warm").observe(time.monotonic() - started)
                return "warm"
        pod = self._new_pod(self._effective(environment))
        pod["metadata"]["labels"].update({L.SANDBOX_STATE: "bound", L.SESSION_ID: session_id})
        pod["metadata"]["annotations"][L.CLAIM] = "cold"
        pod["metadata"]["ownerReferences"] = _owned_by(session)
        await self.kube.create(pod)
        self._cold_started[session_id] = started
        return "cold"

    async def _claim(
        self, pod: dict[str, Any], session: dict[str, Any], session_id: str
    ) -> dict[str, Any] | None:
        meta = pod["metadata"]
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {
                "op": "replace",
                "path": f"/metadata/labels/{_escape(L.SANDBOX_STATE)}",
                "value": "bound",
            },
            {"op": "add", "path": f"/metadata/labels/{_escape(L.SESSION_ID)}", "value": session_id},
            {"op": "add", "path": f"/metadata/annotations/{_escape(L.CLAIM)}", "value": "warm"},
            {"op": "replace", "path": "/metadata/ownerReferences", "value": _owned_by(session)},
        ]
        try:
            return await self.kube.patch(
                "v1",
                "Pod",
                meta["namespace"],
                meta["name"],
                patch,
                content_type=JSON_PATCH,
            )
        except (Conflict, NotFound):
            return None  # claimed by someone else, or gone: try the next one

    async def record(self, session_id: str, pod: dict[str, Any]) -> None:
        """Write the binding the harness reads; a cold start is measured up to here."""
        meta = pod["metadata"]
        claim = meta.get("annotations", {}).get(L.CLAIM, "warm")
        binding = SandboxBinding(
            url=f"http://{pod['status']['podIP']}:{render.SANDBOX_PORT}",
            token=meta["annotations"][L.SANDBOX_TOKEN],
            pod=meta["name"],
            claim=claim,
        )
        try:
            await self.rt.state.bind_sandbox(session_id, binding)
        except SessionNotFound:
            return
        started = self._cold_started.pop(session_id, None)
        if started is not None:
            metrics.CLAIM_SECONDS.labels("cold").observe(time.monotonic() - started)

    async def release(self, namespace: str, session_id: str) -> None:
        """Delete the session's sandboxes and forget the binding."""
        for pod in await self.pods(namespace, **{L.SESSION_ID: session_id}):
            await self.kube.delete("v1", "Pod", namespace, pod["metadata"]["name"])
        await self.rt.state.unbind_sandbox(session_id)
        self._cold_started.pop(session_id, None)


def _owned_by(session: dict[str, Any]) -> list[dict[str, Any]]:
    meta = session["metadata"]
    return [
        {
            "apiVersion": "paddock.dev/v1alpha1",
            "kind": "Session",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
