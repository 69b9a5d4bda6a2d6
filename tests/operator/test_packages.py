"""Environment packages in the operator, with the test playing kubelet: what an installing
pool pod gets (its plan, its package proxy token, the NetworkPolicy that lets it reach the
package proxy), a failed install (status, replacement with backoff, the metric), and a warm
claim that ends the pod's install access."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kopf.testing import KopfRunner
from prometheus_client import REGISTRY

from paddock.operator import labels as L
from paddock.proxy import tokens
from paddock.sandbox import PLAN_ENV, PackagePlan

from .conftest import Cluster, agent_spec, api_key_secret
from .test_sandboxes import session_ready

KEY = b"k" * 48
PIP_INDEX = "http://127.0.0.1:9/simple/"
APT_SOURCES = "deb http://127.0.0.1:9/debian bookworm main"


@pytest.fixture(scope="module")
def operator_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    key_file = tmp_path_factory.mktemp("package-proxy") / "token-key"
    key_file.write_bytes(KEY + b"\n")
    return {
        "PADDOCK_PACKAGE_PROXY_URL": "http://127.0.0.1:3999",
        "PADDOCK_PACKAGE_PROXY_TOKEN_KEY_FILE": str(key_file),
        "PADDOCK_PACKAGE_PROXY_NAMESPACE": "paddock-system",
        "PADDOCK_PACKAGE_PROXY_LABELS": "app.kubernetes.io/component=package-proxy",
        "PADDOCK_PIP_INDEX_URL": PIP_INDEX,
        "PADDOCK_APT_SOURCES": APT_SOURCES,
    }


def _moment(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _installs(seconds: int) -> dict[str, Any]:
    """A sandbox container that started ``seconds`` ago."""
    started = datetime.now(UTC) - timedelta(seconds=seconds)
    return {"name": "sandbox", "state": {"running": {"startedAt": _moment(started)}}}


def _samples(environment: str, outcome: str, namespace: str) -> float:
    labels = {"namespace": namespace, "environment": environment, "outcome": outcome}
    return REGISTRY.get_sample_value("paddock_sandbox_package_install_seconds_count", labels) or 0


def _condition(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any]:
    return cluster.condition("Environment", namespace, name, kind) or {}


def _pool_pod(cluster: Cluster, namespace: str, environment: str) -> dict[str, Any]:
    labels = {L.ENVIRONMENT: environment, L.SANDBOX_STATE: "warm"}
    pods = cluster.wait("a pool pod", lambda: cluster.sandboxes(namespace, **labels))
    return pods[0]


def test_an_installing_pool_pod_gets_its_plan_a_token_and_a_way_to_the_package_proxy_only(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    packages = {"pip": ["pandas==2.2.2"], "npm": ["typescript"]}
    cluster.create("Environment", namespace, "python", {"packages": packages})
    pod = _pool_pod(cluster, namespace, "python")
    name = pod["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    plan = PackagePlan.model_validate_json(
        next(e["value"] for e in container["env"] if e["name"] == PLAN_ENV)
    )
    assert (plan.pip, plan.npm) == (["pandas==2.2.2"], ["typescript"])
    # By address (the sandbox has no resolver), with the operator's mirror.
    assert plan.proxy_url == "http://127.0.0.1:3999"
    assert plan.pip_index_url == PIP_INDEX
    assert plan.proxy_user == name
    # The token is the package proxy's, for this pod and the packages policy only.
    token = pod["metadata"]["annotations"][L.PACKAGE_TOKEN]
    claims = tokens.verify(KEY, token, session_id=name, now=int(time.time()), max_age=60)
    assert claims.environment == "packages"
    assert pod["metadata"]["labels"][L.PACKAGES] == "install"
    url = (
        f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/python-sandbox-packages"
    )
    policy = cluster.wait(
        "the package policy",
        lambda: (reply := cluster.http.get(url)).status_code == 200 and reply.json(),
    )
    assert policy["spec"]["podSelector"]["matchLabels"][L.PACKAGES] == "install"
    assert policy["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 3999}]
    # The status follows the pod: wait for it to be written.
    packages_ready = cluster.wait(
        "PackagesReady", lambda: _condition(cluster, namespace, "python", "PackagesReady")
    )
    assert packages_ready["reason"] == "Installing"


def test_a_failed_install_is_in_the_status_and_the_pod_is_replaced_after_a_backoff(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    cluster.create("Environment", namespace, "broken", {"packages": {"pip": ["nope"]}})
    failed = _pool_pod(cluster, namespace, "broken")["metadata"]["name"]
    before = _samples("broken", "failed", namespace)
    started, finished = datetime.now(UTC) - timedelta(seconds=4), datetime.now(UTC)
    words = "package install failed: ERROR: No matching distribution found for nope"
    cluster.patch(
        "Pod",
        namespace,
        failed,
        {
            "status": {
                "phase": "Failed",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": "sandbox",
                        "ready": False,
                        "restartCount": 0,
                        "image": "paddock/sandbox:0.1.0",
                        "imageID": "",
                        "state": {
                            "terminated": {
                                "exitCode": 3,
                                "message": words,
                                "startedAt": _moment(started),
                                "finishedAt": _moment(finished),
                            }
                        },
                    }
                ],
            }
        },
        status=True,
    )
    condition = cluster.wait(
        "InstallFailed",
        lambda: (
            (c := _condition(cluster, namespace, "broken", "PackagesReady")).get("reason")
            == "InstallFailed"
            and c
        ),
    )
    assert condition["status"] == "False"
    assert words in condition["message"]
    assert _condition(cluster, namespace, "broken", "Ready")["reason"] == "SandboxFailing"
    assert _samples("broken", "failed", namespace) == before + 1
    # Deleted and replaced, one at a time.
    replacement = cluster.wait(
        "a replacement",
        lambda: [
            p
            for p in cluster.sandboxes(namespace, **{L.ENVIRONMENT: "broken"})
            if p["metadata"]["name"] != failed
        ],
    )
    assert len(replacement) == 1
    assert cluster.get("Pod", namespace, failed) is None or cluster.get("Pod", namespace, failed)[
        "metadata"
    ].get("deletionTimestamp")


def test_a_warm_claim_of_a_pool_with_packages_ends_its_install_access(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    api_key_secret(cluster, namespace)
    cluster.create("Environment", namespace, "python", {"packages": {"pip": ["requests"]}})
    cluster.create("Agent", namespace, "coder", agent_spec(environmentRef={"name": "python"}))
    pod = _pool_pod(cluster, namespace, "python")
    name = pod["metadata"]["name"]
    before = _samples("python", "installed", namespace)
    cluster.patch(
        "Pod",
        namespace,
        name,
        {
            "status": {
                "phase": "Running",
                "podIP": "10.1.0.9",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {
                        **_installs(7),
                        "ready": True,
                        "restartCount": 0,
                        "image": "paddock/sandbox:0.1.0",
                        "imageID": "",
                    }
                ],
            }
        },
        status=True,
    )
    cluster.wait(
        "Installed",
        lambda: (
            _condition(cluster, namespace, "python", "PackagesReady").get("reason") == "Installed"
        ),
    )
    assert _samples("python", "installed", namespace) == before + 1

    cluster.create("Session", namespace, "s1", {"agentRef": {"name": "coder"}})
    sandbox = session_ready(cluster, namespace, "s1")["status"]["sandbox"]
    assert (sandbox["claim"], sandbox["podName"]) == ("warm", name)
    bound = cluster.get("Pod", namespace, name)
    assert L.PACKAGES not in bound["metadata"]["labels"]
    assert L.PACKAGE_TOKEN not in bound["metadata"]["annotations"]


def test_apt_packages_are_in_the_plan_with_the_operators_apt_sources(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    cluster.create("Environment", namespace, "tools", {"packages": {"apt": ["ripgrep"]}})
    pod = _pool_pod(cluster, namespace, "tools")
    (container,) = pod["spec"]["containers"]
    plan = PackagePlan.model_validate_json(
        next(e["value"] for e in container["env"] if e["name"] == PLAN_ENV)
    )
    assert (plan.apt, plan.apt_sources) == (["ripgrep"], APT_SOURCES)
    assert pod["metadata"]["labels"][L.PACKAGES] == "install"
    cluster.wait(
        "Installing",
        lambda: (
            _condition(cluster, namespace, "tools", "PackagesReady").get("reason") == "Installing"
        ),
    )


def test_a_cold_sandbox_installs_too_and_loses_its_install_access_before_it_is_bound(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    api_key_secret(cluster, namespace)
    spec = {"packages": {"pip": ["requests"]}, "warmPool": {"size": 0}}
    cluster.create("Environment", namespace, "python", spec)
    cluster.create("Agent", namespace, "coder", agent_spec(environmentRef={"name": "python"}))
    cluster.create("Session", namespace, "s1", {"agentRef": {"name": "coder"}})
    (cold,) = cluster.wait(
        "a cold pod", lambda: cluster.sandboxes(namespace, **{L.ENVIRONMENT: "python"})
    )
    assert cold["metadata"]["labels"][L.PACKAGES] == "install"
    cluster.run_pod(namespace, cold["metadata"]["name"], ip="10.1.0.7")
    sandbox = session_ready(cluster, namespace, "s1")["status"]["sandbox"]
    assert sandbox["claim"] == "cold"
    bound = cluster.get("Pod", namespace, sandbox["podName"])
    assert L.PACKAGES not in bound["metadata"]["labels"]
    assert L.PACKAGE_TOKEN not in bound["metadata"]["annotations"]
