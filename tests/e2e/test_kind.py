"""End to end on a real cluster whose network enforces NetworkPolicy, one suite over two
providers (the `cluster` fixture's parameters):

- `kind`: `hack/kind-up.sh` brings a kind cluster up with Calico (or checks it and upgrades
  the release: it is idempotent). Needs a Docker engine; skipped elsewhere, before anything
  is started. kind and kubectl come from PATH or are built from `hack/kind/go.mod`. The
  cluster is `PADDOCK_KIND_CLUSTER` (default `paddock`), left running when it existed before
  the run; one this run created is deleted unless `--keep-cluster` is given.
- `node`: the one-node cluster on this machine (`paddock.testing.node`: kubelet, containerd +
  runc, kube-proxy, kube-router), the chart installed by `paddock.testing.cluster.install`
  as `make cluster` does. Skipped only where the kernel refuses containers (tried with runc).

Both use the scripted model unless ANTHROPIC_API_KEY is set. Then, in a fresh namespace: the
example Agent and Session run to `end_turn`; the sandbox reaches an allowlisted host only
through the credential proxy, is refused any other, and cannot connect anywhere directly
(the Kubernetes API, Redis, the harness pods' ports but the proxy's, the metadata address),
where a control pod without the policies can; nothing inside the sandbox holds a secret, nor
the API key inside the harness container; the security context holds from inside; a sandbox
or the harness pods killed mid-session, `helm upgrade` and `helm uninstall` lose nothing and
leave nothing.

    pytest -m kind tests/e2e                 # both providers
    pytest tests/e2e/test_kind.py -k node    # the one-node cluster only
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from paddock.testing.ports import wait_until

pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("PADDOCK_KIND_CLUSTER", "paddock")
RELEASE = os.environ.get("PADDOCK_RELEASE", "paddock")
RELEASE_NAMESPACE = os.environ.get("PADDOCK_NAMESPACE", "paddock-system")
USER_NAMESPACE = os.environ.get("PADDOCK_KIND_NAMESPACE", "default")
SESSION = "hello-1"  # examples/hello-session.yaml
AGENT = "hello"  # examples/hello-agent.yaml
ALLOWED_URL = "https://pypi.org/simple/"  # in the example Environment's allowlist
REFUSED_URL = "https://example.com/"  # not in it


# --- what must be there before anything starts ----------------------------------------


def docker_engine_problem() -> str | None:
    """Why there is no usable Docker engine, or None. The CLI alone is not enough."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker CLI on PATH"
    try:
        result = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if result.returncode != 0 or not result.stdout.strip():
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        return f"no Docker engine answers `docker info` ({said[-1] if said else 'no output'})"
    return None


def kind_tools() -> tuple[str, str]:
    """kind and kubectl: from PATH, else built from hack/kind/go.mod (once, cached)."""
    kind, kubectl = shutil.which("kind"), shutil.which("kubectl")
    if kind and kubectl:
        return kind, kubectl
    if shutil.which("go") is None:
        pytest.skip("kind end-to-end tests: kind or kubectl is not on PATH and there is no go")
    built = subprocess.run(
        ["bash", str(ROOT / "hack/kind/build.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    return kind or f"{built}/kind", kubectl or f"{built}/kubectl"


# --- the cluster ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kind_cluster_up(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The kind cluster with Paddock installed by hack/kind-up.sh, as a pytest-kind
    KindCluster (kubectl with the cluster's kubeconfig)."""
    problem = docker_engine_problem()
    if problem:
        pytest.skip(f"kind end-to-end tests need a Docker engine: {problem}")
    from pytest_kind import KindCluster  # only where it will be used

    kind, kubectl = kind_tools()
    clusters = subprocess.run([kind, "get", "clusters"], capture_output=True, text=True).stdout
    existed = CLUSTER in clusters.split()
    keep = existed or request.config.getoption("keep_cluster", default=False)

    def delete() -> None:
        if not keep:
            subprocess.run([kind, "delete", "cluster", "--name", CLUSTER], check=False)

    env = {**os.environ, "PADDOCK_KIND_CLUSTER": CLUSTER, "KIND": kind, "KUBECTL": kubectl}
    try:
        # Its output is captured by pytest (shown when it fails) or live with -s.
        subprocess.run(["bash", str(ROOT / "hack/kind-up.sh")], cwd=ROOT, env=env, check=True)
        workdir = tmp_path_factory.mktemp("kind")
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            subprocess.run(
                [kind, "get", "kubeconfig", "--name", CLUSTER],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        # KindCluster keeps a working folder under the current directory: not the repo's.
        with contextlib.chdir(workdir):
            cluster = KindCluster(
                CLUSTER, kubeconfig=kubeconfig, kind_path=Path(kind), kubectl_path=Path(kubectl)
            )
    except BaseException:
        delete()
        raise
    yield cluster
    delete()


@pytest.fixture(scope="module", params=["kind", "node"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The cluster the module's tests run on, one provider per parameter: kind (where a
    Docker engine answers) or the one-node cluster on this machine (paddock.testing.node,
    with the chart installed by paddock.testing.cluster.install; where the kernel runs
    containers). Both offer `kubectl(*args, input=)`, `kubectl_path` and `kubeconfig_path`."""
    if request.param == "kind":
        yield request.getfixturevalue("kind_cluster_up")
        return
    from paddock.testing.cluster import install, uninstall

    node = request.getfixturevalue("local_node")
    installation = install(node)
    try:
        yield installation
    finally:
        uninstall(installation)


def kubectl_json(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json"))


def wait_for(
    what: str,
    probe: Callable[[], Any],
    timeout: float = 300,
    diagnose: Callable[[], str] | None = None,
) -> Any:
    """`wait_until`, every 0.5 s (a probe is a kubectl call or two: polling faster buys
    nothing, slower adds a second a wait); fails with `what` and `diagnose()`."""
    try:
        return wait_until(probe, timeout=timeout, what=what, interval=0.5)
    except TimeoutError as exc:
        pytest.fail(f"{exc}" + (f"\n{diagnose()}" if diagnose else ""))


@contextlib.contextmanager
def port_forward(cluster: Any, namespace: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` to a free local port; yields http://127.0.0.1:<port>.
    (Through the kubelet into the pod's network namespace: NetworkPolicy does not apply.)"""
    process = subprocess.Popen(
        [str(cluster.kubectl_path), "-n", namespace, "port-forward", target, f":{port}"],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        said = []
        for line in process.stdout:  # "Forwarding from 127.0.0.1:43127 -> 8080"
            said.append(line)
            found = re.search(r"127\.0\.0\.1:(\d+)", line)
            if found:
                break
        else:
            pytest.fail(f"kubectl port-forward {target} failed: {''.join(said)}")
        # It goes on printing a line per connection: drain them so that it never blocks.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        process.kill()
        process.wait()


# --- the examples in a namespace of their own --------------------------------------------


@dataclass
class Stack:
    cluster: Any
    namespace: str
    scripted: bool
    """The cluster's proxies talk to the in-cluster scripted model, not the Claude API."""
    anthropic_key: str
    gateway_key: str

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input)

    def session(self) -> dict[str, Any]:
        return kubectl_json(self.cluster, "-n", self.namespace, "get", "session", SESSION)

    def diagnose(self) -> str:
        """What a failing test prints: the session, the pods, events, harness logs."""
        parts = []
        for title, args in (
            ("session", ("get", "session", SESSION, "-o", "yaml")),
            ("pods", ("get", "pods", "-o", "wide")),
            ("events", ("get", "events", "--sort-by=.lastTimestamp")),
            (
                "harness logs",
                ("logs", "-l", "paddock.dev/component=harness", "--all-containers", "--tail=40"),
            ),
        ):
            try:
                parts.append(f"--- {title}\n{self.kubectl(*args)}")
            except subprocess.CalledProcessError as exc:
                parts.append(f"--- {title}: kubectl failed ({exc})")
        return "\n".join(parts)[-20_000:]

    def paddock(self, gateway: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The `paddock` CLI against the gateway at `gateway`."""
        command, *rest = args
        options = ["--url", gateway, "--api-key", self.gateway_key]
        return subprocess.run(
            [sys.executable, "-m", "paddock.cli", command, *options, *rest],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NO_COLOR": "1"},
        )


def uses_scripted_model(cluster: Any) -> bool:
    operators = kubectl_json(
        cluster,
        "-n",
        RELEASE_NAMESPACE,
        "get",
        "deployments",
        "-l",
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator",
    )["items"]
    assert operators, f"no operator Deployment of release {RELEASE} in {RELEASE_NAMESPACE}"
    env = operators[0]["spec"]["template"]["spec"]["containers"][0].get("env", [])
    url = next((e.get("value", "") for e in env if e["name"] == "PADDOCK_ANTHROPIC_URL"), "")
    return "paddock-fakemodel" in url


@pytest.fixture(scope="module")
def stack(cluster: Any) -> Iterator[Stack]:
    """A fresh namespace with the `anthropic` Secret (copied from the one the installer
    made), a gateway API key for it, and examples/hello-agent.yaml + hello-session.yaml."""
    namespace = f"paddock-e2e-{secrets.token_hex(3)}"
    scripted = uses_scripted_model(cluster)
    source = kubectl_json(cluster, "-n", USER_NAMESPACE, "get", "secret", "anthropic")
    anthropic_key = base64.b64decode(source["data"]["api-key"]).decode()
    gateway_key = f"sk-paddock-e2e-{secrets.token_hex(24)}"
    key_secret = f"e2e-{namespace}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        manifests = ["create", "secret", "generic", "anthropic", "--from-file=api-key=/dev/stdin"]
        cluster.kubectl("-n", namespace, *manifests, input=anthropic_key)
        if scripted:
            # The operator keeps harness pods off private addresses; this opens the in-cluster
            # scripted model to them (what kind-up.sh does in its own namespace).
            cluster.kubectl(
                "-n", namespace, "apply", "-f", str(ROOT / "hack/kind/fakemodel-egress.yaml")
            )
        cluster.kubectl(
            "-n",
            RELEASE_NAMESPACE,
            "create",
            "secret",
            "generic",
            key_secret,
            f"--from-literal=namespace={namespace}",
            "--from-file=api-key=/dev/stdin",
            input=gateway_key,
        )
        cluster.kubectl(
            "-n", RELEASE_NAMESPACE, "label", "secret", key_secret, "paddock.dev/api-key=true"
        )
        cluster.kubectl(
            "-n",
            namespace,
            "apply",
            "-f",
            str(ROOT / "examples/hello-agent.yaml"),
            "-f",
            str(ROOT / "examples/hello-session.yaml"),
        )
        yield Stack(cluster, namespace, scripted, anthropic_key, gateway_key)
    finally:
        cluster.kubectl(
            "-n", RELEASE_NAMESPACE, "delete", "secret", key_secret, "--ignore-not-found"
        )
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def gateway_service_of(stack: Stack) -> dict[str, Any]:
    services = kubectl_json(
        stack.cluster,
        "-n",
        RELEASE_NAMESPACE,
        "get",
        "services",
        "-l",
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=gateway",
    )["items"]
    api = [s for s in services if not s["metadata"]["name"].endswith("-metrics")]
    assert api, f"no gateway Service of release {RELEASE} in {RELEASE_NAMESPACE}"
    return api[0]


def gateway(stack: Stack) -> contextlib.AbstractContextManager[str]:
    """The gateway, port-forwarded: its base URL."""
    service = gateway_service_of(stack)
    port = service["spec"]["ports"][0]["port"]
    return port_forward(
        stack.cluster, RELEASE_NAMESPACE, f"svc/{service['metadata']['name']}", port
    )


@pytest.fixture(scope="module")
def finished(stack: Stack) -> dict[str, Any]:
    """The example session driven to the end of its turn: whenever it stops for a tool
    confirmation (a tool with `permissionPolicy: always_ask`), `paddock approve` allows it."""

    def idle() -> dict[str, Any] | None:
        session = stack.session()
        status = session.get("status") or {}
        stopped = status.get("phase") == "Idle" and status.get("stopReason")
        return session if stopped or status.get("phase") == "Terminated" else None

    with gateway(stack) as url:
        for _ in range(10):
            session = wait_for(
                f"session {SESSION} to stop", idle, timeout=600, diagnose=stack.diagnose
            )
            status = session["status"]
            if status.get("stopReason") != "requires_action":
                return session
            last_event = status.get("lastEventId")
            approved = stack.paddock(url, "approve", SESSION)
            assert approved.returncode == 0, approved.stdout + approved.stderr
            wait_for(
                "the approval to reach the session's status",
                lambda last=last_event: (
                    (stack.session().get("status") or {}).get("lastEventId") != last
                ),
                diagnose=stack.diagnose,
            )
        pytest.fail(f"session {SESSION} still waits for approval after 10 of them")


# --- the session --------------------------------------------------------------------------


def test_example_session_reaches_end_turn(stack: Stack, finished: dict[str, Any]) -> None:
    status = finished["status"]
    assert status["phase"] == "Idle", status
    assert status["stopReason"] == "end_turn", status
    assert status["sessionId"].startswith("sesn_")
    assert status["usage"]["outputTokens"] > 0
    assert status["sandbox"]["podName"], "the session's tool calls ran in no sandbox"
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    assert conditions.get("Ready") == "True", status.get("conditions")
    if stack.scripted:  # the demo script writes primes.py, runs it, reports its output
        with gateway(stack) as url:
            logs = stack.paddock(url, "logs", SESSION)
        assert logs.returncode == 0, logs.stderr
        assert "There are 25 primes below 100." in logs.stdout, logs.stdout


# --- the sandbox, as the model sees it -----------------------------------------------------


@dataclass
class Sandbox:
    pod: dict[str, Any]
    bash: Callable[[str], str]


@pytest.fixture(scope="module")
def bound_sandbox(stack: Stack, finished: dict[str, Any]) -> Iterator[Sandbox]:
    """The session's sandbox pod and its `bash` tool, called the way the harness calls it
    (with the pod's bearer token), after the session's tool calls bound it: its commands
    carry the session's proxy settings."""
    import httpx

    name = finished["status"]["sandbox"]["podName"]
    pod = kubectl_json(stack.cluster, "-n", stack.namespace, "get", "pod", name)
    token = pod["metadata"]["annotations"]["paddock.dev/sandbox-token"]
    with port_forward(stack.cluster, stack.namespace, f"pod/{name}", 8080) as url:
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )

        def bash(command: str) -> str:
            response = client.post(
                "/v1/tools/bash", json={"input": {"command": command, "timeout_ms": 90_000}}
            )
            response.raise_for_status()
            result = response.json()
            assert not result["is_error"], result
            return "".join(block["text"] for block in result["content"])

        yield Sandbox(pod, bash)
        client.close()


@pytest.fixture(scope="module")
def control(stack: Stack) -> Callable[[str], str]:
    """A pod of the sandbox image that no NetworkPolicy selects: what the sandbox could
    reach if the CNI did not enforce the operator's policies."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "control", "labels": {"app.kubernetes.io/name": "e2e-control"}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "control",
                    "image": f"paddock/sandbox:{chart_app_version()}",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "infinity"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    stack.cluster.kubectl("-n", stack.namespace, "apply", "-f", "-", input=json.dumps(pod))
    stack.kubectl("wait", "--for=condition=Ready", "pod/control", "--timeout=180s")
    return lambda command: stack.kubectl("exec", "control", "--", "bash", "-c", command)


def chart_app_version() -> str:
    tag = os.environ.get("PADDOCK_IMAGE_TAG")
    if tag:
        return tag
    chart = (ROOT / "charts/paddock/Chart.yaml").read_text()
    found = re.search(r'^appVersion:\s*"?([^"\s]+)"?', chart, re.MULTILINE)
    assert found, "no appVersion in charts/paddock/Chart.yaml"
    return found.group(1)


def curl(url: str, *, direct: bool) -> str:
    """A bash snippet printing `<curl exit code> <HTTP code> <CONNECT code>`; `direct`
    ignores the proxy settings."""
    flags = "--noproxy '*' " if direct else ""
    return (
        f"out=$(curl {flags}-k -sS -o /dev/null -m 8 "
        f"-w '%{{http_code}} %{{http_connect}}' '{url}' 2>/dev/null); echo \"$? $out\""
    )


def outcome(output: str) -> tuple[int, str, str]:
    exit_code, http_code, connect_code = output.strip().splitlines()[0].split()
    return int(exit_code), http_code, connect_code


def cluster_ip(stack: Stack, namespace: str, name: str) -> str:
    return kubectl_json(stack.cluster, "-n", namespace, "get", "service", name)["spec"]["clusterIP"]


def test_sandbox_is_bound_to_the_proxy(stack: Stack, bound_sandbox: Sandbox) -> None:
    env = bound_sandbox.bash("env")
    found = re.search(r"^HTTPS_PROXY=http://sesn_[^:]+:[^@]+@([^:]+):3128$", env, re.MULTILINE)
    assert found, env
    # By address: the sandbox has no resolver to look the Service's name up with.
    assert found.group(1) == cluster_ip(stack, stack.namespace, f"{AGENT}-proxy"), env


DNS_QUERY = (
    "import socket, sys\n"
    "q = bytes.fromhex('abcd01000001000000000000') + b''.join(\n"
    "    bytes([len(p)]) + p.encode() for p in sys.argv[2].split('.')) + bytes.fromhex('0000010001')\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
    "try:\n"
    "    s.sendto(q, (sys.argv[1], 53)); s.recv(512); print('answered')\n"
    "except OSError as e:\n"
    "    print('no answer', type(e).__name__)\n"
)
"""Sends one DNS query for argv[2] straight to the server argv[1] (no resolver involved)."""


def dns_query(server: str, name: str) -> str:
    return f"python3 -c {shlex.quote(DNS_QUERY)} {server} {name}"


def test_dns_lookups_from_a_limited_sandbox_reach_no_resolver(
    stack: Stack, bound_sandbox: Sandbox, control: Callable[[str], str]
) -> None:
    """The example Environment is `limited`: its sandbox's only nameserver is its own
    loopback, names outside and inside the cluster do not resolve, and a query sent straight
    to the cluster resolver gets no answer, where the control pod resolves and is answered."""
    dns_ip = cluster_ip(stack, "kube-system", "kube-dns")
    cluster_name = "kubernetes.default.svc.cluster.local"
    resolv = bound_sandbox.bash("cat /etc/resolv.conf")
    assert re.findall(r"^nameserver\s+(\S+)", resolv, re.MULTILINE) == ["127.0.0.1"], resolv
    assert control(f"getent hosts {cluster_name}").strip(), "the control resolves nothing"
    assert control(dns_query(dns_ip, "exfil-probe.example.com")).strip() == "answered"
    for name in (cluster_name, "pypi.org", "exfil-probe.example.com"):
        found = bound_sandbox.bash(f"getent hosts {name} || echo unresolved")
        assert first_line(found) == "unresolved", f"the sandbox resolved {name}: {found}"
    for name in (cluster_name, "exfil-probe.example.com"):
        answer = first_line(bound_sandbox.bash(dns_query(dns_ip, name)))
        assert answer.startswith("no answer"), f"the cluster resolver answered {name}: {answer}"


def proxy_audit(stack: Stack) -> list[dict[str, Any]]:
    """The audit lines of the Agent's proxies (any replica may have answered)."""
    logs = stack.kubectl(
        "logs",
        "-l",
        f"paddock.dev/agent={AGENT},paddock.dev/component=harness",
        "-c",
        "proxy",
        "--tail=-1",
    )
    lines = []
    for line in logs.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("listener") == "egress":
                lines.append(entry)
    return lines


def test_proxy_refuses_a_host_outside_the_allowlist(stack: Stack, bound_sandbox: Sandbox) -> None:
    verbose = bound_sandbox.bash(f"curl -sS -v -o /dev/null -m 20 '{REFUSED_URL}' 2>&1; true")
    assert re.search(r"^< HTTP/1\.[01] 403", verbose, re.MULTILINE), verbose
    assert re.search(r"^< x-paddock-rule: allowlist\s*$", verbose, re.MULTILINE | re.IGNORECASE)
    exit_code, _, connect = outcome(bound_sandbox.bash(curl(REFUSED_URL, direct=False)))
    assert (exit_code != 0, connect) == (True, "403")
    host = REFUSED_URL.split("/")[2]
    refusals = wait_for(
        f"the proxy's audit line for {host}",
        lambda: [e for e in proxy_audit(stack) if e.get("host") == host],
        timeout=60,
    )
    assert {(e["decision"], e["rule"]) for e in refusals} == {("deny", "allowlist")}, refusals


def test_proxy_lets_an_allowlisted_host_through(bound_sandbox: Sandbox) -> None:
    verbose = bound_sandbox.bash(f"curl -sS -v -o /dev/null -m 30 '{ALLOWED_URL}' 2>&1; true")
    rule = re.search(r"^< x-paddock-rule: (\S+)", verbose, re.MULTILINE | re.IGNORECASE)
    assert not (rule and rule.group(1) == "allowlist"), verbose
    exit_code, http_code, connect = outcome(bound_sandbox.bash(curl(ALLOWED_URL, direct=False)))
    if connect == "502":  # allowed by the policy, but the proxy found no way there
        pytest.skip(
            f"the proxy allowed {ALLOWED_URL} but cannot reach it from this cluster "
            f"(rule {rule.group(1) if rule else '?'}): no Internet access?"
        )
    assert (exit_code, connect) == (0, "200"), verbose
    assert http_code.startswith(("2", "3")), verbose


def test_sandbox_cannot_connect_anywhere_directly(
    stack: Stack, bound_sandbox: Sandbox, control: Callable[[str], str]
) -> None:
    """Without the proxy nothing answers the sandbox: not the gateway, the Kubernetes API,
    a harness pod's metrics port, the scripted model or the Internet, all of which the
    control pod (no policy selects it) reaches."""
    gateway_service = gateway_service_of(stack)["metadata"]["name"]
    harness = kubectl_json(
        stack.cluster,
        "-n",
        stack.namespace,
        "get",
        "pods",
        "-l",
        f"paddock.dev/agent={AGENT},paddock.dev/component=harness",
    )["items"]
    assert harness, "no harness pod"
    reachable = {
        "gateway": f"http://{cluster_ip(stack, RELEASE_NAMESPACE, gateway_service)}/healthz",
        "Kubernetes API": f"https://{cluster_ip(stack, 'default', 'kubernetes')}/version",
        "harness metrics": f"http://{harness[0]['status']['podIP']}:9090/metrics",
    }
    if stack.scripted:
        ip = cluster_ip(stack, "paddock-fakemodel", "paddock-fakemodel")
        reachable["scripted model"] = f"http://{ip}:8000/"
    for what, url in reachable.items():
        exit_code, http_code, _ = outcome(control(curl(url, direct=True)))
        assert (exit_code, http_code != "000") == (0, True), (
            f"the control pod cannot reach the {what} at {url} either (curl exit "
            f"{exit_code}), so the sandbox's failure would prove nothing"
        )
    for what, url in {**reachable, "Internet": ALLOWED_URL}.items():
        exit_code, http_code, _ = outcome(bound_sandbox.bash(curl(url, direct=True)))
        assert (exit_code != 0, http_code) == (True, "000"), (
            f"the sandbox reached the {what} at {url} without the proxy (HTTP {http_code})"
        )


# --- secrets --------------------------------------------------------------------------------


def test_no_secret_inside_the_sandbox(stack: Stack, bound_sandbox: Sandbox) -> None:
    spec = bound_sandbox.pod["spec"]
    assert spec.get("automountServiceAccountToken") is False
    volumes = spec.get("volumes", [])
    assert not [v for v in volumes if "secret" in v or "projected" in v], volumes
    for container in spec["containers"]:
        assert not container.get("envFrom"), container
        assert not [e for e in container.get("env", []) if "valueFrom" in e], container

    seen = bound_sandbox.bash(
        "echo '== env'; env; "
        "echo '== environ'; for f in /proc/[0-9]*/environ; do echo \"-- $f\"; "
        "tr '\\0' '\\n' < \"$f\" 2>&1; done; "
        "echo '== secrets'; ls -laR /var/run/secrets /run/secrets 2>&1; "
        "echo '== mounts'; cat /proc/self/mounts; true"
    )
    assert "== mounts" in seen, seen[-2000:]
    token_key = kubectl_json(
        stack.cluster, "-n", stack.namespace, "get", "secret", f"{AGENT}-proxy-token-key"
    )["data"]
    forbidden = {"the Anthropic API key": stack.anthropic_key, "the gateway key": stack.gateway_key}
    for key, value in token_key.items():
        forbidden[f"the proxy's token key ({key})"] = base64.b64decode(value).decode()
    for what, value in forbidden.items():
        assert len(value) >= 16, f"{what} is too short to look for"
        assert value not in seen, f"{what} is visible inside the sandbox"
        assert base64.b64encode(value.encode()).decode() not in seen
    assert "serviceaccount" not in seen
    assert "cannot access '/var/run/secrets'" in seen, seen
    mounts = seen.split("== mounts", 1)[1]
    assert "/run/secrets" not in mounts, mounts  # nor /var/run/secrets


def tcp(host: str, port: int) -> str:
    """A bash snippet printing `open` when a TCP connection to host:port succeeds within
    5 s, `closed` otherwise (no proxy involved: bash's /dev/tcp)."""
    return (
        f"if timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null; "
        "then echo open; else echo closed; fi"
    )


def first_line(output: str) -> str:
    """The first line of a tool's output (the bash tool appends `[exit code N]`)."""
    return output.strip().splitlines()[0]


def release_service(stack: Stack, component: str) -> dict[str, Any]:
    services = kubectl_json(
        stack.cluster,
        "-n",
        RELEASE_NAMESPACE,
        "get",
        "services",
        "-l",
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}",
    )["items"]
    plain = [s for s in services if s["spec"].get("clusterIP") not in (None, "None")]
    assert plain, f"no {component} Service of release {RELEASE}"
    return plain[0]


def harness_pods(stack: Stack) -> list[dict[str, Any]]:
    pods = kubectl_json(
        stack.cluster,
        "-n",
        stack.namespace,
        "get",
        "pods",
        "-l",
        f"paddock.dev/agent={AGENT},paddock.dev/component=harness",
    )["items"]
    running = [
        p
        for p in pods
        if p.get("status", {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]
    assert running, "no running harness pod"
    return running


def test_sandbox_cannot_reach_redis_the_api_server_harness_ports_or_metadata(
    stack: Stack, bound_sandbox: Sandbox, control: Callable[[str], str]
) -> None:
    """TCP connections from the sandbox to Redis, the kube-apiserver (its own address and
    port, what the `kubernetes` Service leads to), every port of a harness pod but the
    proxy's, and the cloud metadata address all fail; the control pod (no policy selects
    it) connects to the apiserver and the harness metrics port, and the harness container
    (which Redis's policy admits) to Redis, so it is the policy engine that stops the
    sandbox. The proxy's port stays open to the sandbox. Nothing listens on the metadata
    address here, so for it only the sandbox's side is checked."""
    redis = release_service(stack, "redis")
    endpoints = kubectl_json(stack.cluster, "-n", "default", "get", "endpoints", "kubernetes")
    subset = endpoints["subsets"][0]
    api = (subset["addresses"][0]["ip"], subset["ports"][0]["port"])
    harness = harness_pods(stack)[0]
    harness_ip = harness["status"]["podIP"]
    ports = {
        (c["name"], p["containerPort"])
        for c in harness["spec"]["containers"]
        for p in c.get("ports", [])
    }
    proxy_ports = {port for name, port in ports if name == "proxy"}
    assert proxy_ports, ports
    redis_address = (redis["spec"]["clusterIP"], redis["spec"]["ports"][0]["port"])
    controlled = {"kube-apiserver": api, "harness metrics": (harness_ip, 9090)}
    for what, (host, port) in controlled.items():
        assert control(tcp(host, port)).strip() == "open", (
            f"the control pod cannot reach the {what} at {host}:{port} either"
        )
    # Redis admits only Paddock's pods (its own policy): the harness container reaches it.
    probe = (
        "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5); "
        "print('open')"
    )
    opened = stack.kubectl(
        "exec",
        harness["metadata"]["name"],
        "-c",
        "harness",
        "--",
        "python",
        "-c",
        probe,
        redis_address[0],
        str(redis_address[1]),
    )
    assert opened.strip() == "open", "the harness cannot reach Redis either"
    controlled["Redis"] = redis_address
    # Every listening port of the harness pod (the model and admin listeners included).
    unreachable = {
        **controlled,
        **{
            f"harness port {port}": (harness_ip, port)
            for port in (8081, 8082, 9090, *[p for n, p in ports if n != "proxy"])
        },
        "metadata address": ("169.254.169.254", 80),
    }
    for what, (host, port) in unreachable.items():
        assert first_line(bound_sandbox.bash(tcp(host, port))) == "closed", (
            f"the sandbox reached the {what} at {host}:{port}"
        )
    for port in proxy_ports:
        assert first_line(bound_sandbox.bash(tcp(harness_ip, port))) == "open", (
            f"the sandbox cannot reach the proxy's port {port}"
        )


def test_no_api_key_inside_the_harness_container(stack: Stack) -> None:
    """The harness container (the model's caller) never holds the Anthropic API key: only
    the proxy container mounts it."""
    pod = harness_pods(stack)[0]
    harness = next(c for c in pod["spec"]["containers"] if c["name"] == "harness")
    assert not [v for v in harness.get("volumeMounts", []) if "secret" in v["name"]], harness
    # The Paddock image has no shell: Python reads what a shell would print.
    seen = stack.kubectl(
        "exec", pod["metadata"]["name"], "-c", "harness", "--", "python", "-c", HARNESS_PROBE
    )
    assert "== mounts" in seen, seen[-2000:]
    assert stack.anthropic_key not in seen, "the API key is visible in the harness container"
    assert base64.b64encode(stack.anthropic_key.encode()).decode() not in seen
    assert stack.gateway_key not in seen


HARNESS_PROBE = """
import glob, os, pathlib
print("== env"); print(os.environ)
for path in glob.glob("/proc/[0-9]*/environ"):
    try: print(pathlib.Path(path).read_bytes())
    except OSError: pass
print("== files")
for root in ("/etc/paddock", "/tmp", "/var/run", "/run"):
    for path in pathlib.Path(root).rglob("*"):
        try: print(path, path.read_bytes()[:100000]) if path.is_file() else None
        except OSError: pass
print("== mounts"); print(pathlib.Path("/proc/self/mounts").read_text())
"""

# What a container reports about itself: uid, capabilities, no_new_privs, seccomp, whether
# its root is writable, whether a ServiceAccount token is mounted. In Python: the Paddock
# image has no shell.
SECURITY_PROBE_PY = """
import os, re
print(os.getuid())
for line in open("/proc/self/status"):
    if re.match(r"(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):", line): print(line.strip())
try:
    open("/rootfs-probe", "w").close(); os.remove("/rootfs-probe"); print("root-writable")
except OSError:
    print("root-read-only")
token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
print("sa-token" if os.path.exists(token) else "no-sa-token")
"""

SECURITY_PROBE = (
    "id -u; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; "
    "if touch /rootfs-probe 2>/dev/null; then rm -f /rootfs-probe; echo root-writable; "
    "else echo root-read-only; fi; "
    "if [ -e /var/run/secrets/kubernetes.io/serviceaccount/token ]; then echo sa-token; "
    "else echo no-sa-token; fi"
)


def check_security(output: str, pod: dict[str, Any], container: dict[str, Any]) -> None:
    """What a container reports from inside against what its pod spec asks for."""
    pod_context = pod["spec"].get("securityContext", {})
    context = container.get("securityContext", {})
    uid = context.get("runAsUser", pod_context.get("runAsUser"))
    lines = output.strip().splitlines()
    where = f"{pod['metadata']['name']}/{container['name']}"
    assert uid, (where, pod["spec"])
    assert int(lines[0]) == uid, (where, output)
    status = dict(re.findall(r"^(\w+):\s+(\S+)$", output, flags=re.M))
    assert status["CapEff"] == "0000000000000000", (where, output)
    assert status["CapPrm"] == "0000000000000000", (where, output)
    assert status["NoNewPrivs"] == "1", (where, output)
    assert status["Seccomp"] == "2", (where, output)  # filter mode: RuntimeDefault
    if context.get("readOnlyRootFilesystem"):
        assert "root-read-only" in lines, (where, output)
    if pod["spec"].get("automountServiceAccountToken") is False:
        assert "no-sa-token" in lines, (where, output)


def test_security_context_holds_inside_the_containers(stack: Stack, bound_sandbox: Sandbox) -> None:
    """uid, no capabilities, seccomp filter, no_new_privs, read-only root where set, no
    ServiceAccount token where none is mounted: read from /proc inside the sandbox (through
    its own bash tool), the harness pod's two containers, the operator and the gateway."""
    sandbox = bound_sandbox.pod
    check_security(bound_sandbox.bash(SECURITY_PROBE), sandbox, sandbox["spec"]["containers"][0])
    targets: list[tuple[str, dict[str, Any]]] = [(stack.namespace, harness_pods(stack)[0])]
    for component in ("operator", "gateway"):
        pods = kubectl_json(
            stack.cluster,
            "-n",
            RELEASE_NAMESPACE,
            "get",
            "pods",
            "-l",
            f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}",
        )["items"]
        assert pods, component
        targets.append((RELEASE_NAMESPACE, pods[0]))
    for namespace, pod in targets:
        for container in pod["spec"]["containers"]:
            output = stack.cluster.kubectl(
                "-n",
                namespace,
                "exec",
                pod["metadata"]["name"],
                "-c",
                container["name"],
                "--",
                "python",
                "-c",
                SECURITY_PROBE_PY,
            )
            check_security(output, pod, container)


# --- another Agent in the namespace ---------------------------------------------------------

OTHER = "other"


@pytest.fixture(scope="module")
def other_agent(stack: Stack, finished: dict[str, Any]) -> dict[str, Any]:
    """A second Agent in the namespace, like the example one; its running harness pod."""
    documents = yaml.safe_load_all((ROOT / "examples/hello-agent.yaml").read_text())
    agent = next(d for d in documents if d["kind"] == "Agent")
    agent["metadata"]["name"] = OTHER
    stack.kubectl("apply", "-f", "-", input=json.dumps(agent))

    def running() -> dict[str, Any] | None:
        pods = kubectl_json(
            stack.cluster,
            "-n",
            stack.namespace,
            "get",
            "pods",
            "-l",
            f"paddock.dev/agent={OTHER},paddock.dev/component=harness",
        )["items"]
        ready = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        ]
        return ready[0] if ready else None

    pod: dict[str, Any] = wait_for(f"Agent {OTHER}'s harness", running, diagnose=stack.diagnose)
    return pod


def test_a_sandbox_cannot_open_another_agents_proxy_or_harness(
    stack: Stack, bound_sandbox: Sandbox, other_agent: dict[str, Any], control: Callable[[str], str]
) -> None:
    """From the example session's sandbox: Agent `other`'s proxy (its pod and its Service)
    and its harness pod's metrics port do not answer, where the sandbox's own Agent's proxy
    does and the control pod reaches `other`'s metrics port."""
    other_ip = other_agent["status"]["podIP"]
    own_proxy = cluster_ip(stack, stack.namespace, f"{AGENT}-proxy")
    other_proxy = cluster_ip(stack, stack.namespace, f"{OTHER}-proxy")
    assert control(tcp(other_ip, 9090)).strip() == "open", "the control cannot reach it either"
    assert first_line(bound_sandbox.bash(tcp(own_proxy, 3128))) == "open"
    for what, (host, port) in {
        "other's proxy pod": (other_ip, 3128),
        "other's proxy Service": (other_proxy, 3128),
        "other's harness metrics": (other_ip, 9090),
    }.items():
        assert first_line(bound_sandbox.bash(tcp(host, port))) == "closed", (
            f"the sandbox reached {what} at {host}:{port}"
        )


def test_another_agents_sandbox_cannot_open_this_agents_proxy_or_sandbox(
    stack: Stack, bound_sandbox: Sandbox, other_agent: dict[str, Any]
) -> None:
    """A hostile model of Agent `other` (the scripted model running bash in its session's
    sandbox) opens its own proxy but neither the example Agent's proxy nor its sandbox; its
    session runs end to end, so `other`'s harness reaches the sandbox claimed for it."""
    if not stack.scripted:
        pytest.skip("needs the scripted model (its `Run:` script)")
    own = cluster_ip(stack, stack.namespace, f"{OTHER}-proxy")
    targets = {
        "own-proxy": (own, 3128),
        "hello-proxy": (cluster_ip(stack, stack.namespace, f"{AGENT}-proxy"), 3128),
        "hello-proxy-pod": (harness_pods(stack)[0]["status"]["podIP"], 3128),
        "hello-sandbox": (bound_sandbox.pod["status"]["podIP"], 8080),
    }
    command = "; ".join(f"echo {key}=$({tcp(h, p)})" for key, (h, p) in targets.items())
    session = {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": "Session",
        "metadata": {"name": "other-probe"},
        "spec": {
            "agentRef": {"name": OTHER},
            "initialEvents": [
                {"type": "user.message", "content": [{"type": "text", "text": f"Run: {command}"}]}
            ],
        },
    }
    stack.kubectl("apply", "-f", "-", input=json.dumps(session))
    status = wait_stopped(stack, "other-probe")
    assert status["stopReason"] == "end_turn", status
    with gateway(stack) as url:
        logs = stack.paddock(url, "logs", "other-probe")
    assert logs.returncode == 0, logs.stderr
    seen = dict(re.findall(r"([a-z]+(?:-[a-z]+)*)=(open|closed)\b", logs.stdout))
    assert seen == {
        "own-proxy": "open",
        "hello-proxy": "closed",
        "hello-proxy-pod": "closed",
        "hello-sandbox": "closed",
    }, logs.stdout


# --- pods dying under a session ---------------------------------------------------------------


def start_session(stack: Stack, name: str, text: str) -> None:
    session = {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": "Session",
        "metadata": {"name": name},
        "spec": {
            "agentRef": {"name": AGENT},
            "initialEvents": [
                {"type": "user.message", "content": [{"type": "text", "text": text}]}
            ],
        },
    }
    stack.kubectl("apply", "-f", "-", input=json.dumps(session))


def session_status(stack: Stack, name: str) -> dict[str, Any]:
    found = kubectl_json(stack.cluster, "-n", stack.namespace, "get", "session", name)
    return found.get("status") or {}


def wait_stopped(stack: Stack, name: str, timeout: float = 300) -> dict[str, Any]:
    def stopped() -> dict[str, Any] | None:
        status = session_status(stack, name)
        return status if status.get("phase") == "Idle" and status.get("stopReason") else None

    return wait_for(f"session {name} to stop", stopped, timeout=timeout, diagnose=stack.diagnose)


# Prints the pids of the pod's processes whose command line holds argv[1] (the sandbox image
# has Python, not procps); the probe's own command line holds it too and is skipped.
PGREP = (
    "import glob, os, sys\n"
    "for path in glob.glob('/proc/[0-9]*/cmdline'):\n"
    "    pid = path.split('/')[2]\n"
    "    try:\n"
    "        argv = open(path, 'rb').read().replace(b'\\0', b' ').decode()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if sys.argv[1] in argv and pid != str(os.getpid()):\n"
    "        print(pid)\n"
)


def wait_running(stack: Stack, pod: str, command: str) -> None:
    """Until the tool call's ``command`` runs in ``pod``: the call is in flight."""
    wait_for(
        f"{command!r} running in {pod}",
        lambda: stack.kubectl("exec", pod, "--", "python", "-c", PGREP, command).strip(),
        timeout=120,
        diagnose=stack.diagnose,
    )


def wait_bound(stack: Stack, name: str) -> str:
    return wait_for(
        f"session {name}'s sandbox",
        lambda: (session_status(stack, name).get("sandbox") or {}).get("podName"),
        diagnose=stack.diagnose,
    )


def test_a_sandbox_killed_during_a_tool_call_gives_a_tool_error_and_a_fresh_sandbox(
    stack: Stack, finished: dict[str, Any]
) -> None:
    if not stack.scripted:
        pytest.skip("needs the scripted model (its `Run:` script)")
    name = "killed-sandbox"
    start_session(stack, name, "Run: sleep 60; echo slept")
    killed = wait_bound(stack, name)
    wait_running(stack, killed, "sleep 60")
    stack.kubectl("delete", "pod", killed, "--grace-period=0", "--force", "--wait=false")
    status = wait_stopped(stack, name)
    assert status["stopReason"] == "end_turn", status
    assert status["sandbox"]["podName"] != killed, status
    with gateway(stack) as url:
        logs = stack.paddock(url, "logs", name)
    assert logs.returncode == 0, logs.stderr
    assert "The command failed" in logs.stdout, logs.stdout
    assert "recovered" in logs.stdout, logs.stdout
    assert "slept" not in logs.stdout.replace("sleep 60; echo slept", ""), logs.stdout


def test_harness_pods_deleted_mid_session_another_worker_finishes(
    stack: Stack, finished: dict[str, Any]
) -> None:
    if not stack.scripted:
        pytest.skip("needs the scripted model (its `Run:` script)")
    name = "killed-harness"
    start_session(stack, name, "Run: sleep 15; echo slept")
    wait_running(stack, wait_bound(stack, name), "sleep 15")
    before = {p["metadata"]["name"] for p in harness_pods(stack)}
    stack.kubectl(
        "delete",
        "pod",
        "-l",
        f"paddock.dev/agent={AGENT},paddock.dev/component=harness",
        "--wait=false",
    )
    status = wait_stopped(stack, name)
    assert status["stopReason"] == "end_turn", status
    after = {p["metadata"]["name"] for p in harness_pods(stack)}
    assert not before & after, (before, after)


# --- files --------------------------------------------------------------------------------------


def test_a_files_api_file_is_mounted_in_the_sandbox_and_an_output_downloaded(
    stack: Stack, finished: dict[str, Any]
) -> None:
    """The chart's file store on its PersistentVolume, the harness reaching the gateway's
    internal file routes through the operator's NetworkPolicy, and the sandbox pod writing
    an output that the harness uploads: all through the official SDK."""
    if not stack.scripted:
        pytest.skip("needs the scripted model (its `Run:` script)")
    import anthropic

    with gateway(stack) as url:
        client = anthropic.Anthropic(base_url=url, api_key=stack.gateway_key, max_retries=0)
        body = f"uploaded {secrets.token_hex(4)}\n".encode()
        uploaded = client.beta.files.upload(file=("notes.md", body, "text/markdown"))
        agent = next(a for a in client.beta.agents.list() if a.name == AGENT)
        session = client.beta.sessions.create(
            agent=agent.id,
            environment_id=next(e.id for e in client.beta.environments.list()),
            resources=[
                {"type": "file", "file_id": uploaded.id, "mount_path": "/mnt/session/notes.md"}
            ],
        )
        command = "cat /mnt/session/notes.md && cp /mnt/session/notes.md /mnt/session/outputs/"
        client.beta.sessions.events.send(
            session.id,
            events=[
                {"type": "user.message", "content": [{"type": "text", "text": f"Run: {command}"}]}
            ],
        )

        def outputs() -> list[Any]:
            listed = client.beta.files.list(scope_id=session.id)
            return [f for f in listed if f.filename == "notes.md"]

        (output,) = wait_for("the session's output file", outputs, diagnose=stack.diagnose)
        results = [
            e.to_dict()
            for e in client.beta.sessions.events.list(session.id)
            if e.type == "agent.tool_result"
        ]
        assert body.decode().strip() in str(results[0]["content"]), results
        assert client.beta.files.download(output.id).read() == body
        client.beta.files.delete(uploaded.id)
        with pytest.raises(anthropic.NotFoundError):
            client.beta.files.retrieve_metadata(uploaded.id)


# --- the release's life cycle ----------------------------------------------------------------


def helm(cluster: Any, *args: str) -> str:
    from paddock.testing.cluster import helm_binary

    result = subprocess.run(
        [str(helm_binary()), *args],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr + release_diagnose(cluster)
    return result.stdout


def release_diagnose(cluster: Any) -> str:
    """The release's pods, events and the logs of its pods that are not ready."""
    parts = []
    for title, args in (
        ("release pods", ("get", "pods", "-o", "wide")),
        ("release events", ("get", "events", "--sort-by=.lastTimestamp")),
    ):
        try:
            parts.append(f"--- {title}\n{cluster.kubectl('-n', RELEASE_NAMESPACE, *args)}")
        except subprocess.CalledProcessError as exc:
            parts.append(f"--- {title}: kubectl failed ({exc})")
    pods = kubectl_json(cluster, "-n", RELEASE_NAMESPACE, "get", "pods")["items"]
    for pod in pods:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conditions.get("Ready") == "True":
            continue
        name = pod["metadata"]["name"]
        try:
            logs = cluster.kubectl(
                "-n", RELEASE_NAMESPACE, "logs", name, "--all-containers", "--tail=40"
            )
        except subprocess.CalledProcessError as exc:
            logs = f"kubectl failed ({exc})"
        parts.append(f"--- {name} (not ready): {pod['status']}\n{logs}")
    return "\n" + "\n".join(parts)[-20_000:]


def session_events(stack: Stack, name: str) -> int:
    status = kubectl_json(stack.cluster, "-n", stack.namespace, "get", "session", name)["status"]
    return int(status.get("eventCount") or 0)


def test_helm_upgrade_with_a_changed_value_loses_no_session(
    stack: Stack, finished: dict[str, Any]
) -> None:
    """A second Session starts, and while it runs `helm upgrade` changes a value that rolls
    the operator and the gateway; the new Session still reaches `end_turn`, and the finished
    one keeps every event."""
    before = session_events(stack, SESSION)
    session = {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": "Session",
        "metadata": {"name": "during-upgrade"},
        "spec": {
            "agentRef": {"name": AGENT},
            "initialEvents": [
                {
                    "type": "user.message",
                    "content": [{"type": "text", "text": "Count the primes below 100."}],
                }
            ],
        },
    }
    stack.kubectl("apply", "-f", "-", input=json.dumps(session))
    stamp = secrets.token_hex(4)
    helm(
        stack.cluster,
        "upgrade",
        RELEASE,
        str(ROOT / "charts/paddock"),
        "-n",
        RELEASE_NAMESPACE,
        "--reuse-values",
        "--set-string",
        f"operator.podAnnotations.e2e-upgrade={stamp}",
        "--set-string",
        f"gateway.podAnnotations.e2e-upgrade={stamp}",
        "--wait",
        "--timeout",
        "300s",
    )
    operators = kubectl_json(
        stack.cluster,
        "-n",
        RELEASE_NAMESPACE,
        "get",
        "pods",
        "-l",
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator",
    )["items"]
    assert any(
        (p["metadata"].get("annotations") or {}).get("e2e-upgrade") == stamp for p in operators
    ), "the upgrade rolled no operator pod"

    def done() -> dict[str, Any] | None:
        found = kubectl_json(
            stack.cluster, "-n", stack.namespace, "get", "session", "during-upgrade"
        )
        status = found.get("status") or {}
        return status if status.get("phase") == "Idle" and status.get("stopReason") else None

    status = wait_for("the session started before the upgrade", done, diagnose=stack.diagnose)
    assert status["stopReason"] == "end_turn", status
    assert session_events(stack, SESSION) == before


def test_helm_uninstall_leaves_no_paddock_object(
    request: pytest.FixtureRequest, stack: Stack, finished: dict[str, Any]
) -> None:
    """The Agents, Environments and Sessions deleted while the operator runs, then `helm
    uninstall`: nothing of the release nor anything the operator made is left in any
    namespace, only what is documented to stay (the CRDs, Redis's claim, the Redis users'
    passwords). The tenant's Redis Secret goes with its namespace's last Agent."""
    if request.node.callspec.params.get("cluster") == "kind":
        pytest.skip("the kind cluster is kept between runs: its release stays installed")
    for kind in ("sessions", "agents", "environments"):
        stack.kubectl("delete", kind, "--all", "--timeout=120s")
    wait_for(
        "the operator to remove the harness and sandbox pods",
        lambda: (
            not kubectl_json(
                stack.cluster, "-n", stack.namespace, "get", "pods", "-l", "paddock.dev/component"
            )["items"]
        ),
        timeout=180,
        diagnose=stack.diagnose,
    )
    helm(stack.cluster, "uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait")
    kinds = (
        "pods,deployments,statefulsets,replicasets,services,configmaps,secrets,"
        "networkpolicies,serviceaccounts,roles,rolebindings,poddisruptionbudgets"
    )

    def leftovers() -> list[str]:
        found = []
        for selector in (f"app.kubernetes.io/instance={RELEASE}", "paddock.dev/component"):
            items = kubectl_json(stack.cluster, "get", kinds, "-A", "-l", selector)["items"]
            cluster_wide = kubectl_json(
                stack.cluster, "get", "clusterroles,clusterrolebindings", "-l", selector
            )["items"]
            found += [
                f"{i['kind']} {i['metadata'].get('namespace', '')}/{i['metadata']['name']}"
                for i in items + cluster_wide
                if i["kind"] != "PersistentVolumeClaim"
                # Kept on uninstall (docs/install.md): an external Redis set up with these
                # passwords, or a reinstall, keeps working.
                and (i["kind"], i["metadata"]["name"]) != ("Secret", f"{RELEASE}-redis-auth")
            ]
        return found

    wait_for(
        "nothing of Paddock to remain",
        lambda: not leftovers() or None,
        timeout=120,
        diagnose=lambda: "\n".join(leftovers()),
    )
    assert leftovers() == []
    remaining = kubectl_json(stack.cluster, "get", "agents,environments,sessions", "-A")["items"]
    assert remaining == [], remaining
