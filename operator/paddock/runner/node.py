"""The runner's control loop: it watches Pods, Deployments, Services, ConfigMaps and Secrets
and plays the parts of a cluster that a bare apiserver lacks: kubelet (pods run as local
processes, status reported, ConfigMap and Secret volumes refreshed), Deployment controller, garbage collector (objects whose owner is gone are
deleted), and cluster DNS (a hosts file per pod that names every Service's ready pods)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

from paddock.kube import PLURALS, ApiError, KubeClient, NotFound
from paddock.runner import deployments
from paddock.runner.network import PodNetwork
from paddock.runner.pods import LocalPod

log = logging.getLogger(__name__)

GC_SECONDS = 5.0
SHUTDOWN_GRACE_S = 5.0
"""The most a pod gets to stop when the runner itself stops (the node goes away): a
harness worker that drains its turn would otherwise hold `make demo`'s Ctrl-C for 30 s."""


def hosts_file(pod: LocalPod, services: list[dict[str, Any]], pods: list[LocalPod]) -> str:
    """/etc/hosts of ``pod``: itself, and each Service's ready pods under the Service's DNS
    names (as a headless Service resolves; Services here must use port == targetPort)."""
    lines = ["127.0.0.1 localhost", f"{pod.ip} {pod.name}"]
    for service in services:
        selector = service["spec"].get("selector")
        name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
        if not selector:
            continue
        names = [
            f"{name}.{namespace}.svc.cluster.local",
            f"{name}.{namespace}.svc",
            f"{name}.{namespace}",
        ]
        if namespace == pod.namespace:
            names.append(name)
        for other in pods:
            labels = other.pod["metadata"].get("labels") or {}
            if other.namespace == namespace and other.ready and selector.items() <= labels.items():
                lines.append(f"{other.ip} {' '.join(names)}")
    return "\n".join(lines) + "\n"


class Runner:
    def __init__(
        self,
        kube: KubeClient,
        network: PodNetwork,
        state_dir: Path,
        namespaces: list[str],
        images: dict[str, str] | None = None,
    ) -> None:
        self.kube = kube
        self.images = images or {}
        self.network = network
        self.state_dir = state_dir
        self.namespaces: list[str | None] = list(namespaces) or [None]
        self.local: dict[str, LocalPod] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._reported: dict[str, str] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        await asyncio.to_thread(self.network.up)
        log.info("pod network %s on bridge %s", self.network.network, self.network.bridge)
        try:
            async with asyncio.TaskGroup() as tasks:
                for namespace in self.namespaces:
                    tasks.create_task(self._follow("v1", "Pod", namespace, self._pod_event))
                    tasks.create_task(
                        self._follow("apps/v1", "Deployment", namespace, self._deployment_event)
                    )
                    tasks.create_task(self._follow("v1", "Service", namespace, self._service_event))
                    for kind in ("ConfigMap", "Secret"):
                        tasks.create_task(
                            self._follow("v1", kind, namespace, partial(self._source_event, kind))
                        )
                tasks.create_task(self._reconcile_deployments())
                tasks.create_task(self._collect_garbage())
        finally:
            await asyncio.gather(
                *(pod.stop(SHUTDOWN_GRACE_S) for pod in self.local.values()), *self._stopping
            )
            await asyncio.to_thread(self.network.down)

    async def _follow(
        self, api_version: str, kind: str, namespace: str | None, handle: Any
    ) -> None:
        while True:
            try:
                async for what, obj in self.kube.watch(api_version, kind, namespace):
                    await handle(what, obj)
            except ApiError as exc:
                log.warning("watching %s: %s; again in 2 s", kind, exc)
                await asyncio.sleep(2)

    # Pods: the kubelet's part.

    async def _pod_event(self, what: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if what == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            self.pods.pop(uid, None)
            self._stop(uid)
        else:
            self.pods[uid] = pod
            if uid not in self.local:
                await self._admit(pod)
        self._touch_owner(pod)

    async def _admit(self, pod: dict[str, Any]) -> None:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        if status.get("podIP") and pod["spec"].get("restartPolicy", "Always") == "Never":
            # It ran under an earlier runner, and its processes died with it.
            await self._patch_status(
                pod,
                {
                    "phase": "Failed",
                    "reason": "NodeLost",
                    "message": "the local pod runner restarted",
                },
            )
            return
        local = LocalPod(pod, self.kube, self.network, self.state_dir, self.images)
        local.on_change = self._refresh_hosts
        self.local[pod["metadata"]["uid"]] = local
        local.start()

    def _stop(self, uid: str) -> None:
        local = self.local.pop(uid, None)
        if local is not None:
            task = asyncio.create_task(local.stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
            self._refresh_hosts()

    async def _patch_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Merge ``status`` into the object's status subresource; gone objects are fine."""
        meta = obj["metadata"]
        api_version, kind = obj.get("apiVersion", "v1"), obj.get("kind", "Pod")
        with contextlib.suppress(NotFound):
            await self.kube.patch(
                api_version,
                kind,
                meta["namespace"],
                meta["name"],
                {"status": status},
                subresource="status",
            )

    async def _source_event(self, kind: str, what: str, obj: dict[str, Any]) -> None:
        """A ConfigMap or Secret changed: refresh the volumes that show it (environment
        variables keep the value they started with, as on a kubelet)."""
        meta = obj["metadata"]
        for pod in list(self.local.values()):
            if pod.namespace == meta["namespace"] and pod.uses(kind, meta["name"]):
                pod.refresh_soon()

    # Services: cluster DNS.

    async def _service_event(self, what: str, service: dict[str, Any]) -> None:
        uid = service["metadata"]["uid"]
        if what == "DELETED":
            self.services.pop(uid, None)
        else:
            self.services[uid] = service
        self._refresh_hosts()

    def _refresh_hosts(self) -> None:
        pods = [p for p in self.local.values() if p.netns]
        services = list(self.services.values())
        for pod in pods:
            self.network.write_hosts(pod.netns, hosts_file(pod, services, pods))

    # Deployments: the Deployment controller's part.

    async def _deployment_event(self, what: str, deployment: dict[str, Any]) -> None:
        uid = deployment["metadata"]["uid"]
        if what == "DELETED":
            self.deployments.pop(uid, None)
            for pod in list(self.pods.values()):
                if deployments.owned_by(pod, deployment):
                    await self._delete("v1", "Pod", pod)
        else:
            self.deployments[uid] = deployment
            self._dirty.add(uid)
            self._wake.set()

    def _touch_owner(self, pod: dict[str, Any]) -> None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Deployment" and ref["uid"] in self.deployments:
                self._dirty.add(ref["uid"])
                self._wake.set()

    async def _reconcile_deployments(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for uid in dirty:
                deployment = self.deployments.get(uid)
                if deployment is not None:
                    try:
                        await self._reconcile(deployment)
                    except ApiError as exc:
                        log.warning("deployment %s: %s", deployment["metadata"]["name"], exc)
                        self._dirty.add(uid)
                        await asyncio.sleep(1)
                        self._wake.set()

    async def _reconcile(self, deployment: dict[str, Any]) -> None:
        pods = list(self.pods.values())
        todo = deployments.plan(deployment, pods)
        for manifest in todo.create:
            created = await self.kube.create(manifest)
            # Known at once, so the next pass does not create it again before the watch says so.
            self.pods[created["metadata"]["uid"]] = created
        for pod in pods:
            if pod["metadata"]["name"] in todo.delete:
                self.pods.pop(pod["metadata"]["uid"], None)
                await self._delete("v1", "Pod", pod)
        status = deployments.status(deployment, list(self.pods.values()))
        uid = deployment["metadata"]["uid"]
        if json.dumps(status, sort_keys=True) != self._reported.get(uid):
            await self._patch_status(deployment, status)
            self._reported[uid] = json.dumps(status, sort_keys=True)

    # Garbage collection: what the kube-controller-manager would delete.

    async def _collect_garbage(self) -> None:
        while True:
            await asyncio.sleep(GC_SECONDS)
            for api_version, kind, objects in (
                ("apps/v1", "Deployment", self.deployments),
                ("v1", "Pod", self.pods),
            ):
                for obj in list(objects.values()):
                    if await self._orphaned(obj):
                        log.info(
                            "collecting %s %s: its owner is gone", kind, obj["metadata"]["name"]
                        )
                        await self._delete(api_version, kind, obj)

    async def _orphaned(self, obj: dict[str, Any]) -> bool:
        for ref in obj["metadata"].get("ownerReferences") or []:
            if not ref.get("controller") or (ref["apiVersion"], ref["kind"]) not in PLURALS:
                continue
            try:
                owner = await self.kube.find(
                    ref["apiVersion"], ref["kind"], obj["metadata"]["namespace"], ref["name"]
                )
            except ApiError:
                return False
            return owner is None or owner["metadata"]["uid"] != ref["uid"]
        return False

    async def _delete(self, api_version: str, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            await self.kube.delete(api_version, kind, meta["namespace"], meta["name"])
        except ApiError as exc:
            log.warning("deleting %s %s: %s", kind, meta["name"], exc)
