"""The Helm chart, rendered by the real helm and dry-run applied to the real test apiserver,
and the properties a reviewer checks: restricted pods, least-privilege RBAC, NetworkPolicies,
the environment contract with the operator and gateway, durable Redis."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.chart.support import (
    CHART,
    ROOT,
    VALUES_ALL,
    Cluster,
    Rendered,
    container,
    env_of,
    helm,
    render,
)

from paddock.eventlog import acl_file
from paddock.operator.render import PACKAGE_POLICY
from paddock.proxy.config import parse_config

NAMESPACE = "paddock-chart"
ALL = yaml.safe_load(VALUES_ALL.read_text())
EXTERNAL = ["redis.external.url=rediss://redis.example.com:6380/2"]
CASES = {
    "default": ((), ()),
    "all": ((VALUES_ALL,), ()),
    "external-redis": ((VALUES_ALL,), EXTERNAL),
}
# Everything optional off: no gateway, no policies, one operator, accounts made elsewhere.
MINIMAL = [
    "gateway.enabled=false",
    "networkPolicy.enabled=false",
    "operator.replicas=1",
    "operator.serviceAccount.create=false",
    "operator.serviceAccount.name=existing",
]


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, Rendered]:
    values, sets = CASES[request.param]
    return request.param, Rendered(render(NAMESPACE, values, sets), NAMESPACE)


@pytest.fixture(scope="module")
def minimal() -> Rendered:
    return Rendered(render(NAMESPACE, sets=MINIMAL), NAMESPACE)


@pytest.fixture(scope="module")
def default() -> Rendered:
    return Rendered(render(NAMESPACE), NAMESPACE)


@pytest.fixture(scope="module")
def full() -> Rendered:
    return Rendered(render(NAMESPACE, [VALUES_ALL]), NAMESPACE)


def test_every_rendered_object_is_accepted_by_the_apiserver(
    case: tuple[str, Rendered], cluster: Cluster
) -> None:
    _, rendered = case
    _accepted(rendered, cluster)


def test_a_minimal_release_is_accepted_by_the_apiserver(
    minimal: Rendered, cluster: Cluster
) -> None:
    assert {o["kind"] for o in minimal.objects} == {
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Secret",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    }
    deployment = minimal.one("Deployment", "paddock-operator")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    assert [s["metadata"]["name"] for s in minimal.of("ServiceAccount")] == ["paddock-redis"]
    _accepted(minimal, cluster)


def _accepted(rendered: Rendered, cluster: Cluster) -> None:
    namespaces = {NAMESPACE, *ALL["watchNamespaces"], ALL["metrics"]["dashboard"]["namespace"]}
    for namespace in sorted(namespaces):
        cluster.ensure_namespace(namespace)
    refused = []
    for obj in rendered.objects:
        response = cluster.dry_run_apply(obj, NAMESPACE)
        if response.status_code not in (200, 201):
            refused.append(f"{obj['kind']}/{obj['metadata']['name']}: {response.text}")
    assert not refused, "\n".join(refused)
    # Only the chart's release namespace (and the namespaces values name) receive objects.
    for obj in rendered.objects:
        assert obj["metadata"].get("namespace", NAMESPACE) in namespaces


def test_every_container_runs_restricted(case: tuple[str, Rendered]) -> None:
    _, rendered = case
    specs = list(rendered.pod_specs())
    assert {name.split("/")[0] for name, _ in specs} >= {"Deployment"}
    for name, pod in specs:
        pod_context = pod.get("securityContext", {})
        for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(host_namespace), name
        assert all("hostPath" not in volume for volume in pod.get("volumes", [])), name
        assert pod_context.get("runAsUser", 1) != 0, name
        assert pod["enableServiceLinks"] is False, name
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name} container {c['name']}"
            context = c.get("securityContext", {})
            merged = {**pod_context, **context}
            assert merged.get("runAsNonRoot") is True, where
            assert merged.get("seccompProfile") == {"type": "RuntimeDefault"}, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities") == {"drop": ["ALL"]}, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert not context.get("privileged"), where
            assert c.get("resources", {}).get("limits"), f"{where} has no limits"


def _rules(rendered: Rendered, kind: str, name: str) -> list[dict[str, Any]]:
    return rendered.one(kind, name)["rules"]


def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


OPERATOR_GRANTS = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    **{
        ("paddock.dev", r): {"get", "list", "watch", "patch"}
        for r in ("agents", "environments", "vaults")
    },
    ("paddock.dev", "sessions"): {"get", "list", "watch", "patch", "delete"},
    **{
        ("paddock.dev", f"{r}/status"): {"get", "patch"}
        for r in ("agents", "environments", "sessions", "vaults")
    },
    **{
        ("paddock.dev", f"{r}/finalizers"): {"update"}
        for r in ("agents", "environments", "sessions", "vaults")
    },
    ("apps", "deployments"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("apps", "controllerrevisions"): {"get", "list", "create", "delete"},
    **{
        ("", r): {"get", "list", "watch", "create", "update", "patch", "delete"}
        for r in ("pods", "services", "configmaps")
    },
    # patch: only the tenant's Redis Secret (asserted below).
    ("", "secrets"): {"get", "list", "watch", "create", "patch"},
    ("", "events"): {"create"},
    ("events.k8s.io", "events"): {"create"},
    ("networking.k8s.io", "networkpolicies"): {
        *("get", "list", "watch", "create", "update", "patch", "delete")
    },
}


def test_rbac_is_least_privilege(case: tuple[str, Rendered]) -> None:
    _, rendered = case
    prefix = "paddock" if case[0] == "default" else "paddock-all"
    for role in rendered.of("ClusterRole") + rendered.of("Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{role['metadata']['name']} grants * in {key}"
            assert "resourceNames" not in rule or rule["resourceNames"]
    operator = _grants(_rules(rendered, "ClusterRole", f"{prefix}-operator"))
    operator.update(_grants(_rules(rendered, "ClusterRole", f"{prefix}-operator-cluster")))
    assert operator == OPERATOR_GRANTS
    gateway = _grants(_rules(rendered, "ClusterRole", f"{prefix}-gateway"))
    assert gateway == {
        **{
            ("paddock.dev", r): {"get", "list", "watch", "create", "update", "patch", "delete"}
            for r in ("agents", "environments", "sessions", "vaults")
        },
        ("apps", "controllerrevisions"): {"get", "list", "create", "delete"},
        # Vault credential values: written, never read (docs/security-model.md).
        ("", "secrets"): {"create", "patch", "delete"},
    }
    # Kubernetes identities: the gateway asks the apiserver about tokens and permissions.
    assert _grants(_rules(rendered, "ClusterRole", f"{prefix}-gateway-auth")) == {
        ("authentication.k8s.io", "tokenreviews"): {"create"},
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
    }
    auth_binding = rendered.one("ClusterRoleBinding", f"{prefix}-gateway-auth")
    assert auth_binding["roleRef"]["name"] == f"{prefix}-gateway-auth"
    assert [s["name"] for s in auth_binding["subjects"]] == [
        "paddock-gateway" if prefix == "paddock" else "paddock-gateway-sa"
    ]
    # Secrets: the operator's namespaced role, and the gateway's Role in its own namespace.
    secret_roles = [r for r in rendered.of("ClusterRole") if ("", "secrets") in _grants(r["rules"])]
    assert sorted(r["metadata"]["name"] for r in secret_roles) == [
        f"{prefix}-gateway",
        f"{prefix}-operator",
    ]
    operator_role = rendered.one("ClusterRole", f"{prefix}-operator")
    patching = [
        r for r in operator_role["rules"] if "secrets" in r["resources"] and "patch" in r["verbs"]
    ]
    assert [(r.get("resourceNames"), r["verbs"]) for r in patching] == [
        (["paddock-redis-harness"], ["patch"])
    ], "the operator may patch the tenant's Redis Secret and no other"
    api_keys = rendered.one("Role", f"{prefix}-gateway-api-keys")
    assert api_keys["metadata"]["namespace"] == NAMESPACE
    assert _grants(api_keys["rules"]) == {("", "secrets"): {"get", "list", "watch"}}
    binding = rendered.one("RoleBinding", f"{prefix}-gateway-api-keys")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": f"{prefix}-gateway-api-keys",
    }


def test_watched_namespaces_scope_permissions(full: Rendered) -> None:
    watched = ALL["watchNamespaces"]
    for component in ("operator", "gateway"):
        bindings = [
            b for b in full.of("RoleBinding") if b["metadata"]["name"] == f"paddock-all-{component}"
        ]
        assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(watched)
        assert all(b["roleRef"]["kind"] == "ClusterRole" for b in bindings)
    # Cluster-wide, the operator only discovers CRDs and namespaces.
    # Cluster-wide, the gateway only creates token and access reviews.
    bound = [b["roleRef"]["name"] for b in full.of("ClusterRoleBinding")]
    assert sorted(bound) == ["paddock-all-gateway-auth", "paddock-all-operator-cluster"]
    operator = container(full.one("Deployment", "paddock-all-operator"), "operator")
    assert env_of(operator)["PADDOCK_WATCH_NAMESPACES"] == ",".join(watched)
    assert env_of(operator)["PADDOCK_ANTHROPIC_URL"] == ALL["operator"]["anthropicUrl"]
    redis_policy = full.one("NetworkPolicy", "paddock-all-redis")
    harness_peer = redis_policy["spec"]["ingress"][0]["from"][2]
    assert harness_peer["namespaceSelector"]["matchExpressions"][0]["values"] == watched


def _password_ref(user: str, release: str = "paddock") -> dict[str, Any]:
    return {"secretKeyRef": {"name": f"{release}-redis-auth", "key": f"{user}-password"}}


def test_operator_contract(default: Rendered) -> None:
    deployment = default.one("Deployment", "paddock-operator")
    assert deployment["spec"]["replicas"] == 2
    operator = container(deployment, "operator")
    assert operator["command"] == ["python", "-m", "paddock.operator"]
    assert operator["image"] == "paddock/paddock:0.1.0"
    env = env_of(operator)
    assert env == {
        "PADDOCK_REDIS_URL": "redis://paddock-redis.paddock-chart.svc.cluster.local:6379/0",
        "PADDOCK_REDIS_USERNAME": "paddock-operator",
        "PADDOCK_REDIS_PASSWORD": _password_ref("operator"),
        "PADDOCK_IMAGE": "paddock/paddock:0.1.0",
        "PADDOCK_SANDBOX_IMAGE": "paddock/sandbox:0.1.0",
        "PADDOCK_GATEWAY_URL": "http://paddock-gateway.paddock-chart.svc:80",
        "PADDOCK_GATEWAY_NAMESPACE": NAMESPACE,
        "PADDOCK_GATEWAY_LABELS": "app.kubernetes.io/instance=paddock,"
        "app.kubernetes.io/component=gateway",
        "PADDOCK_PACKAGE_PROXY_URL": "http://paddock-package-proxy.paddock-chart.svc:3128",
        "PADDOCK_PACKAGE_PROXY_TOKEN_KEY_FILE": "/var/run/secrets/paddock/package-proxy/key",
        "PADDOCK_PACKAGE_PROXY_NAMESPACE": NAMESPACE,
        "PADDOCK_PACKAGE_PROXY_LABELS": "app.kubernetes.io/instance=paddock,"
        "app.kubernetes.io/component=package-proxy",
        "PADDOCK_WATCH_NAMESPACES": "",
        "PADDOCK_METRICS_PORT": "9090",
        "PADDOCK_HEALTH_PORT": "8080",
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    assert {"name": "metrics", "containerPort": 9090} in operator["ports"]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080} in operator["ports"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "paddock-operator"
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pdb = default.one("PodDisruptionBudget", "paddock-operator")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_a_single_operator_runs_without_disruption_budget() -> None:
    single = Rendered(render(NAMESPACE, sets=["operator.replicas=1"]), NAMESPACE)
    assert [p["metadata"]["name"] for p in single.of("PodDisruptionBudget")] == ["paddock-gateway"]


def test_images_by_digest(full: Rendered) -> None:
    operator = container(full.one("Deployment", "paddock-all-operator"), "operator")
    image = f"registry.example.com/paddock/paddock:0.1.0-rc1@{ALL['image']['digest']}"
    assert operator["image"] == image
    assert env_of(operator)["PADDOCK_IMAGE"] == image
    sandbox = ALL["sandboxImage"]
    assert env_of(operator)["PADDOCK_SANDBOX_IMAGE"] == (
        f"{sandbox['repository']}:{sandbox['tag']}@{sandbox['digest']}"
    )


def test_gateway_contract(default: Rendered) -> None:
    deployment = default.one("Deployment", "paddock-gateway")
    gateway = container(deployment, "gateway")
    assert gateway["command"] == ["python", "-m", "paddock.gateway"]
    assert env_of(gateway) == {
        "PADDOCK_REDIS_URL": "redis://paddock-redis.paddock-chart.svc.cluster.local:6379/0",
        "PADDOCK_REDIS_USERNAME": "paddock-gateway",
        "PADDOCK_REDIS_PASSWORD": _password_ref("gateway"),
        "PADDOCK_GATEWAY_HOST": "0.0.0.0",
        "PADDOCK_GATEWAY_PORT": "8080",
        "PADDOCK_GATEWAY_NAMESPACE": NAMESPACE,
        "PADDOCK_DEFAULT_ANTHROPIC_SECRET": "anthropic/api-key",
        "PADDOCK_METRICS_PORT": "9090",
        "PADDOCK_GATEWAY_KUBERNETES_AUTH": "true",
        "PADDOCK_GATEWAY_DEFAULT_NAMESPACE": "",
        "PADDOCK_GATEWAY_TOKEN_AUDIENCES": "",
        "PADDOCK_GATEWAY_RATE_LIMIT": "20",
        "PADDOCK_GATEWAY_RATE_BURST": "200",
        "PADDOCK_GATEWAY_FILES_DIR": "/var/lib/paddock/files",
        "PADDOCK_GATEWAY_FILES_MAX_BYTES": "524288000",
    }
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"http": 8080, "metrics": 9090}
    for probe in ("readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = default.one("Service", "paddock-gateway")
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"], "metrics stay private"
    assert default.one("PodDisruptionBudget", "paddock-gateway")


def test_metrics_are_scrapable(full: Rendered) -> None:
    monitor = full.one("ServiceMonitor", "paddock-all")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in full.of("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["name"] for s in scraped) == [
        "paddock-all-gateway-metrics",
        "paddock-all-operator-metrics",
    ]
    for service in scraped:
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": 9090, "targetPort": "metrics"}
        ]
        assert service["spec"]["selector"].items() <= _pod_labels(full, service).items()
    harness = full.one("PodMonitor", "paddock-all-harness")
    assert harness["spec"]["selector"] == {"matchLabels": {"paddock.dev/component": "harness"}}
    assert harness["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert harness["spec"]["namespaceSelector"] == {"matchNames": ALL["watchNamespaces"]}
    dashboard = full.one("ConfigMap", "paddock-all-dashboard")
    assert dashboard["metadata"]["namespace"] == "paddock-chart-monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["paddock.json"]) == json.loads(
        (CHART / "dashboards" / "paddock.json").read_text()
    )


def _pod_labels(rendered: Rendered, service: dict[str, Any]) -> dict[str, str]:
    component = service["spec"]["selector"]["app.kubernetes.io/component"]
    deployment = next(
        d
        for d in rendered.of("Deployment")
        if d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
    )
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_network_policies_are_on_by_default(default: Rendered) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in default.of("NetworkPolicy")}
    assert sorted(policies) == [
        "paddock-gateway",
        "paddock-operator",
        "paddock-package-proxy",
        "paddock-redis",
    ]
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
    redis = policies["paddock-redis"]
    assert redis["egress"] == []
    sources = redis["ingress"][0]["from"]
    components = [
        s["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for s in sources
    ]
    assert components == ["operator", "gateway", None]
    assert sources[2] == {
        "podSelector": {"matchLabels": {"paddock.dev/component": "harness"}},
        "namespaceSelector": {},
    }
    assert redis["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 6379}]
    off = Rendered(render(NAMESPACE, sets=["networkPolicy.enabled=false"]), NAMESPACE)
    assert not off.of("NetworkPolicy")


def test_bundled_redis_is_durable(full: Rendered) -> None:
    config = full.one("ConfigMap", "paddock-all-redis")["data"]["redis.conf"].splitlines()
    for line in (
        "appendonly yes",
        "appendfsync always",
        "maxmemory-policy noeviction",
        "maxmemory 2gb",
    ):
        assert line in config
    statefulset = full.one("StatefulSet", "paddock-all-redis")
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "20Gi"
    assert claim["storageClassName"] == "fast-ssd"
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    redis = container(statefulset, "redis")
    assert redis["command"] == ["redis-server", "/etc/redis/redis.conf"]
    assert {"name": "data", "mountPath": "/data"} in redis["volumeMounts"]


def test_bundled_redis_requires_each_components_own_user(full: Rendered) -> None:
    """The chart's ACL file is the one `paddock.eventlog.acl_file` writes (what the tests'
    redis-server runs) for the Secret's passwords; no password is in plain text outside the
    Secret, and no pod but Redis mounts the ACL file."""
    secret = full.one("Secret", "paddock-all-redis-auth")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert len({data["operator-password"], data["gateway-password"], data["default-password"]}) == 3
    assert all(len(data[f"{u}-password"]) >= 32 for u in ("operator", "gateway", "default"))
    assert data["users.acl"] == acl_file(
        operator_password=data["operator-password"],
        gateway_password=data["gateway-password"],
        default_password=data["default-password"],
    )
    config = full.one("ConfigMap", "paddock-all-redis")["data"]["redis.conf"].splitlines()
    assert "aclfile /etc/redis-acl/users.acl" in config
    statefulset = full.one("StatefulSet", "paddock-all-redis")
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["acl"]["secret"]["items"] == [{"key": "users.acl", "path": "users.acl"}]
    redis = container(statefulset, "redis")
    assert redis["readinessProbe"]["exec"]["command"][:3] == [
        "redis-cli",
        "--user",
        "paddock-operator",
    ]
    for obj in full.objects:
        text = yaml.safe_dump(obj)
        if obj["kind"] != "Secret":
            assert not any(
                data[f"{u}-password"] in text for u in ("operator", "gateway", "default")
            )
        for volume in obj.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            if volume.get("secret", {}).get("secretName") == "paddock-all-redis-auth":
                assert obj["metadata"]["name"] == "paddock-all-redis"


def test_external_redis_replaces_the_bundled_one() -> None:
    rendered = Rendered(render(NAMESPACE, [VALUES_ALL], EXTERNAL), NAMESPACE)
    assert not rendered.of("StatefulSet")
    assert not [o for o in rendered.objects if o["metadata"]["name"].endswith("-redis")]
    url = EXTERNAL[0].split("=", 1)[1]
    # The users' passwords are generated for an external Redis too (docs/install.md).
    assert rendered.one("Secret", "paddock-all-redis-auth")
    for name in ("operator", "gateway"):
        deployment = rendered.one("Deployment", f"paddock-all-{name}")
        env = env_of(container(deployment, name))
        assert env["PADDOCK_REDIS_URL"] == url
        assert env["PADDOCK_REDIS_PASSWORD"] == _password_ref(name, "paddock-all")
        assert "PADDOCK_REDIS_CA_FILE" not in env
        policy = rendered.one("NetworkPolicy", f"paddock-all-{name}")
        assert {"ports": [{"protocol": "TCP", "port": 6380}]} in policy["spec"]["egress"]


def test_an_external_redis_with_tls_gets_its_ca_bundle() -> None:
    rendered = Rendered(
        render(NAMESPACE, [VALUES_ALL], [*EXTERNAL, "redis.external.caSecret=redis-ca"]),
        NAMESPACE,
    )
    for name in ("operator", "gateway"):
        deployment = rendered.one("Deployment", f"paddock-all-{name}")
        pod = deployment["spec"]["template"]["spec"]
        assert env_of(container(deployment, name))["PADDOCK_REDIS_CA_FILE"] == (
            "/etc/paddock/redis-ca/ca.crt"
        )
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["redis-ca"]["secret"] == {
            "secretName": "redis-ca",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        }
        mounts = container(deployment, name)["volumeMounts"]
        assert {
            "name": "redis-ca",
            "mountPath": "/etc/paddock/redis-ca",
            "readOnly": True,
        } in mounts


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("operator.replicas=two", "at '/operator/replicas': got string, want integer"),
        ("operator.replicaz=3", "additional properties 'replicaz' not allowed"),
        ("redis.external.url=http://redis:6379", "at '/redis/external/url'"),
        ("watchNamespaces[0]=Team_A", "at '/watchNamespaces/0'"),
        ("gateway.service.type=External", "at '/gateway/service/type'"),
        ("image.digest=latest", "at '/image/digest'"),
    ],
)
def test_the_schema_rejects_bad_values(assignment: str, message: str) -> None:
    result = helm("template", "paddock", str(CHART), "--set", assignment)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("values", [[], [VALUES_ALL]], ids=["default", "all"])
def test_helm_lint_passes(values: list[Path]) -> None:
    args = [a for path in values for a in ("--values", str(path))]
    result = helm("lint", "--strict", str(CHART), *args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_chart_crds_are_the_generated_ones() -> None:
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    generated = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert chart == generated


def _leaves(value: Any, path: str = "") -> set[str]:
    if isinstance(value, dict) and value:
        return set().union(*(_leaves(v, f"{path}.{k}" if path else k) for k, v in value.items()))
    return {path}


def test_values_all_sets_every_option() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = {
        leaf
        for leaf in _leaves(defaults)
        if not any(leaf == have or have.startswith(leaf + ".") for have in _leaves(ALL))
    }
    assert not missing, f"values-all.yaml does not set {sorted(missing)}"


def test_gateway_identity_and_rate_limit_values(full: Rendered) -> None:
    gateway = env_of(container(full.one("Deployment", "paddock-all-gateway"), "gateway"))
    assert gateway["PADDOCK_GATEWAY_DEFAULT_NAMESPACE"] == "team-a"
    assert gateway["PADDOCK_GATEWAY_TOKEN_AUDIENCES"] == "paddock,https://kubernetes.default.svc"
    assert (gateway["PADDOCK_GATEWAY_RATE_LIMIT"], gateway["PADDOCK_GATEWAY_RATE_BURST"]) == (
        "5.5",
        "50",
    )
    # API keys only: the gateway gets no review permissions at all.
    keys_only = Rendered(render(NAMESPACE, sets=["gateway.auth.kubernetes=false"]), NAMESPACE)
    assert not [r for r in keys_only.of("ClusterRole") if r["metadata"]["name"].endswith("-auth")]
    deployment = keys_only.one("Deployment", "paddock-gateway")
    assert env_of(container(deployment, "gateway"))["PADDOCK_GATEWAY_KUBERNETES_AUTH"] == "false"


def test_the_gateway_keeps_files_on_a_claim(default: Rendered, full: Rendered) -> None:
    claim = default.one("PersistentVolumeClaim", "paddock-gateway-files")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claim["spec"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    pod = default.one("Deployment", "paddock-gateway")["spec"]["template"]["spec"]
    assert {"name": "files", "persistentVolumeClaim": {"claimName": "paddock-gateway-files"}} in (
        pod["volumes"]
    )
    mounts = container(default.one("Deployment", "paddock-gateway"), "gateway")["volumeMounts"]
    assert {"name": "files", "mountPath": "/var/lib/paddock/files"} in mounts
    # One node mounts a ReadWriteOnce volume: both replicas are scheduled onto it.
    (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"

    # ReadWriteMany: replicas spread as before; the size and class are the values'.
    shared = full.one("PersistentVolumeClaim", "paddock-all-gateway-files")
    assert shared["spec"]["accessModes"] == ["ReadWriteMany"]
    assert shared["spec"]["storageClassName"] == "shared-files"
    assert shared["spec"]["resources"]["requests"]["storage"] == "50Gi"
    spread = full.one("Deployment", "paddock-all-gateway")["spec"]["template"]["spec"]
    assert "podAffinity" not in spread["affinity"]
    gateway = env_of(container(full.one("Deployment", "paddock-all-gateway"), "gateway"))
    assert gateway["PADDOCK_GATEWAY_FILES_MAX_BYTES"] == "1048576"

    existing = Rendered(
        render(NAMESPACE, sets=["gateway.files.persistence.existingClaim=team-files"]), NAMESPACE
    )
    assert not existing.of("PersistentVolumeClaim")
    pod = existing.one("Deployment", "paddock-gateway")["spec"]["template"]["spec"]
    assert {"name": "files", "persistentVolumeClaim": {"claimName": "team-files"}} in pod["volumes"]

    ephemeral = Rendered(
        render(NAMESPACE, sets=["gateway.files.persistence.enabled=false"]), NAMESPACE
    )
    assert not ephemeral.of("PersistentVolumeClaim")
    pod = ephemeral.one("Deployment", "paddock-gateway")["spec"]["template"]["spec"]
    assert {"name": "files", "emptyDir": {}} in pod["volumes"]
    assert "podAffinity" not in pod["affinity"]


def test_harness_pods_may_reach_a_gateway_that_admits_only_some(full: Rendered) -> None:
    policy = full.one("NetworkPolicy", "paddock-all-gateway")
    rules = [r for r in policy["spec"]["ingress"] if r.get("from")]
    harness = {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"paddock.dev/component": "harness"}},
    }
    assert any(harness in rule["from"] for rule in rules)


def test_the_package_proxy_holds_no_credential_and_allows_registries_only(full: Rendered) -> None:
    """paddock.proxy with one policy (registries and the mirrors), no API key, and a token key
    that only it and the operator mount; the operator is told the mirrors and where it is."""
    config = parse_config(
        full.one("ConfigMap", "paddock-all-package-proxy")["data"]["proxy.yaml"], "package proxy"
    )
    assert list(config.environments) == [PACKAGE_POLICY]
    policy = config.environments[PACKAGE_POLICY]
    assert (policy.mode, policy.allow_package_managers) == ("limited", True)
    assert policy.allowed_domains == ALL["packages"]["allowedHosts"]
    assert config.credentials == []
    assert config.token_max_age_seconds == ALL["packages"]["tokenMaxAgeSeconds"]
    deployment = full.one("Deployment", "paddock-all-package-proxy")
    proxy = container(deployment, "proxy")
    assert proxy["command"] == [
        "python", "-m", "paddock.proxy", "--config", "/etc/paddock/proxy/proxy.yaml"
    ]  # fmt: skip
    mounts = {m["mountPath"] for m in proxy["volumeMounts"]}
    assert str(config.api_key_file.parent) not in mounts, "no API key is mounted"
    assert str(config.token_key_file.parent) in mounts
    key_secret = "paddock-all-package-proxy-token-key"
    mounted_by = {
        d["metadata"]["name"]
        for d in full.of("Deployment")
        if any(
            v.get("secret", {}).get("secretName") == key_secret
            for v in d["spec"]["template"]["spec"]["volumes"]
        )
    }
    assert mounted_by == {"paddock-all-package-proxy", "paddock-all-operator"}
    env = env_of(container(full.one("Deployment", "paddock-all-operator"), "operator"))
    assert env["PADDOCK_PIP_INDEX_URL"] == ALL["packages"]["pipIndexUrl"]
    assert env["PADDOCK_NPM_REGISTRY"] == ALL["packages"]["npmRegistry"]
    assert env["PADDOCK_APT_SOURCES"].splitlines() == ALL["packages"]["aptSources"]
    service = full.one("Service", "paddock-all-package-proxy")
    assert env["PADDOCK_PACKAGE_PROXY_URL"].startswith("http://paddock-all-package-proxy.")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (ingress,) = full.one("NetworkPolicy", "paddock-all-package-proxy")["spec"]["ingress"]
    (peer,) = ingress["from"]
    assert peer["podSelector"]["matchLabels"]["paddock.dev/packages"] == "install"


def test_without_the_package_proxy_the_operator_is_not_told_of_one() -> None:
    off = Rendered(render(NAMESPACE, sets=["packages.enabled=false"]), NAMESPACE)
    assert not [d for d in off.of("Deployment") if "package" in d["metadata"]["name"]]
    env = env_of(container(off.one("Deployment", "paddock-operator"), "operator"))
    assert not [k for k in env if k.startswith("PADDOCK_PACKAGE_PROXY")]
