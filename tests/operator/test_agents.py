"""Agents become harness Deployments with a proxy sidecar, and say in their status why
they are or are not ready."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import redis
from kopf.testing import KopfRunner

from paddock.operator import labels as L
from paddock.testing.redis import RedisServer

from .conftest import Cluster, agent_spec, api_key_secret


def test_agent_renders_its_harness_and_reports_a_missing_secret(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    cluster.create("Agent", namespace, "coder", agent_spec())
    deployment = cluster.wait(
        "harness deployment", lambda: cluster.get("Deployment", namespace, "coder-harness")
    )
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "Agent"
    for kind, name in [
        ("Service", "coder-proxy"),
        ("ConfigMap", "coder-agent"),
        ("ConfigMap", "coder-proxy"),
        ("Secret", "coder-proxy-token-key"),
        ("NetworkPolicy", "coder-harness"),
        ("NetworkPolicy", "coder-sandbox-access"),
    ]:
        # Applied one after the other by the same reconcile.
        cluster.wait(f"{kind} {name}", lambda k=kind, n=name: cluster.get(k, namespace, n))
    ready = cluster.wait(
        "Ready condition", lambda: cluster.condition("Agent", namespace, "coder", "Ready")
    )
    assert ready["status"] == "False"
    assert ready["reason"] == "SecretNotFound"
    assert ready["message"] == 'Secret not found: "anthropic" (credentials.anthropicApiKey)'
    agent = cluster.get("Agent", namespace, "coder")
    assert agent["metadata"]["labels"][L.AGENT_ID].startswith("agent_")

    # The Secret arrives (GitOps applies in any order), then a worker becomes ready.
    api_key_secret(cluster, namespace)
    cluster.wait(
        "harness not ready yet",
        lambda: (
            (cluster.condition("Agent", namespace, "coder", "Ready") or {}).get("reason")
            == "HarnessNotReady"
        ),
        timeout=20,
    )
    cluster.patch(
        "Deployment",
        namespace,
        "coder-harness",
        {"status": {"replicas": 1, "readyReplicas": 1}},
        status=True,
    )
    ready = cluster.wait(
        "agent ready",
        lambda: (
            (c := cluster.condition("Agent", namespace, "coder", "Ready"))
            and c["status"] == "True"
            and c
        ),
    )
    assert ready["message"] == "1 of 1 harness workers ready"
    status = cluster.get("Agent", namespace, "coder")["status"]
    assert (status["readyReplicas"], status["observedGeneration"]) == (1, 1)
    reasons = {e["reason"] for e in cluster.list("Event", namespace)}
    assert {"SecretNotFound", "Ready"} <= reasons


def test_missing_environment_is_a_condition(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    api_key_secret(cluster, namespace)
    cluster.create("Agent", namespace, "coder", agent_spec(environmentRef={"name": "gpu"}))
    ready = cluster.wait(
        "EnvironmentNotFound",
        lambda: (
            (c := cluster.condition("Agent", namespace, "coder", "Ready"))
            and c["reason"] == "EnvironmentNotFound"
            and c
        ),
    )
    assert ready["message"] == 'Environment "gpu" not found'


def test_a_coordinators_roster_names_missing_agents_and_nested_coordinators(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    api_key_secret(cluster, namespace)
    roster = {"multiagent": {"agents": [{"name": "helper"}, {"name": "lead2"}]}}
    cluster.create("Agent", namespace, "lead", agent_spec(**roster))

    def reason_of_lead() -> dict[str, Any] | None:
        c = cluster.condition("Agent", namespace, "lead", "Ready")
        return c if c and c["reason"] == "RosterInvalid" else None

    ready = cluster.wait("RosterInvalid", reason_of_lead)
    assert ready["status"] == "False"
    assert ready["message"] == ('multiagent: Agent "helper" not found; Agent "lead2" not found')
    # GitOps applies the rostered Agents later; one of them is a coordinator itself.
    cluster.create("Agent", namespace, "helper", agent_spec())
    cluster.create(
        "Agent", namespace, "lead2", agent_spec(multiagent={"agents": [{"name": "helper"}]})
    )
    cluster.wait(
        "only the nested coordinator reported",
        lambda: (
            (c := reason_of_lead())
            and c["message"]
            == 'multiagent: Agent "lead2" is a coordinator itself (threads are one level deep)'
        ),
    )


def test_changing_the_agent_rolls_its_harness(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    api_key_secret(cluster, namespace)
    cluster.create("Agent", namespace, "coder", agent_spec())

    def spec_hash() -> str | None:
        deployment = cluster.get("Deployment", namespace, "coder-harness")
        return deployment and deployment["spec"]["template"]["metadata"]["annotations"][L.SPEC_HASH]

    before = cluster.wait("harness", spec_hash)
    cluster.patch(
        "Agent", namespace, "coder", {"spec": {"system": "Be terse.", "harness": {"replicas": 3}}}
    )
    cluster.wait("rolled", lambda: spec_hash() not in (None, before))
    deployment = cluster.get("Deployment", namespace, "coder-harness")
    assert deployment["spec"]["replicas"] == 3
    assert "Be terse." in cluster.get("ConfigMap", namespace, "coder-agent")["data"]["agent.yaml"]


def test_each_namespace_gets_a_redis_user_of_its_own_and_keeps_it(
    cluster: Cluster, namespace: str, operator: KopfRunner, redis_server: RedisServer
) -> None:
    """The operator makes the namespace's Secret, provisions its Redis user with that
    password (reaching only the namespace's keys), and provisions it again when Redis has
    forgotten it (a restart or a new Redis: here the user is deleted behind its back)."""
    cluster.create("Agent", namespace, "coder", agent_spec())
    secret = cluster.wait(
        "the tenant's Redis Secret",
        lambda: cluster.get("Secret", namespace, "paddock-redis-harness"),
    )
    password = base64.b64decode(secret["data"]["password"]).decode()
    user = base64.b64decode(secret["data"]["username"]).decode()
    assert user == f"paddock-harness-{namespace}"

    def logs_in() -> bool:
        client = redis.Redis(port=redis_server.port, username=user, password=password)
        try:
            return bool(client.ping())
        except redis.exceptions.AuthenticationError:
            return False
        finally:
            client.close()

    cluster.wait("the tenant's Redis user", logs_in)
    tenant = redis.Redis(port=redis_server.port, username=user, password=password)
    assert tenant.set(f"paddock:t:{namespace}:probe", 1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        tenant.get("paddock:t:other-namespace:probe")
    tenant.close()
    # The Secret is written before the Deployment that names it.
    deployment = cluster.wait(
        "the harness Deployment", lambda: cluster.get("Deployment", namespace, "coder-harness")
    )
    (harness,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "harness"
    ]
    env = {e["name"]: e for e in harness["env"]}
    assert env["PADDOCK_REDIS_USERNAME"]["value"] == user
    assert env["PADDOCK_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "paddock-redis-harness",
        "key": "password",
    }

    with redis_server.admin() as admin:
        admin.acl_deluser(user)
    # (Not asserted that the login fails now: a reconcile may already have set it again.)
    cluster.wait("the user provisioned again", logs_in, timeout=40)
    # The same password: the Secret was kept, not made anew.
    again = cluster.get("Secret", namespace, "paddock-redis-harness")
    assert again["data"]["password"] == secret["data"]["password"]


def test_a_vault_reaches_every_agents_proxy_and_says_what_is_missing(
    cluster: Cluster, namespace: str, operator: KopfRunner
) -> None:
    """A Vault written with kubectl gets its id; its credentials are rendered into the proxy
    config and the proxy's projected volume of each Agent of the namespace, and its `Ready`
    names a Secret that is not there (never a value)."""
    cluster.create("Agent", namespace, "coder", agent_spec())
    cluster.wait("proxy config", lambda: cluster.get("ConfigMap", namespace, "coder-proxy"))
    cluster.create(
        "Vault",
        namespace,
        "tools",
        {
            "credentials": [
                {
                    "id": "vcrd_tickets",
                    "type": "static_bearer",
                    "mcpServerUrl": "https://tickets.example.com/mcp",
                    "tokenRef": {"name": "tickets", "key": "token"},
                }
            ]
        },
    )
    ready = cluster.wait(
        "Vault Ready", lambda: cluster.condition("Vault", namespace, "tools", "Ready")
    )
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert '"tickets" (vcrd_tickets token)' in ready["message"]
    vault = cluster.get("Vault", namespace, "tools")
    assert vault is not None
    vault_id = vault["metadata"]["labels"][L.VAULT_ID]
    assert vault_id.startswith("vlt_")

    def rendered() -> bool:
        config = (cluster.get("ConfigMap", namespace, "coder-proxy") or {}).get("data", {})
        return f"vault_id: {vault_id}" in config.get("proxy.yaml", "")

    cluster.wait("vault credential in the proxy config", rendered)

    def mounted() -> dict[str, Any] | None:
        # The Deployment is patched after the ConfigMap: wait for it too.
        deployment = cluster.get("Deployment", namespace, "coder-harness") or {}
        pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
        return pod if any(v["name"] == "vaults" for v in pod.get("volumes", [])) else None

    pod = cluster.wait("the vault volume in the harness Deployment", mounted)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "vaults"]
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": "tickets",
                "items": [{"key": "token", "path": f"{vault_id}/vcrd_tickets/token"}],
            }
        }
    ]
    harness, proxy = pod["containers"]
    assert "vaults" in {m["name"] for m in proxy["volumeMounts"]}
    assert "vaults" not in {m["name"] for m in harness["volumeMounts"]}
