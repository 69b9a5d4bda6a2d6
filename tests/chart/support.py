"""Test support: the chart rendered by the real helm binary, and server-side dry-run applies
of what it renders to the real test apiserver."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import yaml

from paddock.testing.ports import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "paddock"
VALUES_ALL = Path(__file__).resolve().parent / "values-all.yaml"
RELEASE = "paddock"


@cache
def helm_binary() -> Path:
    """hack/build-helm.sh builds helm once per pin (a no-op afterwards) and prints its path."""
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-helm.sh")], check=True, capture_output=True, text=True
    )
    return Path(result.stdout.strip().splitlines()[-1])


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=60, check=False
    )


def render(
    namespace: str, values: Iterable[Path] = (), sets: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """`helm template` of the chart: every rendered object, in order."""
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass
class Rendered:
    """Rendered objects, with lookups by kind and name."""

    objects: list[dict[str, Any]]
    namespace: str

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
        return found[0]

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            for workload in self.of(kind):
                yield f"{kind}/{workload['metadata']['name']}", workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def env_of(container_spec: dict[str, Any]) -> dict[str, Any]:
    """name → value (or the valueFrom source)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_spec.get("env", [])}


@dataclass
class Cluster:
    """Server-side dry-run applies against a real apiserver, as kubectl would do them."""

    http: httpx.Client
    _discovery: dict[str, dict[str, tuple[str, bool]]] = field(default_factory=dict)

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of a kind, from the apiserver's discovery."""

        # Discovery of a just-established CRD can lag a moment: look again before failing.
        def discovered() -> bool:
            if kind in self._discovery.get(api_version, {}):
                return True
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            response = self.http.get(base)
            if response.status_code == 200:
                self._discovery[api_version] = {
                    r["kind"]: (r["name"], r["namespaced"])
                    for r in response.json()["resources"]
                    if "/" not in r["name"]
                }
            return kind in self._discovery.get(api_version, {})

        wait_until(
            discovered,
            timeout=10,
            what=f"the apiserver to serve {api_version} {kind}",
            interval=0.2,
        )
        return self._discovery[api_version][kind]

    def path(self, obj: dict[str, Any], namespace: str) -> str:
        api_version, kind = obj["apiVersion"], obj["kind"]
        plural, namespaced = self.resource(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if namespaced:
            base += f"/namespaces/{obj['metadata'].get('namespace', namespace)}"
        return f"{base}/{plural}/{obj['metadata']['name']}"

    def dry_run_apply(self, obj: dict[str, Any], namespace: str) -> httpx.Response:
        """Server-side apply with dryRun=All and strict field validation: admission, defaulting
        and schema validation run; nothing is stored."""
        return self.http.patch(
            self.path(obj, namespace),
            params={"fieldManager": "paddock-test", "dryRun": "All", "fieldValidation": "Strict"},
            content=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )

    def ensure_namespace(self, name: str) -> None:
        response = self.http.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        assert response.status_code in (201, 409), response.text
