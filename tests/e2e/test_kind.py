"""End to end on kind: the examples applied to a real cluster whose CNI enforces NetworkPolicy.

`hack/kind-up.sh` brings the cluster up (or checks it and upgrades the release: it is
idempotent), with the scripted model unless ANTHROPIC_API_KEY is set. Then, in a fresh
namespace: the example Agent and Session run to `end_turn` (tool calls approved through the
gateway with the `paddock` CLI); the session's sandbox reaches an allowlisted host only through
the credential proxy, is refused any other, and cannot connect anywhere directly, where a
control pod without the policies can; and nothing inside the sandbox (`env`, `/proc/*/environ`,
`/var/run/secrets`, its mounts) holds the API key, the proxy's token key or a ServiceAccount
token.

Needs a Docker engine; skipped elsewhere, before anything is started. kind and kubectl come
from PATH or are built from `hack/kind/go.mod` (needs go). The cluster is
`PADDOCK_KIND_CLUSTER` (default `paddock`, the one kind-up.sh makes by default), and is left
running when it existed before the run; one this run created is deleted unless
`--keep-cluster` is given.

    pytest -m kind tests/e2e
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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


def kubectl_json(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json"))


def wait_for(
    what: str,
    probe: Callable[[], Any],
    timeout: float = 300,
    diagnose: Callable[[], str] | None = None,
) -> Any:
    """Poll until `probe` returns something truthy; fail with `what` and `diagnose()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(2)
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what}"
        + (f"\n{diagnose()}" if diagnose else "")
    )


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

    def kubectl(self, *args: str) -> str:
        return self.cluster.kubectl("-n", self.namespace, *args)

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
def stack(kind_cluster_up: Any) -> Iterator[Stack]:
    """A fresh namespace with the `anthropic` Secret (copied from the one kind-up.sh made),
    a gateway API key for it, and examples/hello-agent.yaml + hello-session.yaml applied."""
    cluster = kind_cluster_up
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


def test_sandbox_is_bound_to_the_proxy(bound_sandbox: Sandbox) -> None:
    env = bound_sandbox.bash("env")
    assert re.search(r"^HTTPS_PROXY=http://sesn_[^:]+:[^@]+@", env, re.MULTILINE), env


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
