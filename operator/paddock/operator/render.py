"""Every Kubernetes object the operator creates, as pure functions of the resources.

Nothing here talks to the API or reads the clock: the same input renders the same output,
which the golden tests pin. Secrets are mounted into the credential-proxy container only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from paddock.eventlog import harness_user
from paddock.models import Agent, Environment, Vault, VaultCredential, secret_refs
from paddock.operator import labels as L
from paddock.sandbox import PLAN_ENV, PackagePlan

HARNESS_UID = 10001
PROXY_UID = 10002  # another uid than the harness: it cannot read the proxy's files or memory
SANDBOX_UID = 10001
API_PORT, EGRESS_PORT, ADMIN_PORT = 8081, 3128, 8082
SANDBOX_PORT = 8080
METRICS_PORT = 9090
SECRETS_DIR = "/var/run/secrets/paddock"
REDIS_SECRET = "paddock-redis-harness"
"""Per tenant namespace: the harness workers' Redis password (and the CA of a TLS Redis),
generated and provisioned in Redis by the operator (`paddock.operator.redisusers`)."""
SANDBOX_TOKEN_DIR = "/var/run/paddock/sandbox"
PACKAGE_TOKEN_DIR = "/var/run/paddock/packages"
PACKAGES_DIR = "/opt/paddock/packages"
"""Where an Environment's pip and npm packages are installed in its sandboxes (an emptyDir)."""
PACKAGE_POLICY = "packages"
"""The package proxy's one egress policy: package registries (and the configured mirrors)."""
SESSION_DIR = "/mnt/session"
"""Where a session's files are in its sandbox: `uploads/` (Files API files) and `outputs/`."""
NO_RESOLVER = "127.0.0.1"
"""The only nameserver of a sandbox in `none` or `limited` mode: its own loopback."""
PRIVATE_RANGES = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
]


@dataclass(frozen=True)
class RenderSettings:
    """Operator-wide settings that rendering needs."""

    image: str = "paddock/paddock:0.1.0"
    redis_url: str = "redis://redis:6379/0"
    """What harness workers connect to; never holds credentials (they come from the
    tenant's `REDIS_SECRET`)."""
    redis_ca: bool = False
    """The Redis URL is rediss:// with a CA bundle of its own: the tenant's `REDIS_SECRET`
    carries it (`ca.crt`)."""
    anthropic_url: str = "https://api.anthropic.com"
    gateway_url: str | None = None
    """The gateway's in-cluster URL: harness workers mount Files API files from it and
    upload session outputs to it. None: they do neither."""
    gateway_namespace: str | None = None
    """Where the gateway's pods run (the harness NetworkPolicy lets workers reach them)."""
    gateway_labels: tuple[tuple[str, str], ...] = ()
    """Labels that select the gateway's pods."""
    gateway_port: int = 8080
    """The port the gateway's pods listen on (NetworkPolicy sees pod ports, not Service
    ports)."""
    package_proxy_url: str | None = None
    """The package proxy (`http://host:port`) that Environment packages are installed
    through; None: Environments' packages are not installed (their status says so)."""
    package_proxy_namespace: str | None = None
    """Where the package proxy's pods run (sandboxes installing packages may reach them)."""
    package_proxy_labels: tuple[tuple[str, str], ...] = ()
    """Labels that select the package proxy's pods."""
    pip_index_url: str | None = None
    """pip's index (`--index-url`) for Environment packages, for example a mirror; None:
    pip's default."""
    npm_registry: str | None = None
    """npm's registry for Environment packages; None: npm's default."""
    proxy_address_exceptions: tuple[str, ...] = ()
    """Development and tests only: the Agents' proxies' `address_exceptions` (`ip:port` on
    loopback or a private network, such as a test's OAuth token endpoint)."""
    apt_sources: str | None = None
    """apt's sources for Environment packages (`sources.list` one-line entries, one a line),
    for example a mirror; None: the image's own sources."""

    @property
    def package_mirrors(self) -> tuple[str | None, ...]:
        """Where Environment packages come from: part of a pool's template hash."""
        return (self.pip_index_url, self.npm_registry, self.apt_sources)


Owner = Agent | Environment | Vault


def _required(value: str | None, owner: Owner, field: str) -> str:
    if not value:
        raise ValueError(f"{owner.kind} has no metadata.{field}: it was not read from the API")
    return value


def name_of(owner: Owner) -> str:
    return _required(owner.metadata.name, owner, "name")


def namespace_of(owner: Owner) -> str:
    return _required(owner.metadata.namespace, owner, "namespace")


def _owner(resource: Owner) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "name": name_of(resource),
            "uid": _required(resource.metadata.uid, resource, "uid"),
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _meta(name: str, owner: Owner, extra_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace_of(owner),
        "labels": {**L.MANAGED_BY, **extra_labels},
        "ownerReferences": _owner(owner),
    }


def _restricted(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# --- Agent ---------------------------------------------------------------------------


def harness_names(agent: Agent) -> dict[str, str]:
    name = name_of(agent)
    return {
        "deployment": f"{name}-harness",
        "agent_config": f"{name}-agent",
        "proxy_config": f"{name}-proxy",
        "service": f"{name}-proxy",
        "token_key": f"{name}-proxy-token-key",
        "policy": f"{name}-harness",
        # Not `<x>-sandboxes`: that is an Environment's policy, and names may coincide.
        "sandbox_policy": f"{name}-sandbox-access",
    }


def harness_labels(agent: Agent) -> dict[str, str]:
    return {L.COMPONENT: "harness", L.AGENT: name_of(agent)}


def harness_spec(agent: Agent) -> dict[str, Any]:
    """The spec as harness pods get it: without what only the operator reads (the version
    history limit), so that changing that rolls no pod."""
    spec = agent.spec.to_k8s()
    spec.pop("revisionHistoryLimit", None)
    return spec


def agent_config_map(agent: Agent) -> dict[str, Any]:
    """The Agent as the harness reads it (a file, so a 100k system prompt is no env var)."""
    document = {
        "apiVersion": agent.api_version,
        "kind": "Agent",
        "metadata": {"name": name_of(agent), "namespace": namespace_of(agent)},
        "spec": harness_spec(agent),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(harness_names(agent)["agent_config"], agent, harness_labels(agent)),
        "data": {"agent.yaml": yaml.safe_dump(document, sort_keys=False)},
    }


VAULT_ID_LABEL = L.VAULT_ID
ARCHIVED_AT_ANNOTATION = "paddock.dev/archived-at"
VAULTS_DIR = f"{SECRETS_DIR}/vaults"


def usable_credentials(vaults: Sequence[Vault]) -> list[tuple[str, VaultCredential]]:
    """(vault id, credential) of every credential a session may use: of Vaults that have
    their id label and are not archived or being deleted, and not archived themselves; in a
    stable order (the rendering must not change when the informer's order does)."""
    found: list[tuple[str, VaultCredential]] = []
    for vault in vaults:
        meta = vault.metadata
        vault_id = (meta.labels or {}).get(VAULT_ID_LABEL)
        archived = (meta.annotations or {}).get(ARCHIVED_AT_ANNOTATION)
        if not vault_id or archived or meta.deletion_timestamp:
            continue
        found.extend((vault_id, c) for c in vault.spec.credentials if not c.archived_at)
    return sorted(found, key=lambda item: (item[0], item[1].id))


def _vault_file(vault_id: str, credential_id: str, what: str) -> str:
    return f"{VAULTS_DIR}/{vault_id}/{credential_id}/{what}"


def vault_credentials(vaults: Sequence[Vault]) -> list[dict[str, Any]]:
    """The proxy config's `vault_credentials`: where each credential's values are mounted,
    never the values."""
    rendered = []
    for vault_id, c in usable_credentials(vaults):
        common = {"vault_id": vault_id, "credential_id": c.id, "mcp_server_url": c.mcp_server_url}
        if c.type == "static_bearer":
            rendered.append(
                {
                    **common,
                    "type": "static_bearer",
                    "token_file": _vault_file(vault_id, c.id, "token"),
                }
            )
            continue
        entry: dict[str, Any] = {
            **common,
            "type": "mcp_oauth",
            "access_token_file": _vault_file(vault_id, c.id, "access_token"),
        }
        if c.expires_at:
            entry["expires_at"] = c.expires_at
        if c.refresh is not None:
            r = c.refresh
            refresh: dict[str, Any] = {
                "token_endpoint": r.token_endpoint,
                "client_id": r.client_id,
                "refresh_token_file": _vault_file(vault_id, c.id, "refresh_token"),
                "token_endpoint_auth": r.token_endpoint_auth.type,
            }
            if r.token_endpoint_auth.client_secret_ref is not None:
                refresh["client_secret_file"] = _vault_file(vault_id, c.id, "client_secret")
            if r.scope:
                refresh["scope"] = r.scope
            if r.resource:
                refresh["resource"] = r.resource
            entry["refresh"] = refresh
        rendered.append(entry)
    return rendered


def vault_volume(vaults: Sequence[Vault]) -> dict[str, Any] | None:
    """One projected volume of every Secret key the usable credentials reference, laid out
    as `vault_credentials` names the files; None if there are none."""
    sources: list[dict[str, Any]] = []
    for vault_id, c in usable_credentials(vaults):
        by_secret: dict[str, list[dict[str, str]]] = {}
        for what, ref in secret_refs(c).items():
            path = f"{vault_id}/{c.id}/{what}"
            by_secret.setdefault(ref.name, []).append({"key": ref.key, "path": path})
        sources.extend(
            {"secret": {"name": name, "items": items}} for name, items in sorted(by_secret.items())
        )
    if not sources:
        return None
    return {"name": "vaults", "projected": {"sources": sources, "defaultMode": 0o440}}


def proxy_config(
    agent: Agent,
    environments: Sequence[Environment],
    settings: RenderSettings,
    vaults: Sequence[Vault] = (),
) -> dict[str, Any]:
    """The credential proxy's configuration: every Environment of the namespace (a session
    may name any of them), a file for each credential, the Agent's MCP servers, and every
    usable vault credential of the namespace (a session may name any vault; the proxy picks
    by its vault ids)."""
    policies = {}
    for environment in sorted(environments, key=name_of):
        networking = environment.spec.networking
        policies[name_of(environment)] = {
            "mode": networking.mode,
            "allowed_domains": list(networking.allowed_domains),
            "allow_package_managers": networking.allow_package_managers,
        }
    return {
        "listeners": {
            "api": {"host": "127.0.0.1", "port": API_PORT},
            "egress": {"host": "0.0.0.0", "port": EGRESS_PORT},
            "admin": {"host": "127.0.0.1", "port": ADMIN_PORT},
        },
        "upstream": settings.anthropic_url,
        "api_key_file": f"{SECRETS_DIR}/anthropic/api-key",
        "token_key_file": f"{SECRETS_DIR}/token-key/key",
        "environments": policies,
        "credentials": [
            {
                "host": c.host,
                "secret_file": f"{SECRETS_DIR}/hosts/{i}/token",
                "scheme": c.scheme,
                **(
                    {
                        "api_routes": [
                            r.model_dump(include={"methods", "path_prefix"}) for r in c.api_routes
                        ]
                    }
                    if c.api_routes
                    else {}
                ),
            }
            for i, c in enumerate(agent.spec.credentials.hosts)
        ],
        # The harness reaches these at the API listener's /mcp/<name>; vault credentials for
        # their URLs come from the vaults its sessions name.
        "mcp_servers": [{"name": s.name, "url": s.url} for s in agent.spec.mcp_servers],
        "blocked_ports": sorted({6379, redis_port(settings.redis_url)}),
        **(
            {"address_exceptions": list(settings.proxy_address_exceptions)}
            if settings.proxy_address_exceptions
            else {}
        ),
        **(
            {"vault_credentials": credentials} if (credentials := vault_credentials(vaults)) else {}
        ),
    }


def proxy_config_map(
    agent: Agent,
    environments: Sequence[Environment],
    settings: RenderSettings,
    vaults: Sequence[Vault] = (),
) -> dict[str, Any]:
    config = yaml.safe_dump(proxy_config(agent, environments, settings, vaults), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(harness_names(agent)["proxy_config"], agent, harness_labels(agent)),
        "data": {"proxy.yaml": config},
    }


def token_key_secret(agent: Agent, key: str) -> dict[str, Any]:
    """The HMAC key the proxy signs sandbox egress tokens with (generated once)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(harness_names(agent)["token_key"], agent, harness_labels(agent)),
        "stringData": {"key": key},
    }


def tenant_owner(agent: Agent) -> dict[str, Any]:
    """An Agent as one of the owners of what its namespace's Agents share (the tenant's Redis
    Secret): not the controller, so the garbage collector removes the object only once its
    last Agent is gone."""
    return {**_owner(agent)[0], "controller": False, "blockOwnerDeletion": False}


def redis_secret(namespace: str, password: str, ca_pem: str | None, owner: Agent) -> dict[str, Any]:
    """The tenant's Redis credentials for its harness workers (generated once; owned by every
    Agent of the namespace, so the last one's deletion, or an uninstall, removes it)."""
    data = {"username": harness_user(namespace), "password": password}
    if ca_pem:
        data["ca.crt"] = ca_pem
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": REDIS_SECRET,
            "namespace": namespace,
            "labels": {L.COMPONENT: "redis-credentials", "app.kubernetes.io/managed-by": "paddock"},
            "ownerReferences": [tenant_owner(owner)],
        },
        "stringData": data,
    }


def _redis_env(namespace: str, settings: RenderSettings) -> list[dict[str, Any]]:
    """The harness container's Redis settings: its tenant's user, the password (and CA) by
    reference to the tenant's Secret, so they reach this container only."""
    env: list[dict[str, Any]] = [
        {"name": "PADDOCK_REDIS_URL", "value": settings.redis_url},
        {"name": "PADDOCK_REDIS_USERNAME", "value": harness_user(namespace)},
        {
            "name": "PADDOCK_REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": REDIS_SECRET, "key": "password"}},
        },
    ]
    if settings.redis_ca:
        env.append(
            {
                "name": "PADDOCK_REDIS_CA_PEM",
                "valueFrom": {"secretKeyRef": {"name": REDIS_SECRET, "key": "ca.crt"}},
            }
        )
    return env


def _secret_volume(name: str, secret: str, key: str, path: str) -> dict[str, Any]:
    return {
        "name": name,
        "secret": {
            "secretName": secret,
            "items": [{"key": key, "path": path}],
            "defaultMode": 0o440,
        },
    }


def harness_deployment(
    agent: Agent, settings: RenderSettings, vaults: Sequence[Vault] = ()
) -> dict[str, Any]:
    """The Agent's workers: the harness container and the credential-proxy sidecar. Only the
    proxy mounts Secrets (the vault credentials of the namespace among them), and only the
    harness container reads one key of another (its tenant's Redis password); no container
    gets a ServiceAccount token or API permissions."""
    spec = agent.spec
    names = harness_names(agent)
    namespace = namespace_of(agent)
    image = spec.harness.image or settings.image
    pod_labels = harness_labels(agent)
    credentials = spec.credentials
    secret_volumes = [
        _secret_volume(
            "anthropic-key",
            credentials.anthropic_api_key.name,
            credentials.anthropic_api_key.key,
            "api-key",
        ),
        _secret_volume("token-key", names["token_key"], "key", "key"),
        *(
            _secret_volume(f"host-{i}", c.secret_ref.name, c.secret_ref.key, "token")
            for i, c in enumerate(credentials.hosts)
        ),
    ]
    secret_mounts = [
        {"name": "anthropic-key", "mountPath": f"{SECRETS_DIR}/anthropic", "readOnly": True},
        {"name": "token-key", "mountPath": f"{SECRETS_DIR}/token-key", "readOnly": True},
        *(
            {"name": f"host-{i}", "mountPath": f"{SECRETS_DIR}/hosts/{i}", "readOnly": True}
            for i in range(len(credentials.hosts))
        ),
    ]
    vault = vault_volume(vaults)
    if vault is not None:
        # Adding or removing a credential changes the pod template (a rollout); new values of
        # a mounted key reach the running proxy in place (docs/operator.md).
        secret_volumes.append(vault)
        secret_mounts.append({"name": "vaults", "mountPath": VAULTS_DIR, "readOnly": True})
    resources = (
        spec.harness.resources.to_k8s()
        if spec.harness.resources
        else {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        }
    )
    harness = {
        "name": "harness",
        "image": image,
        "command": ["python", "-m", "paddock.harness"],
        "env": [
            {"name": "PADDOCK_AGENT", "value": f"{namespace}/{name_of(agent)}"},
            {"name": "PADDOCK_AGENT_FILE", "value": "/etc/paddock/agent/agent.yaml"},
            *_redis_env(namespace, settings),
            {
                "name": "PADDOCK_WORKER_ID",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
            {"name": "PADDOCK_MODEL_URL", "value": f"http://127.0.0.1:{API_PORT}"},
            {"name": "PADDOCK_PROXY_ADMIN_URL", "value": f"http://127.0.0.1:{ADMIN_PORT}"},
            {
                "name": "PADDOCK_PROXY_EGRESS_URL",
                "value": f"http://{names['service']}.{namespace}.svc:{EGRESS_PORT}",
            },
            *_gateway_env(settings),
            {"name": "PADDOCK_METRICS_PORT", "value": str(METRICS_PORT)},
        ],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "readinessProbe": {"tcpSocket": {"port": METRICS_PORT}, "periodSeconds": 5},
        "volumeMounts": [
            {"name": "agent", "mountPath": "/etc/paddock/agent", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": resources,
        "securityContext": _restricted(HARNESS_UID),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    proxy = {
        "name": "proxy",
        "image": image,
        "command": ["python", "-m", "paddock.proxy", "--config", "/etc/paddock/proxy/proxy.yaml"],
        "ports": [{"name": "egress", "containerPort": EGRESS_PORT}],
        "readinessProbe": {"tcpSocket": {"port": EGRESS_PORT}, "periodSeconds": 5},
        "volumeMounts": [
            {"name": "proxy-config", "mountPath": "/etc/paddock/proxy", "readOnly": True},
            *secret_mounts,
        ],
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "securityContext": _restricted(PROXY_UID),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    template_hash = digest(
        {"spec": harness_spec(agent), "image": image, "redis": settings.redis_url}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(names["deployment"], agent, pod_labels),
        "spec": {
            "replicas": spec.harness.replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {
                    "labels": {**L.MANAGED_BY, **pod_labels},
                    "annotations": {L.SPEC_HASH: template_hash},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # Secret files are group-readable by the proxy's group only.
                    "securityContext": {
                        "runAsNonRoot": True,
                        "fsGroup": PROXY_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [harness, proxy],
                    "volumes": [
                        {"name": "agent", "configMap": {"name": names["agent_config"]}},
                        {"name": "proxy-config", "configMap": {"name": names["proxy_config"]}},
                        {"name": "tmp", "emptyDir": {}},
                        *secret_volumes,
                    ],
                },
            },
        },
    }


def proxy_service(agent: Agent) -> dict[str, Any]:
    """How sandboxes reach their Agent's proxies: any worker's proxy verifies any token."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(harness_names(agent)["service"], agent, harness_labels(agent)),
        "spec": {
            "selector": harness_labels(agent),
            "ports": [{"name": "egress", "port": EGRESS_PORT, "targetPort": EGRESS_PORT}],
        },
    }


_DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
_DNS = {"ports": _DNS_PORTS}
# Sandboxes in `open` mode may resolve names through the cluster's resolver only, not any
# server (which would be a tunnel out); it recurses, an allowed channel in that mode.
_CLUSTER_DNS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": _DNS_PORTS,
}


def redis_port(url: str) -> int:
    return urlsplit(url).port or 6379


def claimed_sandbox_labels(agent: Agent) -> dict[str, str]:
    """The labels of a sandbox claimed for a session of ``agent`` (set by the claim)."""
    return {L.COMPONENT: "sandbox", L.AGENT: name_of(agent)}


def _gateway_env(settings: RenderSettings) -> list[dict[str, Any]]:
    if settings.gateway_url is None:
        return []
    return [{"name": "PADDOCK_GATEWAY_URL", "value": settings.gateway_url}]


def _gateway_egress(settings: RenderSettings) -> list[dict[str, Any]]:
    """To the gateway's pods, for session files (none without a gateway URL)."""
    if settings.gateway_url is None or settings.gateway_namespace is None:
        return []
    peer: dict[str, Any] = {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": settings.gateway_namespace}
        }
    }
    if settings.gateway_labels:
        peer["podSelector"] = {"matchLabels": dict(settings.gateway_labels)}
    return [{"to": [peer], "ports": [{"protocol": "TCP", "port": settings.gateway_port}]}]


def harness_network_policy(agent: Agent, settings: RenderSettings) -> dict[str, Any]:
    """Harness pods: the Agent's claimed sandboxes may reach the proxy, anyone the metrics;
    out to DNS, Redis, the gateway (session files), the Agent's claimed sandboxes and public
    HTTPS (the model API and allowlisted hosts), never the metadata address or other private
    addresses."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(harness_names(agent)["policy"], agent, harness_labels(agent)),
        "spec": {
            "podSelector": {"matchLabels": harness_labels(agent)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": claimed_sandbox_labels(agent)}}],
                    "ports": [{"protocol": "TCP", "port": EGRESS_PORT}],
                },
                {"ports": [{"protocol": "TCP", "port": METRICS_PORT}]},
            ],
            "egress": [
                _DNS,
                {"ports": [{"protocol": "TCP", "port": redis_port(settings.redis_url)}]},
                *_gateway_egress(settings),
                {
                    "to": [{"podSelector": {"matchLabels": claimed_sandbox_labels(agent)}}],
                    "ports": [{"protocol": "TCP", "port": SANDBOX_PORT}],
                },
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}],
                    "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 80}],
                },
            ],
        },
    }


def sandbox_access_policy(agent: Agent) -> dict[str, Any]:
    """What a sandbox claimed for a session of ``agent`` may do beyond its Environment's
    deny-all: accept calls from the Agent's harness pods, reach the Agent's proxies. The
    claim labels the pod with the Agent, so no policy object per session is needed."""
    harness = [{"podSelector": {"matchLabels": harness_labels(agent)}}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(
            harness_names(agent)["sandbox_policy"], agent, claimed_sandbox_labels(agent)
        ),
        "spec": {
            "podSelector": {"matchLabels": claimed_sandbox_labels(agent)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": harness, "ports": [{"protocol": "TCP", "port": SANDBOX_PORT}]}],
            "egress": [{"to": harness, "ports": [{"protocol": "TCP", "port": EGRESS_PORT}]}],
        },
    }


# --- Environment ---------------------------------------------------------------------


def sandbox_labels(environment: Environment) -> dict[str, str]:
    return {L.COMPONENT: "sandbox", L.ENVIRONMENT: name_of(environment)}


def sandbox_template_hash(
    environment: Environment, mirrors: tuple[str | None, ...] | None = None
) -> str:
    """Changes whenever a pooled sandbox would be rendered differently. ``mirrors``: the pip
    index, npm registry and apt sources when its sandboxes install packages (None when they
    do not)."""
    if mirrors is None:
        return digest(environment.spec.to_k8s())
    listed = list(mirrors)
    if len(listed) == 3 and listed[2] is None:
        # No apt sources: the hash pools had before apt was installed, so they stay warm.
        listed = listed[:2]
    return digest({"spec": environment.spec.to_k8s(), "mirrors": listed})


@dataclass(frozen=True)
class PackageInstall:
    """How a sandbox installs its Environment's packages: through the package proxy at
    ``proxy_address`` (`http://ip:port`: the sandbox has no resolver) with ``token``."""

    proxy_address: str
    token: str
    pip_index_url: str | None = None
    npm_registry: str | None = None
    apt_sources: str | None = None

    @property
    def mirrors(self) -> tuple[str | None, ...]:
        """What of it is part of the pool template hash."""
        return (self.pip_index_url, self.npm_registry, self.apt_sources)


def installs_packages(environment: Environment) -> bool:
    """Whether the Environment has packages its sandboxes install (apt, pip, npm)."""
    packages = environment.spec.packages
    return packages is not None and bool(packages.apt or packages.pip or packages.npm)


def sandbox_pod(
    environment: Environment, name: str, token: str, install: PackageInstall | None = None
) -> dict[str, Any]:
    """A warm sandbox: the Environment's template, locked down. It holds no secret and no
    ServiceAccount token; its own bearer token reaches it through the downward API. With
    ``install``, the server installs the Environment's packages before it listens, through
    the package proxy (its token by the downward API too)."""
    spec = environment.spec
    installing = install if install is not None and installs_packages(environment) else None
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SANDBOX_UID,
            "runAsGroup": SANDBOX_UID,
            "fsGroup": SANDBOX_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "sandbox",
                "image": spec.image,
                "command": [
                    "python3",
                    "-m",
                    "paddock.sandbox",
                    "--port",
                    str(SANDBOX_PORT),
                    "--workdir",
                    spec.working_dir,
                    "--token-file",
                    f"{SANDBOX_TOKEN_DIR}/token",
                ],
                "ports": [{"name": "tools", "containerPort": SANDBOX_PORT}],
                "readinessProbe": {
                    "httpGet": {"path": "/readyz", "port": SANDBOX_PORT},
                    "periodSeconds": 2,
                },
                "resources": spec.resources.to_k8s(),
                "securityContext": {**_restricted(SANDBOX_UID), "readOnlyRootFilesystem": False},
                # The tail of a failed start's log becomes the termination message, which
                # the operator shows in the Environment's status.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [
                    {"name": "workspace", "mountPath": spec.working_dir},
                    # Files API uploads and the outputs directory, writable by the sandbox user.
                    {"name": "session", "mountPath": SESSION_DIR},
                    {"name": "token", "mountPath": SANDBOX_TOKEN_DIR, "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "workspace", "emptyDir": {}},
            {"name": "session", "emptyDir": {}},
            _annotation_file("token", L.SANDBOX_TOKEN),
        ],
    }
    if installing is not None:
        assert spec.packages is not None  # installs_packages
        plan = PackagePlan(
            dir=Path(PACKAGES_DIR),
            apt=spec.packages.apt,
            pip=spec.packages.pip,
            npm=spec.packages.npm,
            proxy_url=installing.proxy_address,
            proxy_user=name,
            token_file=Path(PACKAGE_TOKEN_DIR) / "token",
            pip_index_url=installing.pip_index_url,
            npm_registry=installing.npm_registry,
            apt_sources=installing.apt_sources,
        )
        container = pod_spec["containers"][0]
        container["env"] = [
            {"name": PLAN_ENV, "value": plan.model_dump_json(exclude_defaults=True)}
        ]
        container["volumeMounts"] += [
            {"name": "packages", "mountPath": PACKAGES_DIR},
            {"name": "package-token", "mountPath": PACKAGE_TOKEN_DIR, "readOnly": True},
        ]
        pod_spec["volumes"] += [
            {"name": "packages", "emptyDir": {}},
            _annotation_file("package-token", L.PACKAGE_TOKEN),
        ]
    if spec.runtime_class_name:
        pod_spec["runtimeClassName"] = spec.runtime_class_name
    if spec.networking.mode != "open":
        # No recursive resolver: names are the proxy's to resolve (the proxy address the
        # harness hands over at bind is an IP). Nothing answers on the sandbox's own
        # loopback, so a lookup fails at once instead of waiting out a timeout.
        pod_spec["dnsPolicy"] = "None"
        pod_spec["dnsConfig"] = {"nameservers": [NO_RESOLVER]}
    meta = _meta(
        name,
        environment,
        {
            **sandbox_labels(environment),
            L.SANDBOX_STATE: "warm",
            L.TEMPLATE_HASH: sandbox_template_hash(
                environment, installing.mirrors if installing is not None else None
            ),
        },
    )
    meta["annotations"] = {L.SANDBOX_TOKEN: token}
    if installing is not None:
        # The claim removes both: a claimed sandbox no longer reaches the package proxy.
        meta["labels"][L.PACKAGES] = "install"
        meta["annotations"][L.PACKAGE_TOKEN] = installing.token
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def _annotation_file(volume: str, annotation: str) -> dict[str, Any]:
    """A downward-API volume holding the pod's ``annotation`` as the file `token`."""
    return {
        "name": volume,
        "downwardAPI": {
            "items": [
                {
                    "path": "token",
                    "fieldRef": {"fieldPath": f"metadata.annotations['{annotation}']"},
                }
            ]
        },
    }


def sandbox_network_policy(environment: Environment) -> dict[str, Any]:
    """Every sandbox of the Environment, warm or claimed: nothing in, nothing out (in `open`
    mode, the cluster's DNS out). The claimed sandbox's Agent's `sandbox_access_policy` adds
    its harness in and its proxy out; the kubelet's probes come from the node, which
    NetworkPolicy does not filter."""
    name = name_of(environment)
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": sandbox_labels(environment)},
        "policyTypes": ["Ingress", "Egress"],
    }
    if environment.spec.networking.mode == "open":
        spec["egress"] = [_CLUSTER_DNS]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{name}-sandboxes", environment, sandbox_labels(environment)),
        "spec": spec,
    }


def sandbox_package_policy(environment: Environment, settings: RenderSettings) -> dict[str, Any]:
    """Sandboxes of the Environment that install packages (labelled by `sandbox_pod`, the
    label removed by the claim) may reach the package proxy's pods on its port, and nothing
    else beyond their Environment's policy."""
    name = name_of(environment)
    peer: dict[str, Any] = {}
    if settings.package_proxy_namespace:
        peer["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": settings.package_proxy_namespace}
        }
    if settings.package_proxy_labels:
        peer["podSelector"] = {"matchLabels": dict(settings.package_proxy_labels)}
    url = urlsplit(settings.package_proxy_url or "")
    port = url.port or EGRESS_PORT
    if not peer:
        # No pods to select (a proxy outside the cluster): its address, if the URL has one.
        host = url.hostname or ""
        if host.replace(".", "").isdigit():
            peer["ipBlock"] = {"cidr": f"{host}/32"}
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
    if peer:
        rule = {"to": [peer], **rule}
    selected = {**sandbox_labels(environment), L.PACKAGES: "install"}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{name}-sandbox-packages", environment, sandbox_labels(environment)),
        "spec": {
            "podSelector": {"matchLabels": selected},
            "policyTypes": ["Egress"],
            "egress": [rule],
        },
    }
