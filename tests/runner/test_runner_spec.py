"""What the local pod runner makes of the operator's real manifests (the golden files):
processes, environments, volumes and their owners, Deployment plans, and DNS."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from paddock.runner import deployments, spec
from paddock.runner.node import hosts_file
from paddock.runner.pods import LocalPod

GOLDEN = Path(__file__).parents[1] / "operator" / "golden"
IP = "10.244.0.7"


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((GOLDEN / name).read_text())


def _deployment() -> dict[str, Any]:
    deployment = _load("harness-deployment.yaml")
    deployment["metadata"]["uid"] = "uid-deployment"
    return deployment


def _harness_pod() -> dict[str, Any]:
    pod = deployments.new_pod(_deployment(), "abc")
    pod["metadata"]["uid"] = "uid-pod"
    return pod


SOURCES = {
    "configmaps": {"coder-agent": {"agent.yaml": "spec: {}"}, "coder-proxy": {"proxy.yaml": "x"}},
    "secrets": {
        "anthropic": {"api-key": b"sk-ant-1"},
        "coder-proxy-token-key": {"key": b"k"},
        "github": {"token": b"ghp"},
        "paddock-redis-harness": {"username": b"paddock-harness-team-a", "password": b"pw"},
        "docs-client": {"secret": b"cs"},
        "paddock-vault-vcrd-docs": {"access_token": b"at", "refresh_token": b"rt"},
        "tickets": {"token": b"bearer"},
    },
}


def test_the_harness_runs_on_the_local_python_with_its_pod_environment() -> None:
    pod = _harness_pod()
    harness = pod["spec"]["containers"][0]
    env = spec.container_env(
        pod, harness, pod_ip=IP, configmaps=SOURCES["configmaps"], secrets=SOURCES["secrets"]
    )
    assert env["PADDOCK_WORKER_ID"] == pod["metadata"]["name"]  # the downward API
    assert env["PADDOCK_REDIS_PASSWORD"] == b"pw"  # the tenant's Redis Secret, as bytes
    assert env["PADDOCK_AGENT"] == "team-a/coder"
    assert spec.container_argv(harness, env, "/venv/bin/python") == [
        "/venv/bin/python", "-m", "paddock.harness",
    ]  # fmt: skip
    assert spec.container_uid(pod, harness) == (10001, 10001)
    assert spec.probe_of(harness) == ("tcpSocket", 9090, "/")


def test_variables_expand_in_order_and_missing_sources_are_named() -> None:
    pod = _harness_pod()
    container = {
        "name": "c",
        "env": [
            {"name": "A", "value": "one"},
            {"name": "B", "value": "$(A)-two-$(C)-$$(A)"},
            {"name": "C", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}},
        ],
    }
    with pytest.raises(spec.MissingSource, match="Secret 'nope' not found"):
        spec.container_env(pod, container, pod_ip=IP, configmaps={}, secrets={})
    container["env"].pop()
    env = spec.container_env(pod, container, pod_ip=IP, configmaps={}, secrets={})
    assert env["B"] == "one-two-$(C)-$(A)"


def test_secret_files_belong_to_the_one_container_that_mounts_them() -> None:
    volumes = {v.name: v for v in spec.volumes(_harness_pod(), pod_ip=IP, **SOURCES)}
    for name in ("anthropic-key", "token-key", "host-0"):  # mounted by the proxy only
        assert (volumes[name].uid, volumes[name].dir_mode) == (10002, 0o500)
        assert all(mode == 0o400 for _, mode in volumes[name].files.values())
    assert volumes["anthropic-key"].files == {"api-key": (b"sk-ant-1", 0o400)}
    # The vault credentials: one projected volume of several Secrets, the proxy's alone.
    assert (volumes["vaults"].uid, volumes["vaults"].dir_mode) == (10002, 0o500)
    assert volumes["vaults"].files == {
        "vlt_tools/vcrd_docs/client_secret": (b"cs", 0o400),
        "vlt_tools/vcrd_docs/access_token": (b"at", 0o400),
        "vlt_tools/vcrd_docs/refresh_token": (b"rt", 0o400),
        "vlt_tools/vcrd_tickets/token": (b"bearer", 0o400),
    }
    assert volumes["agent"].files["agent.yaml"][0] == b"spec: {}"
    assert volumes["tmp"].dir_mode == 0o1777


def test_a_missing_secret_keeps_the_pod_waiting_with_its_name() -> None:
    sources = copy.deepcopy(SOURCES)
    del sources["secrets"]["anthropic"]
    with pytest.raises(spec.MissingSource, match="Secret 'anthropic' not found"):
        spec.volumes(_harness_pod(), pod_ip=IP, **sources)


def test_the_sandbox_token_arrives_through_the_downward_api() -> None:
    pod = _load("sandbox-pod.yaml")
    (token,) = [
        v for v in spec.volumes(pod, pod_ip=IP, configmaps={}, secrets={}) if v.name == "token"
    ]
    assert token.files == {"token": (b"sandbox-token", 0o644)}
    argv = spec.container_argv(pod["spec"]["containers"][0], {}, "/venv/bin/python")
    assert argv[:3] == ["/venv/bin/python", "-m", "paddock.sandbox"]
    assert spec.probe_of(pod["spec"]["containers"][0]) == ("httpGet", 8080, "/readyz")


def _ready(pod: dict[str, Any]) -> dict[str, Any]:
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def test_a_deployment_rolls_new_pods_in_before_old_ones_go() -> None:
    deployment = _deployment()
    deployment["spec"]["replicas"] = 2
    first = deployments.plan(deployment, [])
    assert len(first.create) == 2
    assert first.delete == []
    old = [_ready(p) for p in first.create]
    for i, pod in enumerate(old):
        pod["metadata"]["uid"] = f"old-{i}"
    assert deployments.plan(deployment, old).create == []
    assert deployments.status(deployment, old)["readyReplicas"] == 2

    deployment["spec"]["template"]["metadata"]["annotations"]["paddock.dev/spec-hash"] = "changed"
    rolling = deployments.plan(deployment, old)
    assert len(rolling.create) == 2
    assert rolling.delete == []  # the new pods are not ready yet
    new = [_ready(p) for p in rolling.create]
    done = deployments.plan(deployment, old + new)
    assert sorted(done.delete) == sorted(p["metadata"]["name"] for p in old)
    assert done.create == []


def test_a_dead_pod_is_replaced() -> None:
    deployment = _deployment()
    (pod,) = deployments.plan(deployment, []).create
    pod["status"] = {"phase": "Failed"}
    again = deployments.plan(deployment, [pod])
    assert again.delete == [pod["metadata"]["name"]]
    assert len(again.create) == 1


def _local(pod: dict[str, Any], ip: str, ready: bool) -> LocalPod:
    """A pod as the runner tracks it, here without starting anything."""
    pod["metadata"].setdefault("uid", f"uid-{ip}")
    local = LocalPod(pod, kube=None, network=None, state_dir=Path("/nonexistent"))  # type: ignore[arg-type]
    local.ip, local.phase = ip, "Running"
    for container in local.containers:
        container.ready = ready
    return local


def test_service_names_resolve_to_the_ready_pods_they_select() -> None:
    service = _load("proxy-service.yaml")
    harness = _local(_harness_pod(), "10.244.0.2", ready=True)
    starting = _local(_harness_pod(), "10.244.0.3", ready=False)
    sandbox = _local(_load("sandbox-pod.yaml"), "10.244.0.4", ready=True)
    hosts = hosts_file(sandbox, [service], [harness, starting, sandbox])
    assert (
        "10.244.0.2 coder-proxy.team-a.svc.cluster.local coder-proxy.team-a.svc "
        "coder-proxy.team-a coder-proxy"
    ) in hosts.splitlines()
    assert "10.244.0.3" not in hosts
    assert "10.244.0.4 python-0001" in hosts.splitlines()
