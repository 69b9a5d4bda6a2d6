"""A hostile sandbox on the real one-node cluster (kubelet, containerd + runc, kube-router
enforcing NetworkPolicy): what the operator's rendered policies and sandbox pods let it reach.

Two Agents, `alpha` and `beta`, in one namespace with everything the operator renders for
them (harness and sandbox-access policies, proxy Services) and three Environments (`quiet`:
networking `none`, `narrow`: `limited`, `wide`: `open`, each with its sandbox policy). Their
pods are the rendered ones with busybox in place of the images (httpd stands in for the
proxy, the harness's metrics and the sandbox server): the labels, DNS settings and claim
patch (`paddock.operator.sandboxes.claim_patch`) are the operator's own. Every pod that
probes runs one loop for the whole module and logs `<check> ok|blocked` each round: a new
pod's first packets can get out before kube-router installs its chains, so the assertions
read rounds after every pod has been seen reaching what its policy allows, and a `blocked`
expectation fails on a single `ok` after that.

Each target is shown reachable by someone (the control), so each `blocked` is the policy's
doing: beta's proxy by beta's sandbox, beta's harness metrics port by a pod no policy selects
(`control`), a sandbox's port by its own Agent's harness, the cluster resolver by `control`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from paddock.models import Agent, Environment
from paddock.operator import render
from paddock.operator.sandboxes import claim_patch
from paddock.testing.node import LocalNode
from paddock.testing.ociimage import BUSYBOX_IMAGE
from paddock.testing.ports import wait_until

pytestmark = pytest.mark.timeout(900)

SETTINGS = render.RenderSettings(redis_url="redis://redis.paddock-system:6379/0")
AGENTS = ("alpha", "beta")
MODES = {"quiet": "none", "narrow": "limited", "wide": "open"}
TARGET = "test.paddock.dev/target"  # what the test's own Services select sandboxes by
SMALL = {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}
CLUSTER_NAME = "kubernetes.default.svc.cluster.local"
_names = itertools.count()


def _resource(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": spec,
    }


def _agent(name: str, namespace: str) -> Agent:
    spec = {
        "model": "claude-sonnet-4-6",
        "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
    }
    return Agent.model_validate(_resource("Agent", name, namespace, spec))


def _environment(name: str, namespace: str) -> Environment:
    spec: dict[str, Any] = {"networking": {"mode": MODES[name]}, "warmPool": {"size": 0}}
    if name == "narrow":
        spec["packages"] = {"pip": ["requests"]}
    return Environment.model_validate(_resource("Environment", name, namespace, spec))


def _unowned(manifest: dict[str, Any], owner: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Owned by ``owner`` (or nothing) instead: the test has no Agent, Environment or
    Session objects, and the garbage collector deletes what a missing owner owns."""
    manifest["metadata"].pop("ownerReferences", None)
    if owner:
        manifest["metadata"]["ownerReferences"] = owner
    return manifest


def _stand_in(t: Tenants, name: str) -> list[dict[str, Any]]:
    """A ConfigMap standing in for an Environment or a Session as owner."""
    made = t.node.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": t.namespace},
        }
    )
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": name,
            "uid": made["metadata"]["uid"],
            "controller": True,
        }
    ]


def _service(name: str, namespace: str, selector: dict[str, str], port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector, "ports": [{"port": port, "targetPort": port}]},
    }


def _http(address: str, port: int) -> str:
    return f"timeout 3 wget -q -O /dev/null http://{address}:{port}/"


def _dns(name: str, server: str = "") -> str:
    """Succeeds when any resolver answers (an address, or even NXDOMAIN or REFUSED: the
    query reached a server, which in a real cluster would recurse for it)."""
    return f"timeout 4 nslookup -timeout=1 {name} {server} 2>&1 | grep -q -e '^Name:' -e \"can't find\""


def _loop(checks: dict[str, str], serve: str) -> str:
    rounds = "; ".join(
        f"if {command} >/dev/null 2>&1; then echo '{check} ok'; else echo '{check} blocked'; fi"
        for check, command in checks.items()
    )
    return f"{serve}; while true; do {rounds}; sleep 0.5; done"


def _busybox(pod: dict[str, Any], script: str) -> dict[str, Any]:
    """``pod`` (rendered) with busybox running ``script`` as its container."""
    spec = pod["spec"]
    spec["terminationGracePeriodSeconds"] = 1
    (container,) = spec["containers"]
    container.update(
        image=BUSYBOX_IMAGE,
        imagePullPolicy="Never",
        command=["/bin/sh", "-c", script],
        resources=SMALL,
    )
    return pod


def _httpd(root: str, port: int, body: str) -> str:
    return (
        f"mkdir -p {root}/{port} && echo {body} > {root}/{port}/index.html && "
        f"echo ready > {root}/{port}/readyz && httpd -p {port} -h {root}/{port}"
    )


@dataclass
class Tenants:
    node: LocalNode
    namespace: str
    address: dict[str, str] = field(default_factory=dict)
    """Service and pod addresses by name."""
    marks: dict[tuple[str, str], int] = field(default_factory=dict)
    """How many rounds of (pod, check) were logged when everything had settled."""
    session_owner: list[dict[str, Any]] = field(default_factory=list)

    def log(self, pod: str) -> str:
        with self.node.client() as client:
            return client.get(f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log").text

    def outcomes(self, pod: str, check: str) -> list[str]:
        pattern = rf"^{re.escape(check)} (ok|blocked)$"
        return re.findall(pattern, self.log(pod), flags=re.M)

    def since_settled(self, pod: str, check: str) -> list[str]:
        return self.outcomes(pod, check)[self.marks.get((pod, check), 0) :]

    def expect(self, pod: str, check: str, outcome: str) -> None:
        """Three rounds of ``check`` in ``pod`` after settling give ``outcome``; for
        `blocked`, not one round after settling got through."""

        def settled() -> list[str] | None:
            seen = self.since_settled(pod, check)
            leaked = outcome == "blocked" and "ok" in seen
            return seen if leaked or (len(seen) >= 3 and seen[-3:] == [outcome] * 3) else None

        seen = wait_until(settled, timeout=60, what=f"{pod}: {check} {outcome}", interval=0.5)
        if outcome == "blocked":
            assert "ok" not in seen, f"{pod}: {check} got through after settling: {seen}"

    def claim(self, pod: str, agent: str) -> None:
        """Claim ``pod`` for a session of ``agent`` with the operator's own patch, read and
        tried again while the kubelet's status updates move its version on."""

        def claimed() -> bool:
            patch = claim_patch(self.pod(pod), f"sesn_{pod}", agent, self.session_owner)
            with self.node.client() as client:
                response = client.patch(
                    f"/api/v1/namespaces/{self.namespace}/pods/{pod}",
                    content=json.dumps(patch),
                    headers={"Content-Type": "application/json-patch+json"},
                )
            if response.status_code in (409, 422):  # the version test failed
                return False
            response.raise_for_status()
            return True

        wait_until(claimed, timeout=30, what=f"claim of {pod}", interval=0.1)

    def pod(self, name: str) -> dict[str, Any]:
        return self.node.kubectl_json("GET", f"/api/v1/namespaces/{self.namespace}/pods/{name}")


def _ready(tenants: Tenants, names: list[str]) -> None:
    def all_ready() -> bool:
        for name in names:
            conditions = tenants.pod(name).get("status", {}).get("conditions", [])
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
        return True

    wait_until(all_ready, timeout=180, what=f"pods {names} Ready", interval=0.5)


SANDBOX_CHECKS = (
    "proxy-alpha-service",
    "proxy-alpha-pod",
    "proxy-beta-service",
    "proxy-beta-pod",
    "metrics-beta",
    "sandbox-beta",
    "sandbox-alpha-other",
    "dns-outside",
    "dns-cluster",
    "dns-cluster-resolver",
    "dns-coredns-pod",
    "package-proxy",
)
PACKAGE_PROXY_LABELS = (("test.paddock.dev/app", "package-proxy"),)


def _sandbox_checks(t: Tenants) -> dict[str, str]:
    a = t.address
    return {
        "proxy-alpha-service": _http(a["alpha-proxy"], render.EGRESS_PORT),
        "proxy-alpha-pod": _http(a["harness-alpha"], render.EGRESS_PORT),
        "proxy-beta-service": _http(a["beta-proxy"], render.EGRESS_PORT),
        "proxy-beta-pod": _http(a["harness-beta"], render.EGRESS_PORT),
        "metrics-beta": _http(a["harness-beta"], render.METRICS_PORT),
        "sandbox-beta": _http(a["sandbox-beta-quiet"], render.SANDBOX_PORT),
        "sandbox-alpha-other": _http(a["sandbox-alpha-narrow"], render.SANDBOX_PORT),
        "dns-outside": _dns("paddock-exfil-probe.example.com"),
        "dns-cluster": _dns(CLUSTER_NAME),
        "dns-cluster-resolver": _dns(CLUSTER_NAME, t.node.dns_ip),
        "dns-coredns-pod": _dns(CLUSTER_NAME, a["coredns"]),
        "package-proxy": _http(a["package-proxy"], render.EGRESS_PORT),
    }


HARNESS_TARGETS = ("alpha-quiet", "alpha-narrow", "beta-quiet", "warm", "claimable")


@pytest.fixture(scope="module")
def tenants(local_node: LocalNode) -> Iterator[Tenants]:
    namespace = f"sandbox-net-{next(_names)}-{int(time.time() * 1000) % 100000}"
    node = local_node
    node.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    t = Tenants(node, namespace)
    try:
        _start(t)
        yield t
    finally:
        with node.client() as client:
            client.delete(f"/api/v1/namespaces/{namespace}")


def _start(t: Tenants) -> None:
    node, namespace = t.node, t.namespace
    agents = {name: _agent(name, namespace) for name in AGENTS}
    environments = {name: _environment(name, namespace) for name in MODES}
    for agent in agents.values():
        for manifest in (
            render.harness_network_policy(agent, SETTINGS),
            render.sandbox_access_policy(agent),
        ):
            node.apply(_unowned(manifest))
        service = node.apply(_unowned(render.proxy_service(agent)))
        t.address[service["metadata"]["name"]] = service["spec"]["clusterIP"]
    for environment in environments.values():
        node.apply(_unowned(render.sandbox_network_policy(environment)))
    # The package proxy (httpd in its place) and the policy that lets `narrow`'s installing
    # sandboxes reach it.
    packages = dataclasses.replace(
        SETTINGS,
        package_proxy_url=f"http://package-proxy.{namespace}.svc:{render.EGRESS_PORT}",
        package_proxy_namespace=namespace,
        package_proxy_labels=PACKAGE_PROXY_LABELS,
    )
    node.apply(_unowned(render.sandbox_package_policy(environments["narrow"], packages)))
    service = node.apply(
        _service("package-proxy", namespace, dict(PACKAGE_PROXY_LABELS), render.EGRESS_PORT)
    )
    t.address["package-proxy"] = service["spec"]["clusterIP"]
    package_proxy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "package-proxy",
            "namespace": namespace,
            "labels": dict(PACKAGE_PROXY_LABELS),
        },
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "proxy"}]},
    }
    node.apply(
        _busybox(
            package_proxy,
            _httpd("/tmp/www", render.EGRESS_PORT, "packages") + " && sleep 100000",
        )
    )
    pool_owner, t.session_owner = _stand_in(t, "environment"), _stand_in(t, "session")
    # Sandboxes are reached through Services of the test's own (their addresses are known
    # before any pod starts, so every pod's loop can name them).
    for target in HARNESS_TARGETS:
        service = node.apply(
            _service(f"sandbox-{target}", namespace, {TARGET: target}, render.SANDBOX_PORT)
        )
        t.address[f"sandbox-{target}"] = service["spec"]["clusterIP"]
    coredns = node.kubectl_json(
        "GET", "/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-dns"
    )
    t.address["coredns"] = coredns["items"][0]["status"]["podIP"]

    # The harness pods: the proxy's and metrics' ports served, the Agent's sandboxes called.
    harness_checks = {
        f"sandbox-{target}": _http(t.address[f"sandbox-{target}"], render.SANDBOX_PORT)
        for target in HARNESS_TARGETS
    }
    for name, agent in agents.items():
        serve = " && ".join(
            _httpd("/tmp/www", port, f"{name}-{port}")
            for port in (render.EGRESS_PORT, render.METRICS_PORT)
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"harness-{name}",
                "namespace": namespace,
                "labels": {**render.L.MANAGED_BY, **render.harness_labels(agent)},
            },
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "containers": [
                    {
                        "name": "harness",
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": render.EGRESS_PORT},
                            "periodSeconds": 1,
                        },
                    }
                ],
            },
        }
        node.apply(_busybox(pod, _loop(harness_checks, serve)))
    _ready(t, [f"harness-{name}" for name in AGENTS])
    for name in AGENTS:
        t.address[f"harness-{name}"] = t.pod(f"harness-{name}")["status"]["podIP"]

    # The sandboxes: each environment's sandbox claimed for alpha, quiet's for beta too,
    # and two warm ones (one stays warm, one a test claims).
    checks = _sandbox_checks(t)
    sandboxes: dict[str, tuple[str, str | None]] = {
        "alpha-quiet": ("quiet", "alpha"),
        "alpha-narrow": ("narrow", "alpha"),
        "alpha-wide": ("wide", "alpha"),
        "beta-quiet": ("quiet", "beta"),
        "warm": ("quiet", None),
        "claimable": ("quiet", None),
        "installing": ("narrow", None),
    }
    install = render.PackageInstall(f"http://{t.address['package-proxy']}:3128", "pkg-token")
    for target, (environment, claimed_by) in sandboxes.items():
        pod = render.sandbox_pod(
            environments[environment],
            f"sandbox-{target}",
            "token",
            install if target == "installing" else None,
        )
        _unowned(pod, pool_owner)
        pod["metadata"]["labels"][TARGET] = target
        workdir = environments[environment].spec.working_dir
        node.apply(
            _busybox(pod, _loop(checks, _httpd(f"{workdir}/www", render.SANDBOX_PORT, target)))
        )
        if claimed_by is not None:
            t.claim(f"sandbox-{target}", claimed_by)
    # The control: a pod no policy selects, probing what the sandboxes probe.
    control = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "control", "namespace": namespace, "labels": {"app": "control"}},
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "control"}]},
    }
    node.apply(_busybox(control, _loop(checks, "true")))
    _ready(t, [f"sandbox-{target}" for target in sandboxes] + ["control"])

    # Settled: every target answers whoever its policy admits, and every pod is old enough
    # for its chains to be installed (it has seen its own allowed traffic through).
    positive = [
        ("sandbox-alpha-quiet", "proxy-alpha-service"),
        ("sandbox-alpha-quiet", "proxy-alpha-pod"),
        ("sandbox-beta-quiet", "proxy-beta-service"),
        ("sandbox-beta-quiet", "proxy-beta-pod"),
        ("control", "metrics-beta"),
        ("control", "dns-outside"),
        ("control", "dns-cluster"),
        ("control", "dns-cluster-resolver"),
        ("control", "dns-coredns-pod"),
        ("sandbox-alpha-wide", "dns-cluster"),
        ("harness-alpha", "sandbox-alpha-quiet"),
        ("harness-alpha", "sandbox-alpha-narrow"),
        ("harness-beta", "sandbox-beta-quiet"),
        ("control", "package-proxy"),
        ("sandbox-installing", "package-proxy"),
    ]
    for pod_name, check in positive:
        wait_until(
            lambda p=pod_name, c=check: t.outcomes(p, c)[-3:] == ["ok"] * 3,
            timeout=120,
            what=f"{pod_name}: {check} ok (the control)",
            interval=0.5,
        )
    for pod_name in [f"sandbox-{target}" for target in sandboxes] + ["control"]:
        for check in SANDBOX_CHECKS:
            t.marks[(pod_name, check)] = len(t.outcomes(pod_name, check))
    for name in AGENTS:
        for target in HARNESS_TARGETS:
            check = f"sandbox-{target}"
            t.marks[(f"harness-{name}", check)] = len(t.outcomes(f"harness-{name}", check))


# --- from inside a sandbox of alpha ----------------------------------------------------------


def test_a_sandbox_cannot_open_another_agents_proxy(tenants: Tenants) -> None:
    for check in ("proxy-beta-service", "proxy-beta-pod"):
        tenants.expect("sandbox-alpha-quiet", check, "blocked")
        tenants.expect("sandbox-beta-quiet", check, "ok")  # beta's own sandbox gets in


def test_a_sandbox_cannot_open_another_agents_harness_port(tenants: Tenants) -> None:
    tenants.expect("sandbox-alpha-quiet", "metrics-beta", "blocked")
    tenants.expect("control", "metrics-beta", "ok")


def test_a_sandbox_cannot_open_another_agents_sandbox(tenants: Tenants) -> None:
    tenants.expect("sandbox-alpha-quiet", "sandbox-beta", "blocked")
    tenants.expect("harness-beta", "sandbox-beta-quiet", "ok")


def test_a_sandbox_cannot_open_another_sandbox_of_its_own_agent(tenants: Tenants) -> None:
    tenants.expect("sandbox-alpha-quiet", "sandbox-alpha-other", "blocked")
    tenants.expect("harness-alpha", "sandbox-alpha-narrow", "ok")


def test_a_sandbox_reaches_its_own_agents_proxy(tenants: Tenants) -> None:
    for environment in ("quiet", "narrow", "wide"):
        for check in ("proxy-alpha-service", "proxy-alpha-pod"):
            tenants.expect(f"sandbox-alpha-{environment}", check, "ok")


@pytest.mark.parametrize("environment", ["quiet", "narrow"], ids=["none", "limited"])
@pytest.mark.parametrize(
    "check", ["dns-outside", "dns-cluster", "dns-cluster-resolver", "dns-coredns-pod"]
)
def test_dns_reaches_no_resolver_without_open_networking(
    tenants: Tenants, environment: str, check: str
) -> None:
    """Outside and cluster names, through the pod's resolver, the cluster resolver's Service
    address and CoreDNS's own pod address: no server answers (where `control` gets an answer
    from each)."""
    tenants.expect(f"sandbox-alpha-{environment}", check, "blocked")
    tenants.expect("control", check, "ok")


def test_an_open_sandbox_resolves_through_the_cluster_resolver(tenants: Tenants) -> None:
    """The channel `open` mode allows (docs/security-model.md): the cluster's DNS."""
    for check in ("dns-cluster", "dns-cluster-resolver", "dns-outside"):
        tenants.expect("sandbox-alpha-wide", check, "ok")


# --- the harness side ------------------------------------------------------------------------


def test_only_the_claiming_agents_harness_reaches_a_sandbox(tenants: Tenants) -> None:
    tenants.expect("harness-alpha", "sandbox-alpha-quiet", "ok")
    tenants.expect("harness-beta", "sandbox-alpha-quiet", "blocked")
    tenants.expect("harness-beta", "sandbox-beta-quiet", "ok")
    tenants.expect("harness-alpha", "sandbox-beta-quiet", "blocked")


def test_a_warm_sandbox_admits_no_harness_and_reaches_no_proxy(tenants: Tenants) -> None:
    for name in AGENTS:
        tenants.expect(f"harness-{name}", "sandbox-warm", "blocked")
    for check in ("proxy-alpha-service", "proxy-alpha-pod", "proxy-beta-service"):
        tenants.expect("sandbox-warm", check, "blocked")
    tenants.expect("sandbox-warm", "dns-cluster-resolver", "blocked")


def test_a_claim_admits_the_agents_harness_and_opens_its_proxy(tenants: Tenants) -> None:
    tenants.expect("harness-alpha", "sandbox-claimable", "blocked")
    before = len(tenants.outcomes("harness-alpha", "sandbox-claimable"))
    tenants.claim("sandbox-claimable", "alpha")
    claimed = time.monotonic()
    wait_until(
        lambda: "ok" in tenants.outcomes("harness-alpha", "sandbox-claimable")[before:],
        timeout=30,
        what="alpha's harness to reach the sandbox claimed for it",
        interval=0.2,
    )
    print(f"claim -> alpha's harness through: {time.monotonic() - claimed:.2f} s (0.5 s rounds)")
    tenants.marks[("harness-beta", "sandbox-claimable")] = len(
        tenants.outcomes("harness-beta", "sandbox-claimable")
    )
    tenants.marks[("sandbox-claimable", "proxy-alpha-pod")] = len(
        tenants.outcomes("sandbox-claimable", "proxy-alpha-pod")
    )
    tenants.expect("harness-alpha", "sandbox-claimable", "ok")
    tenants.expect("sandbox-claimable", "proxy-alpha-pod", "ok")
    tenants.expect("harness-beta", "sandbox-claimable", "blocked")
    tenants.expect("sandbox-claimable", "proxy-beta-pod", "blocked")


# --- Environment packages --------------------------------------------------------------------


def test_only_an_installing_sandbox_reaches_the_package_proxy(tenants: Tenants) -> None:
    tenants.expect("sandbox-installing", "package-proxy", "ok")
    tenants.expect("control", "package-proxy", "ok")
    # The same Environment's claimed sandbox (not labelled to install), and other ones.
    for pod in ("sandbox-alpha-narrow", "sandbox-warm", "sandbox-alpha-quiet"):
        tenants.expect(pod, "package-proxy", "blocked")


def test_the_claim_ends_a_sandboxs_way_to_the_package_proxy(tenants: Tenants) -> None:
    tenants.claim("sandbox-installing", "alpha")
    assert "paddock.dev/packages" not in tenants.pod("sandbox-installing")["metadata"]["labels"]
    wait_until(
        lambda: tenants.outcomes("sandbox-installing", "package-proxy")[-3:] == ["blocked"] * 3,
        timeout=30,
        what="the claimed sandbox to lose the package proxy",
        interval=0.5,
    )
    for check in ("package-proxy", "proxy-alpha-pod"):
        tenants.marks[("sandbox-installing", check)] = len(
            tenants.outcomes("sandbox-installing", check)
        )
    tenants.expect("sandbox-installing", "package-proxy", "blocked")
    tenants.expect("sandbox-installing", "proxy-alpha-pod", "ok")
