"""The operator under test: the real kopf operator in a thread, against the real
apiserver and Redis. Pods never run here, so tests play kubelet by patching pod status."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from kopf.testing import KopfRunner

from paddock.operator import labels as L
from paddock.testing.controlplane import ControlPlane
from paddock.testing.ports import free_port, wait_until

API = "/apis/paddock.dev/v1alpha1"
PLURALS = {
    "Agent": "agents",
    "Environment": "environments",
    "Session": "sessions",
    "Vault": "vaults",
}
_namespaces = itertools.count()
T = TypeVar("T")


class Cluster:
    """Reads and writes through the admin client, and waits."""

    def __init__(self, plane: ControlPlane) -> None:
        self.http: httpx.Client = plane.client()

    def url(self, kind: str, namespace: str, name: str = "") -> str:
        if kind in PLURALS:
            base = f"{API}/namespaces/{namespace}/{PLURALS[kind]}"
        else:
            group = {
                "Deployment": "/apis/apps/v1",
                "NetworkPolicy": "/apis/networking.k8s.io/v1",
            }.get(kind, "/api/v1")
            plural = {
                "Deployment": "deployments",
                "NetworkPolicy": "networkpolicies",
                "Pod": "pods",
                "Service": "services",
                "ConfigMap": "configmaps",
                "Secret": "secrets",
                "Event": "events",
            }[kind]
            base = f"{group}/namespaces/{namespace}/{plural}"
        return f"{base}/{name}" if name else base

    def create(
        self, kind: str, namespace: str, name: str, spec: Any = None, **extra: Any
    ) -> dict[str, Any]:
        api_version = {"Secret": "v1"}.get(kind, "paddock.dev/v1alpha1")
        body: dict[str, Any] = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name},
            **extra,
        }
        if spec is not None:
            body["spec"] = spec
        response = self.http.post(self.url(kind, namespace), json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        response = self.http.get(self.url(kind, namespace, name))
        return response.json() if response.status_code == 200 else None

    def list(self, kind: str, namespace: str, **labels: str) -> list[dict[str, Any]]:
        params = (
            {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else {}
        )
        return self.http.get(self.url(kind, namespace), params=params).json()["items"]

    def patch(
        self, kind: str, namespace: str, name: str, body: dict[str, Any], status: bool = False
    ) -> dict[str, Any]:
        response = self.http.patch(
            self.url(kind, namespace, name) + ("/status" if status else ""),
            json=body,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.http.delete(self.url(kind, namespace, name))

    def wait(self, what: str, check: Callable[[], T], timeout: float = 30) -> T:
        """What ``check`` returns once it is true (`wait_until`, an apiserver's pace)."""
        return wait_until(check, timeout=timeout, what=what, interval=0.1)

    def condition(
        self, kind: str, namespace: str, name: str, kind_of_condition: str
    ) -> dict[str, Any] | None:
        resource = self.get(kind, namespace, name) or {}
        conditions = (resource.get("status") or {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == kind_of_condition), None)

    def sandboxes(self, namespace: str, **labels: str) -> list[dict[str, Any]]:
        pods = self.list("Pod", namespace, **{L.COMPONENT: "sandbox", **labels})
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def run_pod(self, namespace: str, name: str, ip: str = "127.0.0.1") -> None:
        """Play kubelet: the pod runs and is ready at ``ip``."""
        self.patch(
            "Pod",
            namespace,
            name,
            {
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            },
            status=True,
        )

    def fail_pod(self, namespace: str, name: str) -> None:
        """Play kubelet: the pod's containers failed. A pod the operator deleted already (a
        harness worker reported it dead first) has no status left to report, as on a node."""
        response = self.http.patch(
            self.url("Pod", namespace, name) + "/status",
            json={
                "status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]}
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert response.status_code in (200, 404), response.text


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Cluster:
    return Cluster(control_plane)


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    name = f"t{os.getpid()}-{next(_namespaces)}"
    response = cluster.http.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert response.status_code == 201, response.text
    return name


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    """More settings for the module's operator (a module overrides this fixture)."""
    return {}


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, redis_server: Any, operator_env: dict[str, str]
) -> Iterator[KopfRunner]:
    """The operator, running for the whole module."""
    environment = {
        "KUBECONFIG": str(control_plane.kubeconfig),
        "PADDOCK_REDIS_URL": redis_server.url,
        "PADDOCK_IMAGE": "paddock/paddock:test",
        "PADDOCK_METRICS_PORT": "0",
        **operator_env,
    }
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    # kopf serves its liveness endpoint once the startup handlers are done; the watches list
    # before they watch, so nothing created from then on is missed.
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    runner = KopfRunner(
        [
            "run",
            "--standalone",
            "--all-namespaces",
            f"--liveness={liveness}",
            "-m",
            "paddock.operator.handlers",
        ],
        timeout=60,
    )
    try:
        with runner:
            wait_until(
                lambda: runner.future.done() or httpx.get(liveness).status_code == 200,
                timeout=60,
                what="the operator's startup",
            )
            yield runner
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert runner.exception is None, runner.output


def agent_spec(**overrides: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
        **overrides,
    }


def api_key_secret(cluster: Cluster, namespace: str) -> None:
    cluster.create("Secret", namespace, "anthropic", None, stringData={"api-key": "sk-ant-test"})
