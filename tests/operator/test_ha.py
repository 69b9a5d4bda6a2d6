"""Two operator replicas with kopf peering: one acts, the other waits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from paddock.operator import labels as L
from paddock.testing.controlplane import REPO_ROOT, ControlPlane

from .conftest import Cluster

PEERING_CRDS = [
    REPO_ROOT / "charts/paddock/crds" / f"{n}.kopf.dev.yaml"
    for n in ("clusterkopfpeerings", "kopfpeerings")
]


@pytest.fixture
def peering(cluster: Cluster, namespace: str) -> Iterator[str]:
    """kopf's peering CRDs and a peering object, as the chart installs them; removed
    afterwards so that other tests' standalone operators do not see them."""
    for path in PEERING_CRDS:
        response = cluster.http.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            json=yaml.safe_load(path.read_text()),
        )
        assert response.status_code in (201, 409), response.text
    cluster.wait(
        "peering CRDs served",
        lambda: cluster.http.get("/apis/kopf.dev/v1/clusterkopfpeerings").status_code == 200,
    )
    # Operators that watch namespaces peer through a KopfPeering in each (as the chart makes).
    response = cluster.http.post(
        f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings",
        json={"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "paddock"}},
    )
    assert response.status_code == 201, response.text
    yield "paddock"
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        cluster.http.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")


def test_two_replicas_act_as_one(
    cluster: Cluster,
    namespace: str,
    peering: str,
    control_plane: ControlPlane,
    redis_server,
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "PADDOCK_REDIS_URL": redis_server.url,
        "PADDOCK_METRICS_PORT": "0",
        "PADDOCK_PEERING": peering,
        "PADDOCK_WATCH_NAMESPACES": namespace,
    }

    def logs() -> list[str]:
        return [(tmp_path / f"operator-{n}.log").read_text() for n in range(2)]

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
    try:
        time.sleep(5)  # both replicas are up and peering before the work arrives
        cluster.create("Environment", namespace, "python", {"warmPool": {"size": 3}})
        cluster.wait("pool filled", lambda: len(cluster.sandboxes(namespace)) >= 3, timeout=60)
        # Two replicas filling the pool independently would leave more pods than its size.
        time.sleep(5)
        assert len(cluster.sandboxes(namespace, **{L.SANDBOX_STATE: "warm"})) == 3, logs()
    finally:
        for replica in replicas:
            replica.terminate()
        for replica in replicas:
            replica.wait(20)
