"""Property-based fuzzing of the served OpenAPI document with schemathesis: valid and
invalid requests of every operation, against `python -m paddock.gateway` (the real
entrypoint, in its own process) over the real apiserver and Redis. Bad input must never
yield a 5xx, and answers must match the document (status codes, content types, shapes)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from paddock.gateway.auth import API_KEY_LABEL
from paddock.gateway.openapi import document
from paddock.testing.controlplane import ControlPlane
from paddock.testing.ports import free_port, wait_until
from paddock.testing.redis import RedisServer

from .stack import b64


@dataclass(frozen=True)
class RunningGateway:
    url: str
    key: str
    metrics_url: str
    log: Path


@pytest.fixture(scope="module")
def gateway_process(
    control_plane: ControlPlane, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    suffix = secrets.token_hex(3)
    system, tenant = f"fuzz-system-{suffix}", f"fuzz-{suffix}"
    key = f"sk-fuzz-{secrets.token_urlsafe(12)}"
    with control_plane.client() as kube:
        for namespace in (system, tenant):
            kube.post(
                "/api/v1/namespaces", json={"metadata": {"name": namespace}}
            ).raise_for_status()
        kube.post(
            f"/api/v1/namespaces/{system}/secrets",
            json={
                "metadata": {"name": "fuzz-key", "labels": {API_KEY_LABEL: "true"}},
                "data": {"api-key": b64(key), "namespace": b64(tenant)},
            },
        ).raise_for_status()
    port, metrics_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    env = {
        **os.environ,
        "PADDOCK_REDIS_URL": redis_server.url,
        "PADDOCK_GATEWAY_NAMESPACE": system,
        "PADDOCK_GATEWAY_HOST": "127.0.0.1",
        "PADDOCK_GATEWAY_PORT": str(port),
        "PADDOCK_METRICS_PORT": str(metrics_port),
        "KUBECONFIG": str(control_plane.kubeconfig),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paddock.gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
            timeout=30,
            what="gateway",
        )
        yield RunningGateway(url, key, f"http://127.0.0.1:{metrics_port}/metrics", log)
    finally:
        process.terminate()
        process.wait(timeout=15)


# The document the gateway serves (checked below), loaded at import as parametrize needs.
schema = schemathesis.openapi.from_dict(document())
# The coverage phase enumerates boundary cases at collection, which takes a minute for these
# bodies; random generation (valid and invalid data) finds what it would, within budget.
schema.config.phases.update(phases=["examples", "fuzzing"])


def test_the_served_document_is_the_fuzzed_one(gateway_process: RunningGateway) -> None:
    served = httpx.get(f"{gateway_process.url}/v1/openapi.json", timeout=5)
    assert served.headers["content-type"].startswith("application/json")
    assert served.json() == document()


@pytest.fixture(scope="module")
def existing(gateway_process: RunningGateway) -> dict[str, str]:
    """Path parameters naming objects that exist, so fuzzing reaches past the lookups."""
    with httpx.Client(
        base_url=gateway_process.url, headers={"x-api-key": gateway_process.key}
    ) as http:
        environment = http.post("/v1/environments", json={"name": "fuzz-target"}).json()["id"]
        agent = http.post(
            "/v1/agents", json={"name": "fuzz-target", "model": "claude-sonnet-4-6"}
        ).json()["id"]
        session = http.post(
            "/v1/sessions", json={"agent": agent, "environment_id": environment}
        ).json()["id"]
    return {"agent_id": agent, "environment_id": environment, "session_id": session}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["unknown", "existing"])
@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_fuzzing_finds_no_server_error(
    case: schemathesis.Case, target: str, gateway_process: RunningGateway, existing: dict[str, str]
) -> None:
    if target == "existing":
        if case.method == "DELETE" or case.path.endswith(("/archive", "/stream")):
            return  # these would end or block the objects the other operations use
        for name in case.path_parameters or {}:
            case.path_parameters[name] = existing[name]
    case.call_and_validate(
        base_url=gateway_process.url,
        headers={"x-api-key": gateway_process.key},
        timeout=10,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


def test_the_entrypoint_serves_metrics(gateway_process: RunningGateway) -> None:
    # The fuzzing above went through this process.
    text = httpx.get(gateway_process.metrics_url, timeout=5).text
    assert 'paddock_gateway_requests_total{method="GET",route="/v1/agents"' in text
    assert "paddock_gateway_open_streams 0.0" in text
    # Fuzzing sent valid bodies as well as invalid ones.
    for status in ("200", "400"):
        assert f'route="/v1/agents",status="{status}"' in text
        assert f'route="/v1/sessions/{{session_id}}/events",status="{status}"' in text
    assert "Traceback" not in gateway_process.log.read_text()
