"""Rendered objects: pinned by golden files, accepted by the real apiserver, and holding
the security properties the design promises."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from paddock.models import Agent, Environment, Vault
from paddock.models.render import to_yaml
from paddock.operator import render
from paddock.operator.runtime import OperatorSettings
from paddock.operator.sandboxes import SandboxFor, claim_patch, cold_pod
from paddock.proxy.config import parse_config
from paddock.sandbox import PLAN_ENV, PackagePlan

from .conftest import Cluster, agent_spec

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = render.RenderSettings(
    image="paddock/paddock:0.1.0",
    redis_url="redis://redis.paddock:6379/0",
    gateway_url="http://paddock-gateway.paddock-system.svc:80",
    gateway_namespace="paddock-system",
    gateway_labels=(("app.kubernetes.io/component", "gateway"),),
    package_proxy_url="http://paddock-packages.paddock-system.svc:3128",
    package_proxy_namespace="paddock-system",
    package_proxy_labels=(("app.kubernetes.io/component", "package-proxy"),),
    pip_index_url="https://pypi.mirror.internal/simple/",
)
INSTALL = render.PackageInstall(
    proxy_address="http://10.96.0.20:3128",
    token="package-token",
    pip_index_url="https://pypi.mirror.internal/simple/",
)


def resource(
    kind: str, name: str, spec: dict[str, Any], namespace: str = "team-a"
) -> dict[str, Any]:
    return {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


def agent(namespace: str = "team-a") -> dict[str, Any]:
    return resource(
        "Agent",
        "coder",
        agent_spec(
            system="Be careful.",
            environmentRef={"name": "python"},
            mcpServers=[{"name": "docs", "url": "https://mcp.example.com/mcp"}],
            tools={"mcp": [{"serverName": "docs"}]},
            credentials={
                "anthropicApiKey": {"name": "anthropic", "key": "api-key"},
                "hosts": [
                    {
                        "host": "github.com",
                        "secretRef": {"name": "github", "key": "token"},
                        "scheme": "basic",
                    }
                ],
            },
        ),
        namespace,
    )


def environment(namespace: str = "team-a") -> dict[str, Any]:
    return resource(
        "Environment",
        "python",
        {
            "image": "paddock/sandbox:0.1.0",
            "networking": {"mode": "limited", "allowedDomains": ["pypi.org"]},
            "warmPool": {"size": 2},
            "runtimeClassName": "gvisor",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        },
        namespace,
    )


def with_packages(namespace: str = "team-a") -> Environment:
    body = environment(namespace)
    body["spec"]["packages"] = {"pip": ["pandas==2.2.2", "requests"], "npm": ["typescript"]}
    return Environment.model_validate(body)


def vaults(namespace: str = "team-a") -> list[Vault]:
    """A vault with a static token and an OAuth credential (one archived credential), and
    an archived vault: only the two live credentials are rendered."""
    tools = resource(
        "Vault",
        "tools",
        {
            "credentials": [
                {
                    "id": "vcrd_tickets",
                    "type": "static_bearer",
                    "mcpServerUrl": "https://tickets.example.com/mcp",
                    "tokenRef": {"name": "tickets", "key": "token"},
                },
                {
                    "id": "vcrd_docs",
                    "type": "mcp_oauth",
                    "mcpServerUrl": "https://docs.example.com/mcp",
                    "accessTokenRef": {"name": "paddock-vault-vcrd-docs", "key": "access_token"},
                    "expiresAt": "2026-12-03T12:00:00Z",
                    "refresh": {
                        "tokenEndpoint": "https://auth.example.com/token",
                        "clientId": "paddock",
                        "refreshTokenRef": {
                            "name": "paddock-vault-vcrd-docs",
                            "key": "refresh_token",
                        },
                        "tokenEndpointAuth": {
                            "type": "client_secret_post",
                            "clientSecretRef": {"name": "docs-client", "key": "secret"},
                        },
                        "scope": "read",
                    },
                },
                {
                    "id": "vcrd_old",
                    "type": "static_bearer",
                    "mcpServerUrl": "https://old.example.com/mcp",
                    "tokenRef": {"name": "old", "key": "token"},
                    "archivedAt": "2026-01-01T00:00:00Z",
                },
            ]
        },
        namespace,
    )
    tools["metadata"]["labels"] = {"paddock.dev/vault-id": "vlt_tools"}
    archived = resource(
        "Vault",
        "gone",
        {"credentials": [{**tools["spec"]["credentials"][0], "id": "vcrd_gone"}]},
        namespace,
    )
    archived["metadata"]["labels"] = {"paddock.dev/vault-id": "vlt_gone"}
    archived["metadata"]["annotations"] = {"paddock.dev/archived-at": "2026-01-01T00:00:00Z"}
    return [Vault.model_validate(archived), Vault.model_validate(tools)]


PARENT = "sesn_011CZkZCoordinatorSession0"
THREAD = ("sesn_011CZkZThreadOfTheCoordinator", "reviewer")
"""A thread's session id and the Agent that runs it."""


def rendered(namespace: str = "team-a") -> dict[str, dict[str, Any]]:
    a = Agent.model_validate(agent(namespace))
    e = Environment.model_validate(environment(namespace))
    p = with_packages(namespace)
    v = vaults(namespace)
    warm = render.sandbox_pod(e, "python-0001", "sandbox-token")
    warm["metadata"]["resourceVersion"] = "7"
    owners = [{"apiVersion": "paddock.dev/v1alpha1", "kind": "Session", "name": "s1", "uid": "u1",
               "controller": True, "blockOwnerDeletion": True}]  # fmt: skip
    return {
        "agent-configmap": render.agent_config_map(a),
        "proxy-configmap": render.proxy_config_map(a, [e], SETTINGS, v),
        "token-key-secret": render.token_key_secret(a, "0" * 64),
        "redis-secret": render.redis_secret(namespace, "0" * 43, None, a),
        "harness-deployment": render.harness_deployment(a, SETTINGS, v),
        "proxy-service": render.proxy_service(a),
        "harness-networkpolicy": render.harness_network_policy(a, SETTINGS),
        "sandbox-access-networkpolicy": render.sandbox_access_policy(a),
        "sandbox-pod": render.sandbox_pod(e, "python-0001", "sandbox-token"),
        "sandbox-networkpolicy": render.sandbox_network_policy(e),
        "sandbox-pod-packages": render.sandbox_pod(p, "python-0002", "sandbox-token", INSTALL),
        "sandbox-packages-networkpolicy": render.sandbox_package_policy(p, SETTINGS),
        "thread-sandbox-claim": {"patch": claim_patch(warm, *THREAD, owners, parent=PARENT)},
        "thread-sandbox-cold-pod": cold_pod(
            render.sandbox_pod(e, "python-0003", "sandbox-token"),
            SandboxFor(*THREAD, PARENT),
            owners,
        ),
    }


@pytest.mark.parametrize("name", sorted(rendered()))
def test_rendered_objects_match_their_golden_files(name: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    text = to_yaml(rendered()[name])
    if os.environ.get("PADDOCK_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file: run with PADDOCK_UPDATE_GOLDEN=1 to write {path.name}"
    assert text == path.read_text(), f"{name} changed: review, then PADDOCK_UPDATE_GOLDEN=1"


def test_rendering_is_pure() -> None:
    assert rendered() == rendered()


@pytest.fixture
def gvisor(cluster: Cluster) -> None:
    """The RuntimeClass the example Environment names: the apiserver checks it exists."""
    body = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "gvisor"},
        "handler": "runsc",
    }
    response = cluster.http.post("/apis/node.k8s.io/v1/runtimeclasses", json=body)
    assert response.status_code in (201, 409), response.text


def test_every_rendered_object_is_accepted_by_the_apiserver(
    cluster: Cluster, namespace: str, gvisor: None
) -> None:
    for name, obj in rendered(namespace).items():
        if "kind" not in obj:
            continue  # a patch: the claims of test_sandboxes apply it to real pods
        obj = {
            **obj,
            "metadata": {k: v for k, v in obj["metadata"].items() if k != "ownerReferences"},
        }
        url = cluster.url(obj["kind"], namespace)
        response = cluster.http.post(
            url, json=obj, params={"dryRun": "All", "fieldValidation": "Strict"}
        )
        assert response.status_code == 201, f"{name}: {response.text}"


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def test_only_the_proxy_touches_secrets() -> None:
    pod_spec = render.harness_deployment(Agent.model_validate(agent()), SETTINGS, vaults())["spec"][
        "template"
    ]["spec"]
    secret_volumes = {v["name"] for v in pod_spec["volumes"] if "secret" in v or "projected" in v}
    assert secret_volumes == {"anthropic-key", "token-key", "host-0", "vaults"}
    for container in _containers(pod_spec):
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        references = yaml.safe_dump(container.get("env", []) + container.get("envFrom", []))
        if container["name"] == "proxy":
            assert mounts >= secret_volumes
        else:
            assert not mounts & secret_volumes, container["name"]
            assert "secretRef" not in references
        if container["name"] != "harness":
            assert "secretKeyRef" not in references, container["name"]
    assert pod_spec["automountServiceAccountToken"] is False
    harness, proxy = pod_spec["containers"]
    assert harness["securityContext"]["runAsUser"] != proxy["securityContext"]["runAsUser"]


@pytest.mark.parametrize("ca", [False, True])
def test_the_redis_password_reaches_the_harness_container_only(ca: bool) -> None:
    """The tenant's Redis credentials: by reference, to the harness container of harness
    pods, never to the proxy, an init container or any sandbox pod."""
    settings = render.RenderSettings(redis_url="rediss://redis.paddock:6380/0", redis_ca=ca)
    pod_spec = render.harness_deployment(Agent.model_validate(agent()), settings)["spec"][
        "template"
    ]["spec"]
    for container in _containers(pod_spec):
        refs = [
            (var["name"], var["valueFrom"]["secretKeyRef"])
            for var in container.get("env", [])
            if "secretKeyRef" in var.get("valueFrom", {})
        ]
        if container["name"] != "harness":
            assert refs == [], container["name"]
            continue
        expected = [("PADDOCK_REDIS_PASSWORD", {"name": render.REDIS_SECRET, "key": "password"})]
        if ca:
            expected.append(
                ("PADDOCK_REDIS_CA_PEM", {"name": render.REDIS_SECRET, "key": "ca.crt"})
            )
        assert refs == expected
        env = {var["name"]: var.get("value") for var in container["env"]}
        assert env["PADDOCK_REDIS_USERNAME"] == "paddock-harness-team-a"
        assert env["PADDOCK_REDIS_URL"] == "rediss://redis.paddock:6380/0"
    sandbox = render.sandbox_pod(Environment.model_validate(environment()), "python-0001", "t")
    dumped = yaml.safe_dump(sandbox)
    assert render.REDIS_SECRET not in dumped
    assert "PADDOCK_REDIS" not in dumped
    assert "secretKeyRef" not in dumped


def test_the_redis_secret_holds_the_tenants_user_and_password() -> None:
    a = Agent.model_validate(agent("team-a"))
    secret = render.redis_secret("team-a", "pw", "-----BEGIN CERTIFICATE-----", a)
    assert secret["metadata"]["namespace"] == "team-a"
    # Owned by the Agent, not controlled: the last Agent of the namespace takes it along.
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Agent", a.metadata.uid, False)
    assert secret["stringData"] == {
        "username": "paddock-harness-team-a",
        "password": "pw",
        "ca.crt": "-----BEGIN CERTIFICATE-----",
    }


def test_the_operator_never_renders_its_own_redis_credentials() -> None:
    settings = OperatorSettings.from_env(
        {"PADDOCK_REDIS_URL": "redis://paddock-operator:s3cret@redis.paddock:6379/0"}
    )
    assert settings.render.redis_url == "redis://redis.paddock:6379/0"
    deployment = render.harness_deployment(Agent.model_validate(agent()), settings.render)
    assert "s3cret" not in yaml.safe_dump(deployment)


def test_development_address_exceptions_reach_the_agents_proxies_only_when_set() -> None:
    a = Agent.model_validate(agent())
    assert "address_exceptions" not in render.proxy_config(a, [], SETTINGS)
    settings = OperatorSettings.from_env(
        {"PADDOCK_PROXY_ADDRESS_EXCEPTIONS": "10.249.0.1:4000, 127.0.0.1:4001"}
    )
    config = render.proxy_config_map(a, [], settings.render)["data"]["proxy.yaml"]
    assert [str(e) for e in parse_config(config).address_exceptions] == [
        "10.249.0.1:4000",
        "127.0.0.1:4001",
    ]


def test_sandboxes_are_locked_down() -> None:
    pod = render.sandbox_pod(Environment.model_validate(environment()), "python-0001", "t")
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert "env" not in container
    assert not [v for v in spec["volumes"] if "secret" in v or "projected" in v]


def _environment_in(mode: str) -> Environment:
    body = environment()
    body["spec"]["networking"] = {"mode": mode}
    return Environment.model_validate(body)


@pytest.mark.parametrize("mode", ["none", "limited", "open"])
def test_an_environment_policy_lets_nothing_in_and_only_open_mode_dns_out(mode: str) -> None:
    policy = render.sandbox_network_policy(_environment_in(mode))["spec"]
    assert policy["podSelector"] == {
        "matchLabels": {"paddock.dev/component": "sandbox", "paddock.dev/environment": "python"}
    }
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert not policy.get("ingress"), "a warm sandbox admits nothing"
    if mode != "open":
        assert not policy.get("egress"), "no resolver, no proxy, nothing before a claim"
        return
    (to_dns,) = policy["egress"]
    assert {p["port"] for p in to_dns["ports"]} == {53}
    (peer,) = to_dns["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_a_claimed_sandbox_talks_only_to_its_agents_harness_pods() -> None:
    a = Agent.model_validate(agent())
    policy = render.sandbox_access_policy(a)
    assert policy["metadata"]["name"] == "coder-sandbox-access"
    spec = policy["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {"paddock.dev/component": "sandbox", "paddock.dev/agent": "coder"}
    }
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    own_harness = [
        {
            "podSelector": {
                "matchLabels": {"paddock.dev/component": "harness", "paddock.dev/agent": "coder"}
            }
        }
    ]
    (ingress,) = spec["ingress"]
    assert ingress == {"from": own_harness, "ports": [{"protocol": "TCP", "port": 8080}]}
    (egress,) = spec["egress"]
    assert egress == {"to": own_harness, "ports": [{"protocol": "TCP", "port": 3128}]}
    # And the harness side agrees: its proxy admits, and it calls, its own sandboxes only.
    harness = render.harness_network_policy(a, SETTINGS)["spec"]
    own_sandboxes = [{"podSelector": {"matchLabels": spec["podSelector"]["matchLabels"]}}]
    assert [r for r in harness["ingress"] if r.get("from")] == [
        {"from": own_sandboxes, "ports": [{"protocol": "TCP", "port": 3128}]}
    ]
    in_namespace = [
        r
        for r in harness["egress"]
        if any("podSelector" in t and "namespaceSelector" not in t for t in r.get("to", []))
    ]
    assert in_namespace == [{"to": own_sandboxes, "ports": [{"protocol": "TCP", "port": 8080}]}]
    # Beyond the namespace, only the gateway's pods (session files).
    gateway = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "paddock-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}},
    }
    assert [
        r for r in harness["egress"] if any("namespaceSelector" in t for t in r.get("to", []))
    ] == [{"to": [gateway], "ports": [{"protocol": "TCP", "port": 8080}]}]


def test_agent_and_environment_policies_never_share_a_name() -> None:
    a, e = agent(), environment()
    a["metadata"]["name"] = "python"  # an Agent named like the Environment
    names = {
        render.sandbox_access_policy(Agent.model_validate(a))["metadata"]["name"],
        render.harness_network_policy(Agent.model_validate(a), SETTINGS)["metadata"]["name"],
        render.sandbox_network_policy(Environment.model_validate(e))["metadata"]["name"],
    }
    assert len(names) == 3


@pytest.mark.parametrize("mode", ["none", "limited"])
def test_sandboxes_without_open_networking_have_no_resolver(mode: str) -> None:
    spec = render.sandbox_pod(_environment_in(mode), "python-0001", "t")["spec"]
    assert spec["dnsPolicy"] == "None"
    assert spec["dnsConfig"] == {"nameservers": ["127.0.0.1"]}


def test_open_sandboxes_use_the_cluster_resolver() -> None:
    spec = render.sandbox_pod(_environment_in("open"), "python-0001", "t")["spec"]
    assert "dnsPolicy" not in spec  # ClusterFirst
    assert "dnsConfig" not in spec


def test_changing_the_agent_rolls_the_harness() -> None:
    def annotations(body: dict[str, Any]) -> dict[str, str]:
        deployment = render.harness_deployment(Agent.model_validate(body), SETTINGS)
        return dict(deployment["spec"]["template"]["metadata"]["annotations"])

    changed = agent()
    changed["spec"]["system"] = "Be bold."
    before, after = annotations(agent()), annotations(changed)
    assert before["paddock.dev/spec-hash"] != after["paddock.dev/spec-hash"]


def test_a_changed_template_changes_the_pool_hash() -> None:
    changed = environment()
    changed["spec"]["image"] = "paddock/sandbox:0.2.0"
    assert render.sandbox_template_hash(
        Environment.model_validate(changed)
    ) != render.sandbox_template_hash(Environment.model_validate(environment()))


def test_vault_credentials_reach_the_proxy_as_files_it_mounts() -> None:
    """Every file the proxy config names is in the projected volume, from the Secret key
    the Vault references; archived vaults and credentials are left out."""
    a = Agent.model_validate(agent())
    config = parse_config(render.proxy_config_map(a, [], SETTINGS, vaults())["data"]["proxy.yaml"])
    files = {}
    for c in config.vault_credentials:
        if c.type == "static_bearer":
            files[str(c.token_file)] = c.credential_id
        else:
            files[str(c.access_token_file)] = c.credential_id
            assert c.refresh is not None
            files[str(c.refresh.refresh_token_file)] = c.credential_id
            assert c.refresh.client_secret_file is not None
            files[str(c.refresh.client_secret_file)] = c.credential_id
    assert {c.credential_id for c in config.vault_credentials} == {"vcrd_docs", "vcrd_tickets"}
    pod_spec = render.harness_deployment(a, SETTINGS, vaults())["spec"]["template"]["spec"]
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == "vaults"]
    proxy = pod_spec["containers"][1]
    (mount,) = [m for m in proxy["volumeMounts"] if m["name"] == "vaults"]
    mounted = {
        f"{mount['mountPath']}/{item['path']}": (source["secret"]["name"], item["key"])
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    assert set(mounted) == set(files)
    assert ("docs-client", "secret") in mounted.values()
    assert ("tickets", "token") in mounted.values()
    # Without vaults nothing is mounted and the config has no vault credentials.
    bare = render.harness_deployment(a, SETTINGS)["spec"]["template"]["spec"]
    assert "vaults" not in {v["name"] for v in bare["volumes"]}
    assert "vault_credentials" not in render.proxy_config(a, [], SETTINGS)


def test_api_routes_of_a_host_credential_reach_the_proxy_config() -> None:
    a = agent()
    a["spec"]["credentials"]["hosts"][0]["apiRoutes"] = [
        {"methods": ["GET", "POST"], "pathPrefix": "/repos/"}
    ]
    config = render.proxy_config(
        Agent.model_validate(a), [Environment.model_validate(environment())], SETTINGS
    )
    assert config["credentials"][0]["api_routes"] == [
        {"methods": ["GET", "POST"], "path_prefix": "/repos/"}
    ]
    parsed = parse_config(yaml.safe_dump(config))
    assert parsed.credentials[0].api_routes[0].path_prefix == "/repos/"


def test_a_tls_redis_with_its_own_ca_reaches_harness_pods_through_the_tenant_secret() -> None:
    settings = OperatorSettings.from_env(
        {
            "PADDOCK_REDIS_URL": "rediss://redis.example.com:6380/2",
            "PADDOCK_REDIS_CA_FILE": "/etc/paddock/redis-ca/ca.crt",
        }
    )
    assert settings.render.redis_ca is True
    assert settings.redis.options()["ssl_ca_certs"] == "/etc/paddock/redis-ca/ca.crt"
    plain = OperatorSettings.from_env({"PADDOCK_REDIS_URL": "rediss://redis.example.com:6380/2"})
    assert plain.render.redis_ca is False  # the system's CAs: nothing to hand on


def test_without_a_gateway_harness_pods_get_no_gateway_url_or_egress() -> None:
    a = Agent.model_validate(agent())
    bare = render.RenderSettings(image=SETTINGS.image, redis_url=SETTINGS.redis_url)
    harness = render.harness_deployment(a, bare)["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for c in harness for e in c.get("env", [])}
    assert "PADDOCK_GATEWAY_URL" not in names
    egress = render.harness_network_policy(a, bare)["spec"]["egress"]
    assert not [r for r in egress if any("namespaceSelector" in t for t in r.get("to", []))]


def test_a_sandbox_installs_its_packages_through_the_package_proxy_only() -> None:
    """The plan names the package proxy by address (no resolver), the token comes by the
    downward API into the one container, and only a pod labelled to install is selected by
    the policy that reaches the proxy."""
    pod = render.sandbox_pod(with_packages(), "python-0002", "t", INSTALL)
    (container,) = pod["spec"]["containers"]
    (plan_env,) = container["env"]
    plan = PackagePlan.model_validate_json(plan_env["value"])
    assert plan_env["name"] == PLAN_ENV
    assert plan.pip == ["pandas==2.2.2", "requests"]
    assert plan.npm == ["typescript"]
    assert plan.proxy_url == "http://10.96.0.20:3128"
    assert plan.proxy_user == "python-0002"
    assert "package-token" not in plan_env["value"]
    assert pod["metadata"]["annotations"]["paddock.dev/package-token"] == "package-token"
    assert pod["metadata"]["labels"]["paddock.dev/packages"] == "install"
    assert not [v for v in pod["spec"]["volumes"] if "secret" in v or "projected" in v]
    policy = render.sandbox_package_policy(with_packages(), SETTINGS)["spec"]
    assert policy["podSelector"]["matchLabels"]["paddock.dev/packages"] == "install"
    assert policy["policyTypes"] == ["Egress"]
    (rule,) = policy["egress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 3128}]
    assert rule["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "paddock-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "package-proxy"}},
        }
    ]


def test_without_a_package_proxy_or_packages_nothing_is_installed() -> None:
    plain = render.sandbox_pod(Environment.model_validate(environment()), "p", "t", INSTALL)
    unconfigured = render.sandbox_pod(with_packages(), "p", "t", None)
    for pod in (plain, unconfigured):
        assert "env" not in pod["spec"]["containers"][0]
        assert "paddock.dev/packages" not in pod["metadata"]["labels"]
        assert "paddock.dev/package-token" not in pod["metadata"]["annotations"]


def test_apt_packages_are_installed_from_the_operators_apt_sources() -> None:
    """apt packages alone make a sandbox install; the operator's apt sources are in its plan
    and its pool's template hash (changing them replaces the warm pods), and without apt
    sources the hash is what it was before apt was installed."""
    only_apt = environment()
    only_apt["spec"]["packages"] = {"apt": ["ripgrep"]}
    model = Environment.model_validate(only_apt)
    sources = "deb https://deb.mirror.internal/debian bookworm main"
    install = dataclasses.replace(INSTALL, apt_sources=sources)
    pod = render.sandbox_pod(model, "p", "t", install)
    (plan_env,) = pod["spec"]["containers"][0]["env"]
    plan = PackagePlan.model_validate_json(plan_env["value"])
    assert (plan.apt, plan.apt_sources) == (["ripgrep"], sources)
    hashes = {render.sandbox_template_hash(model, i.mirrors) for i in (INSTALL, install)} | {
        pod["metadata"]["labels"]["paddock.dev/template-hash"]
    }
    assert len(hashes) == 2
    assert render.sandbox_template_hash(model, INSTALL.mirrors) == render.sandbox_template_hash(
        model, (INSTALL.pip_index_url, INSTALL.npm_registry)
    )


def test_a_claim_ends_the_install_access_of_a_sandbox_with_packages() -> None:
    pod = render.sandbox_pod(with_packages(), "python-0002", "t", INSTALL)
    pod["metadata"]["resourceVersion"] = "7"
    patch = claim_patch(pod, "sesn_1", "coder", [])
    assert {"op": "remove", "path": "/metadata/labels/paddock.dev~1packages"} in patch
    assert {"op": "remove", "path": "/metadata/annotations/paddock.dev~1package-token"} in patch
    plain = render.sandbox_pod(Environment.model_validate(environment()), "p", "t")
    plain["metadata"]["resourceVersion"] = "7"
    assert not [op for op in claim_patch(plain, "sesn_1", "coder", []) if op["op"] == "remove"]


def test_another_mirror_changes_the_pool_hash_of_an_environment_with_packages() -> None:
    """The pool's pods are replaced when the operator's pip index changes, as when the spec
    does; and a pod rendered with its install carries the hash the pool computes."""
    mirror = render.PackageInstall("http://10.96.0.20:3128", "t", "https://a.internal/simple/")
    other = render.PackageInstall("http://10.96.0.20:3128", "t", "https://b.internal/simple/")
    hashes = {
        render.sandbox_pod(with_packages(), "p", "t", install)["metadata"]["labels"][
            "paddock.dev/template-hash"
        ]
        for install in (mirror, other)
    }
    assert len(hashes) == 2
    assert (
        render.sandbox_template_hash(with_packages(), ("https://a.internal/simple/", None))
        in hashes
    )
