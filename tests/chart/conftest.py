"""Fixtures of the chart tests: the shared test apiserver with stand-ins for the Prometheus
Operator's CRDs, removed again after the module so that later test folders see the cluster
as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from tests.chart.support import Cluster

from paddock.testing.controlplane import ControlPlane
from paddock.testing.ports import wait_until

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
EXTRA_CRDS = sorted((Path(__file__).parent / "crds").glob("*.yaml"))


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[Cluster]:
    with control_plane.client() as http:
        installed = []
        for path in EXTRA_CRDS:
            crd = yaml.safe_load(path.read_text())
            name = crd["metadata"]["name"]
            if http.get(f"{CRDS}/{name}").status_code == 404:
                response = http.post(CRDS, json=crd)
                assert response.status_code == 201, f"{path.name}: {response.text}"
                installed.append(name)
        for name in installed:
            wait_until(lambda n=name: established(http, n), timeout=30, what=f"CRD {name}")
        yield Cluster(http)
        for name in installed:
            http.delete(f"{CRDS}/{name}")
        for name in installed:
            wait_until(
                lambda n=name: http.get(f"{CRDS}/{n}").status_code == 404,
                timeout=30,
                what=f"CRD {name} removed",
            )


def established(http: httpx.Client, name: str) -> bool:
    conditions = http.get(f"{CRDS}/{name}").json().get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
