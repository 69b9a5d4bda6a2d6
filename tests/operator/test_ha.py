"""Two operator replicas: the one holding the leader lease in Redis acts, the other waits
with its informers current; when the leader goes, the other takes over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from paddock.operator import labels as L
from paddock.operator.leases import Leadership
from paddock.testing.controlplane import ControlPlane

from .conftest import Cluster, agent_spec, api_key_secret


class PoolWatch:
    """Watches a namespace's sandbox pods in a thread and remembers what a user would
    check: the most warm pods alive at any moment, and who created each pod."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.most_warm = 0
        self.created_by: dict[str, str] = {}
        self._warm: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._url = cluster.url("Pod", namespace)
        self._selector = f"{L.COMPONENT}=sandbox"
        listed = cluster.http.get(self._url, params={"labelSelector": self._selector}).json()
        for pod in listed["items"]:
            self._see(pod)
        self._version = listed["metadata"]["resourceVersion"]
        self._thread.start()

    def _see(self, pod: dict[str, Any], deleted: bool = False) -> None:
        meta = pod["metadata"]
        self.created_by.setdefault(meta["name"], meta["annotations"].get(L.CREATED_BY, "?"))
        warm = meta["labels"].get(L.SANDBOX_STATE) == "warm"
        if warm and not deleted and not meta.get("deletionTimestamp"):
            self._warm.add(meta["name"])
        else:
            self._warm.discard(meta["name"])
        self.most_warm = max(self.most_warm, len(self._warm))

    def _run(self) -> None:
        while not self._stop.is_set():
            params = {
                "labelSelector": self._selector,
                "watch": "1",
                "resourceVersion": self._version,
                "timeoutSeconds": "5",
            }
            with self.cluster.http.stream("GET", self._url, params=params, timeout=None) as reply:
                for line in reply.iter_lines():
                    if line:
                        event = json.loads(line)
                        self._version = event["object"]["metadata"]["resourceVersion"]
                        self._see(event["object"], deleted=event["type"] == "DELETED")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_two_replicas_act_as_one(
    cluster: Cluster,
    namespace: str,
    control_plane: ControlPlane,
    redis_server,
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "PADDOCK_REDIS_URL": redis_server.url,
        "PADDOCK_METRICS_PORT": "0",
        "PADDOCK_WATCH_NAMESPACES": namespace,
    }
    redis = Redis.from_url(redis_server.url)
    lease = f"paddock:operator:leader:{namespace}"

    def logs() -> list[str]:
        return [(tmp_path / f"operator-{n}.log").read_text() for n in range(2)]

    def holder() -> str | None:
        value = redis.get(lease)
        return value.decode() if value else None

    def warm_pods() -> list[dict[str, Any]]:
        return cluster.sandboxes(namespace, **{L.SANDBOX_STATE: "warm"})

    replicas = []
    for n in range(2):
        with (tmp_path / f"operator-{n}.log").open("wb") as out:
            replicas.append(
                subprocess.Popen(
                    [sys.executable, "-m", "paddock.operator"],
                    env={**env, "POD_NAME": f"operator-{n}"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    watch = PoolWatch(cluster, namespace)
    try:
        # Both replicas are up and one holds the leader lease before the work.
        leader = cluster.wait("a lease holder", holder, timeout=30)
        cluster.create("Environment", namespace, "python", {"warmPool": {"size": 3}})
        cluster.wait("pool filled", lambda: len(warm_pods()) >= 3, timeout=60)
        for pod in warm_pods():
            cluster.run_pod(namespace, pod["metadata"]["name"])
        # Pods taken from the pool (here: deleted) are replaced, by the lease holder.
        for pod in warm_pods()[:2]:
            cluster.delete("Pod", namespace, pod["metadata"]["name"])
        cluster.wait(
            "pool refilled",
            lambda: len(warm_pods()) >= 3 and len(watch.created_by) >= 5,
            timeout=60,
        )
        assert set(watch.created_by.values()) == {leader}, (watch.created_by, logs())
        assert len(watch.created_by) == 5

        # A Session is accepted, bound and synced by the leader: a sandbox and a phase.
        for pod in warm_pods():
            cluster.run_pod(namespace, pod["metadata"]["name"])
        api_key_secret(cluster, namespace)
        cluster.create("Agent", namespace, "coder", agent_spec(environmentRef={"name": "python"}))
        cluster.create("Session", namespace, "s1", {"agentRef": {"name": "coder"}})
        session = cluster.wait(
            "a phase and a sandbox",
            lambda: (
                (s := cluster.get("Session", namespace, "s1"))
                and (s.get("status") or {}).get("phase")
                and (s.get("status") or {}).get("sandbox")
                and s
            ),
        )
        assert session["status"]["sandbox"]["claim"] == "warm"
        cluster.wait("refilled after the claim", lambda: len(watch.created_by) == 6)

        # The leader goes away: the other replica takes the lease and keeps the pool.
        follower = "operator-1" if leader == "operator-0" else "operator-0"
        replicas[int(leader[-1])].terminate()
        replicas[int(leader[-1])].wait(20)
        cluster.wait("the other replica holds the lease", lambda: holder() == follower)
        cluster.delete("Pod", namespace, warm_pods()[0]["metadata"]["name"])
        cluster.wait(
            "pool refilled by the new holder",
            lambda: len(warm_pods()) >= 3 and follower in watch.created_by.values(),
            timeout=60,
        )
        # The new leader accepts Sessions too.
        cluster.create("Session", namespace, "s2", {"agentRef": {"name": "coder"}})
        cluster.wait(
            "the new leader accepted a Session",
            lambda: ((cluster.get("Session", namespace, "s2") or {}).get("status") or {}).get(
                "sessionId"
            ),
        )
        # Two replicas filling the pool independently would have had more than 3 at once.
        assert watch.most_warm == 3, (watch.created_by, logs())
    finally:
        watch.stop()
        redis.close()
        for replica in replicas:
            replica.terminate()
        for replica in replicas:
            replica.wait(20)


async def test_a_renewal_redis_does_not_answer_in_time_gives_up_the_lease(redis) -> None:
    """A renewal that cannot be answered within the lease's margin (here: Redis pausing its
    clients, as a pool with every connection taken would) fails instead of hanging, and the
    replica no longer believes it holds the lease, so it stops acting before another can."""
    lease = Leadership(redis, "paddock:operator:leader", "replica-a", ttl_ms=500)
    assert await lease.hold()
    assert lease.held()
    await redis.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
    try:
        with pytest.raises(TimeoutError):
            await lease.hold()
        assert not lease.held()
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
