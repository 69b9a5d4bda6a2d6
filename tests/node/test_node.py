"""What the one-node cluster proves: pods run in real containers (containerd + runc) on a real
kubelet, talk over the pod network and through a ClusterIP Service found by CoreDNS,
NetworkPolicies are enforced (kube-router), a restricted security context holds inside the
container, and deleting a pod stops its container."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from paddock.testing.node import LocalNode
from paddock.testing.ociimage import BUSYBOX_IMAGE
from paddock.testing.ports import wait_until

_names = itertools.count()
# Requests are bounded with `timeout N wget`: Debian's busybox 1.35 wget crashes on its own -T.


def _namespace(node: LocalNode) -> str:
    name = f"node-test-{next(_names)}-{int(time.time() * 1000) % 100000}"
    node.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_until(
        lambda: _get(node, f"/api/v1/namespaces/{name}/serviceaccounts/default") is not None,
        timeout=60,
        what=f"ServiceAccount default in {name}",
    )
    return name


def _get(node: LocalNode, path: str) -> dict[str, Any] | None:
    with node.client() as client:
        response = client.get(path)
    return response.json() if response.status_code == 200 else None


def _pod(
    name: str,
    namespace: str,
    script: str,
    *,
    labels: dict[str, str] | None = None,
    restart: str = "Never",
    ready_port: int | None = None,
    security: dict[str, Any] | None = None,
    pod_security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
    }
    if ready_port is not None:
        container["readinessProbe"] = {"tcpSocket": {"port": ready_port}, "periodSeconds": 1}
    if security is not None:
        container["securityContext"] = security
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "containers": [container],
    }
    if pod_security is not None:
        spec["securityContext"] = pod_security
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
    }


def _wait_ready(node: LocalNode, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"

    def ready() -> bool:
        pod = _get(node, path) or {}
        conditions = pod.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_until(ready, timeout=timeout, what=f"pod {namespace}/{name} Ready", interval=0.2)
    pod = _get(node, path)
    assert pod is not None
    return pod


def _run_to_end(
    node: LocalNode, namespace: str, name: str, script: str, **kwargs: Any
) -> tuple[bool, str]:
    """Run ``script`` in a new pod; whether it exited 0, and its output."""
    node.apply(_pod(name, namespace, script, **kwargs))
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"

    def finished() -> bool:
        phase = (_get(node, path) or {}).get("status", {}).get("phase")
        return phase in {"Succeeded", "Failed"}

    wait_until(finished, timeout=120, what=f"pod {namespace}/{name} to finish", interval=0.2)
    pod = _get(node, path) or {}
    with node.client() as client:
        log = client.get(f"{path}/log").text
    return pod["status"]["phase"] == "Succeeded", log


def _web_server(node: LocalNode, namespace: str) -> str:
    """An httpd pod labelled app=web behind Service `web` (port 80); its pod IP."""
    script = "mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    node.apply(
        _pod("web", namespace, script, labels={"app": "web"}, restart="Always", ready_port=8080)
    )
    node.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )
    pod = _wait_ready(node, namespace, "web")
    return str(pod["status"]["podIP"])


def test_a_pod_runs_in_a_real_container_and_reaches_ready(local_node: LocalNode) -> None:
    namespace = _namespace(local_node)
    script = "echo up > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"
    local_node.apply(_pod("ready", namespace, script, restart="Always", ready_port=8080))
    pod = _wait_ready(local_node, namespace, "ready")
    status = pod["status"]["containerStatuses"][0]
    assert status["containerID"].startswith("containerd://")
    assert "running" in status["state"]
    assert pod["status"]["podIP"].startswith("10.250.0.")


def test_two_pods_talk_over_the_pod_network_and_a_service_found_by_coredns(
    local_node: LocalNode,
) -> None:
    namespace = _namespace(local_node)
    web_ip = _web_server(local_node, namespace)
    service = f"web.{namespace}.svc.cluster.local"
    script = (
        f"set -e; timeout 5 wget -q -O- http://{web_ip}:8080/; "
        f"nslookup {service}; "
        f"ip=$(nslookup {service} | awk '/^Address/ {{a=$NF}} END {{print a}}'); "
        'echo "service-ip=$ip"; '
        # The service proxy programs a new Service's address a moment after its endpoints
        # are ready: until then it answers "no route". Try for up to 20 s.
        'for i in $(seq 20); do timeout 5 wget -q -O- "http://$ip/" && exit 0; sleep 1; done; '
        "exit 1"
    )
    ok, log = _run_to_end(local_node, namespace, "client", script)
    assert ok, log
    assert log.count("hello-from-web") == 2, log
    service_ip = re.search(r"service-ip=(\S+)", log)
    assert service_ip is not None, log
    cluster_ip = (_get(local_node, f"/api/v1/namespaces/{namespace}/services/web") or {})["spec"][
        "clusterIP"
    ]
    assert service_ip.group(1) == cluster_ip


def _deny(namespace: str, name: str, selector: dict[str, str], types: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": types},
    }


def _prober(node: LocalNode, namespace: str, name: str, checks: dict[str, str]) -> None:
    """A long-lived pod labelled app=client that runs each check (a shell command) in a loop
    and logs `<check> ok` or `<check> blocked`. One pod for the whole test: kube-router
    installs a new pod's firewall chains shortly after the pod starts, so a fresh pod per
    request could race the policy."""
    rounds = "; ".join(
        f"if {command} >/dev/null 2>&1; then echo '{check} ok'; else echo '{check} blocked'; fi"
        for check, command in checks.items()
    )
    script = f"while true; do {rounds}; sleep 0.5; done"
    node.apply(_pod(name, namespace, script, labels={"app": "client"}, restart="Always"))
    _wait_ready(node, namespace, name)


def _outcomes(node: LocalNode, namespace: str, name: str, check: str, last: int) -> list[str]:
    with node.client() as client:
        log = client.get(f"/api/v1/namespaces/{namespace}/pods/{name}/log").text
    return re.findall(rf"^{re.escape(check)} (ok|blocked)$", log, flags=re.M)[-last:]


def _wait_outcome(
    node: LocalNode, namespace: str, name: str, check: str, outcome: str, what: str
) -> None:
    """Wait until the prober's last three rounds of ``check`` all gave ``outcome``."""
    wait_until(
        lambda: _outcomes(node, namespace, name, check, 3) == [outcome] * 3,
        timeout=90,
        what=what,
        interval=0.5,
    )


def _policy_path(namespace: str, name: str = "") -> str:
    base = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    return f"{base}/{name}" if name else base


@pytest.mark.parametrize("direction", ["Ingress", "Egress"])
def test_a_default_deny_network_policy_blocks_what_succeeds_without_it(
    local_node: LocalNode, direction: str
) -> None:
    namespace = _namespace(local_node)
    web_ip = _web_server(local_node, namespace)
    _prober(
        local_node, namespace, "client", {"web": f"timeout 3 wget -q -O- http://{web_ip}:8080/"}
    )
    # Control: without a policy the same request from the same pod succeeds.
    _wait_outcome(local_node, namespace, "client", "web", "ok", "the control request")
    # Ingress: the server denies all ingress. Egress: the client denies all egress.
    selector = {"app": "web"} if direction == "Ingress" else {"app": "client"}
    name = f"deny-{direction.lower()}"
    local_node.apply(_deny(namespace, name, selector, [direction]))
    _wait_outcome(local_node, namespace, "client", "web", "blocked", f"{direction} denied")
    # And it is the policy: without it the request goes through again.
    with local_node.client() as client:
        client.delete(_policy_path(namespace, name)).raise_for_status()
    _wait_outcome(local_node, namespace, "client", "web", "ok", "the policy lifted")


def test_a_default_deny_of_both_directions_blocks_pod_and_dns_traffic(
    local_node: LocalNode,
) -> None:
    namespace = _namespace(local_node)
    web_ip = _web_server(local_node, namespace)
    checks = {
        "web": f"timeout 3 wget -q -O- http://{web_ip}:8080/",
        "dns": "nslookup -timeout=2 kubernetes.default.svc.cluster.local",
    }
    _prober(local_node, namespace, "client", checks)
    for check in checks:
        _wait_outcome(local_node, namespace, "client", check, "ok", f"control {check}")
    local_node.apply(_deny(namespace, "default-deny", {}, ["Ingress", "Egress"]))
    for check in checks:
        _wait_outcome(local_node, namespace, "client", check, "blocked", f"{check} denied")


def test_a_restricted_pod_runs_with_the_security_context_it_asked_for(
    local_node: LocalNode,
) -> None:
    namespace = _namespace(local_node)
    script = (
        "id; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; "
        "if touch /rootfs-probe 2>/dev/null; then echo root-writable; else echo root-read-only; fi"
    )
    ok, log = _run_to_end(
        local_node,
        namespace,
        "restricted",
        script,
        pod_security={
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        security={
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    )
    assert ok, log
    assert "uid=65534(nobody) gid=65534(nogroup)" in log, log
    status = dict(re.findall(r"^(\w+):\s+(\S+)$", log, flags=re.M))
    assert status["CapEff"] == "0000000000000000", log
    assert status["CapPrm"] == "0000000000000000", log
    assert status["CapBnd"] == "0000000000000000", log
    assert status["NoNewPrivs"] == "1", log
    assert status["Seccomp"] == "2", log  # 2 = filter mode: the RuntimeDefault profile
    assert "root-read-only" in log, log


def _task_pid(node: LocalNode, container_id: str) -> int | None:
    result = subprocess.run(
        ["ctr", "--address", str(node.socket), "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in result.stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == container_id and fields[2] == "RUNNING":
            return int(fields[1])
    return None


def test_deleting_a_pod_stops_its_container(local_node: LocalNode) -> None:
    namespace = _namespace(local_node)
    script = "echo up > /tmp/i && exec httpd -f -p 8080 -h /tmp"
    local_node.apply(_pod("doomed", namespace, script, restart="Always", ready_port=8080))
    pod = _wait_ready(local_node, namespace, "doomed")
    container_id = pod["status"]["containerStatuses"][0]["containerID"].removeprefix(
        "containerd://"
    )
    pid = _task_pid(local_node, container_id)
    assert pid is not None
    assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"httpd")
    with local_node.client() as client:
        client.delete(f"/api/v1/namespaces/{namespace}/pods/doomed")
    wait_until(
        lambda: _task_pid(local_node, container_id) is None and not Path(f"/proc/{pid}").exists(),
        timeout=60,
        what="the container to stop",
        interval=0.2,
    )
    wait_until(
        lambda: _get(local_node, f"/api/v1/namespaces/{namespace}/pods/doomed") is None,
        timeout=60,
        what="the pod to be gone",
    )
