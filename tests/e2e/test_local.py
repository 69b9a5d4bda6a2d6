"""End to end on one machine: the examples applied to a real apiserver, the operator and
gateway as processes, the pods run by the local pod runner, the scripted model.

A session goes from `kubectl apply` to `end_turn`, its tool calls executed in a sandbox
process, and deleting the resources leaves no pod, Deployment or Redis key behind.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest
import redis
import yaml

from paddock.testing.aptrepo import AptRepository
from paddock.testing.controlplane import REPO_ROOT
from paddock.testing.fakemodel import DEMO_PROGRAM, FakeModelServer, demo_script
from paddock.testing.ports import wait_until
from paddock.testing.pyindex import PackageIndex
from paddock.testing.stack import LocalStack

PADDOCK = "paddock.dev/v1alpha1"
EXAMPLES = REPO_ROOT / "examples"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the local pod runner needs root (network namespaces, bind mounts, other uids)"
    for tool in ("ip", "mount", "setpriv"):
        if shutil.which(tool) is None:
            return f"the local pod runner needs {tool}"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


@dataclass
class Repositories:
    """A real pip index and a real Debian repository on the host's loopback, with the
    packages the package tests install."""

    index: PackageIndex
    apt: AptRepository


@pytest.fixture(scope="module")
def repositories() -> Iterator[Repositories]:
    with PackageIndex() as index, AptRepository() as apt:
        index.add("paddock-demo-pkg", "1.0", 'MESSAGE = "installed from the local index"\n')
        apt.add("paddock-demo-data", "1.0", {"usr/share/paddock-demo/message": "a dependency\n"})
        apt.add(
            "paddock-demo-apt",
            "1.0",
            {"usr/bin/paddock-demo-apt": "#!/bin/sh\necho 'run from the local repository'\n"},
            depends="paddock-demo-data",
        )
        yield Repositories(index, apt)


@pytest.fixture(scope="module")
def stack(repositories: Repositories) -> Iterator[LocalStack]:
    """One stack for the module; the operator's index and apt sources are `repositories`
    (only Environments with packages use them). Tests that leave Environments behind that
    would disturb the others work in a namespace of their own (`_tenant`)."""
    index, apt = repositories.index, repositories.apt
    # Its own bridge and addresses, so a `make demo` on the same machine does not collide.
    with LocalStack(
        bridge="paddock-e2e", pod_cidr="10.245.0.0/16", pip_index_url=index.url,
        apt_sources=apt.sources_line,
        package_exceptions=(f"{index.host}:{index.port}", f"{apt.host}:{apt.port}"),
    ) as running:  # fmt: skip
        yield running


def _tenant(stack: LocalStack, namespace: str) -> tuple[str, str]:
    """A namespace of its own on a shared stack, and the gateway API key granting it."""
    return namespace, stack.bootstrap(namespace)


def _wait(stack: LocalStack, what: str, check: Any, timeout: float = 120) -> None:
    try:
        wait_until(check, timeout=timeout, what=what, interval=0.25)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None


def _pods(stack: LocalStack, namespace: str = "default", **labels: str) -> list[dict[str, Any]]:
    return [
        p
        for p in stack.get("v1", "Pod", namespace)
        if labels.items() <= (p["metadata"].get("labels") or {}).items()
    ]


def _session(name: str, text: str) -> dict[str, Any]:
    session = yaml.safe_load((EXAMPLES / "hello-session.yaml").read_text())
    session["metadata"]["name"] = name
    session["spec"]["initialEvents"][0]["content"][0]["text"] = text
    return session


def test_a_session_runs_its_tools_in_a_sandbox_and_deleting_it_leaves_nothing(
    stack: LocalStack,
) -> None:
    stack.apply_file(EXAMPLES / "hello-agent.yaml")
    stack.apply(_session("primes", "How many primes are below 100?"))
    session_id = stack.session_id("primes")

    def finished() -> bool:
        status = stack.get(PADDOCK, "Session", "default", "primes").get("status") or {}
        return status.get("phase") == "Idle" and status.get("stopReason") == "end_turn"

    _wait(stack, "the session's end_turn", finished)

    # The tools ran in the sandbox process bound to the session: the program the model wrote
    # is in that pod's workspace volume, and its output came back to the model.
    (sandbox,) = _pods(stack, **{"paddock.dev/session-id": session_id})
    assert sandbox["status"]["phase"] == "Running"
    written = list((stack.dir / "runner" / "pods").glob(f"default_{sandbox['metadata']['name']}_*"))
    assert written, "the bound sandbox pod has no local directory"
    assert (written[0] / "volumes" / "workspace" / "primes.py").read_text() == DEMO_PROGRAM
    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=stack.api_key)
    events = [e.to_dict() for e in client.beta.sessions.events.list(session_id)]
    results = [e for e in events if e["type"] == "agent.tool_result"]
    assert [r.get("is_error", False) for r in results] == [False, False]
    assert "25" in str(results[-1]["content"])
    assert events[-1]["type"] == "session.status_idle"
    assert "There are 25 primes below 100." in str(
        [e for e in events if e["type"] == "agent.message"][-1]["content"]
    )

    stack.delete(PADDOCK, "Session", "default", "primes")
    assert stack.redis is not None
    log = stack.redis.admin()

    def cleaned_up() -> bool:
        return (
            stack.get(PADDOCK, "Session", "default", "primes") is None
            and not _pods(stack, **{"paddock.dev/session-id": session_id})
            and not list(log.scan_iter(match=f"*{session_id}*"))
            # The runner removes a pod's files once its processes have stopped.
            and not written[0].exists()
        )

    _wait(stack, "the session's pods, Redis keys and pod files to go", cleaned_up)


def test_only_the_proxy_container_can_read_the_api_key(stack: LocalStack) -> None:
    """Only the container that mounts the Secret (the proxy) sees it: in the harness
    container the file is not there, and the pod's files on the host are root's alone."""
    stack.apply_file(EXAMPLES / "hello-agent.yaml")
    harness = _ready_pod(stack, "harness")
    name = harness["metadata"]["name"]
    key_path = "/var/run/secrets/paddock/anthropic/api-key"
    mounts = {m["mountPath"] for m in harness["spec"]["containers"][1]["volumeMounts"]}
    assert str(Path(key_path).parent) in mounts, mounts

    seen_by_proxy = stack.exec_in("default", name, "proxy", ["cat", key_path])
    assert seen_by_proxy.stdout.startswith("sk-ant-"), seen_by_proxy.stderr
    seen_by_harness = stack.exec_in("default", name, "harness", ["cat", key_path])
    assert seen_by_harness.returncode != 0
    assert "No such file" in seen_by_harness.stderr
    # On the host, the pod's directory is root's: no other uid reaches the file.
    (pod_dir,) = (stack.dir / "runner" / "pods").glob(f"default_{name}_*")
    harness_uid = harness["spec"]["containers"][0]["securityContext"]["runAsUser"]
    from_host = subprocess.run(
        ["setpriv", f"--reuid={harness_uid}", f"--regid={harness_uid}", "--clear-groups",
         "cat", str(pod_dir / "volumes" / "anthropic-key" / "api-key")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert from_host.returncode != 0
    assert "Permission denied" in from_host.stderr
    # And nothing of the key is in the harness container's environment or command line.
    for part in ("cmdline", "environ"):
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and _owned_by(proc, harness_uid):
                assert "sk-ant-" not in _read(proc / part)


def test_the_redis_password_is_in_the_harness_container_only(stack: LocalStack) -> None:
    """The operator provisioned the tenant's Redis user: its password is in the harness
    container's environment, in no process of the proxy or of a sandbox, and it opens the
    tenant's keys only."""
    stack.apply_file(EXAMPLES / "hello-agent.yaml")
    harness = _ready_pod(stack, "harness")
    _wait(stack, "a warm sandbox", lambda: bool(_ready_pods(stack, "sandbox")))
    secret = stack.get("v1", "Secret", "default", "paddock-redis-harness")
    password = base64.b64decode(secret["data"]["password"]).decode()
    uids = {c["name"]: c["securityContext"]["runAsUser"] for c in harness["spec"]["containers"]}
    sandboxes = {
        p["metadata"]["name"] for p in _pods(stack, **{"paddock.dev/component": "sandbox"})
    }
    # Every process of the pods, by pod (the runner sets HOSTNAME) and uid (the container).
    seen: dict[str, bool] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        environ = _read(proc / "environ")
        host = next((v[9:] for v in environ.split("\0") if v.startswith("HOSTNAME=")), "")
        if host == harness["metadata"]["name"]:
            where = "harness" if _owned_by(proc, uids["harness"]) else "proxy"
        elif host in sandboxes:
            where = "sandbox"
        else:
            continue
        seen[where] = seen.get(where, False) or password in environ
    assert seen == {"harness": True, "proxy": False, "sandbox": False}
    assert stack.redis is not None
    tenant = redis.Redis(
        port=stack.redis.port, username="paddock-harness-default", password=password
    )
    assert tenant.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        tenant.get("paddock:t:other:{sesn_x}:settings")
    tenant.close()


def test_a_sandbox_cannot_reach_another_pods_files(stack: LocalStack) -> None:
    """Code in one sandbox looks for the other pods' volumes (a bound sandbox's bearer
    token, the proxy's Secret) the ways that worked before: through the runner's state
    directory, other processes' /proc entries, and their roots. It finds none of them."""
    stack.apply_file(EXAMPLES / "hello-agent.yaml")
    harness = _ready_pod(stack, "harness")
    _wait(stack, "two warm sandboxes", lambda: len(_ready_pods(stack, "sandbox")) >= 2)
    attacker, victim = _ready_pods(stack, "sandbox")[:2]
    state_dir = stack.dir / "runner"
    victim_dir = next((state_dir / "pods").glob(f"default_{victim['metadata']['name']}_*"))
    targets = [
        victim_dir / "volumes" / "token" / "token",
        *(state_dir / "pods").glob(f"default_{harness['metadata']['name']}_*/volumes/*/*"),
    ]
    # What the attack is after, there on the host.
    assert targets[0].exists()
    assert len(targets) > 1
    script = "\n".join(
        [
            "import glob, json, os",
            f"targets = {[str(t) for t in targets]!r}",
            "found = [t for t in targets if os.path.exists(t)]",
            f"found += glob.glob({str(state_dir)!r} + '/*')",
            "tokens = []",
            "for path in glob.glob('/proc/*/root/var/run/paddock/sandbox/token'):",
            "    try:",
            "        tokens.append(open(path).read())",
            "    except OSError:",
            "        pass",
            "pids = [p for p in os.listdir('/proc') if p.isdigit()]",
            "homes = set()",
            "for pid in pids:",
            "    try:",
            "        environ = open(f'/proc/{pid}/environ').read().split(chr(0))",
            "    except OSError:",
            "        continue",
            "    homes |= {e for e in environ if e.startswith('HOME=')}",
            "print(json.dumps({'found': found, 'tokens': tokens, 'pids': len(pids),",
            "                  'homes': sorted(homes)}))",
        ]
    )
    shown = stack.exec_in(
        "default", attacker["metadata"]["name"], "sandbox", ["python3", "-c", script]
    )
    assert shown.returncode == 0, shown.stderr
    seen = json.loads(shown.stdout)
    assert seen["found"] == [], seen
    # Through /proc it reaches its own root only: its own token, never the victim's.
    assert seen["tokens"], seen
    assert targets[0].read_text() not in seen["tokens"]
    # Its own PID namespace: its init, its server and the attacking process; no HOME
    # points into the runner's directory.
    assert seen["pids"] <= 3, seen
    assert not [home for home in seen["homes"] if str(stack.dir) in home], seen


def _ready_pods(
    stack: LocalStack, component: str, namespace: str = "default"
) -> list[dict[str, Any]]:
    return [
        p
        for p in _pods(stack, namespace, **{"paddock.dev/component": component})
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions", [])
        )
    ]


def _ready_pod(stack: LocalStack, component: str) -> dict[str, Any]:
    _wait(stack, f"a ready {component} pod", lambda: bool(_ready_pods(stack, component)))
    return _ready_pods(stack, component)[0]


def _owned_by(proc: Path, uid: int) -> bool:
    try:
        return proc.stat().st_uid == uid
    except FileNotFoundError:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def test_deleting_the_agent_and_environment_removes_their_pods(stack: LocalStack) -> None:
    stack.apply_file(EXAMPLES / "hello-agent.yaml")
    _wait(stack, "the harness and warm pool", lambda: len(_pods(stack)) >= 3)
    for kind, name in (("Agent", "hello"), ("Environment", "python")):
        stack.delete(PADDOCK, kind, "default", name)
    _wait(stack, "every pod and Deployment to go", lambda: not _pods(stack) and not stack.get(
        "apps/v1", "Deployment", "default"
    ))  # fmt: skip


def test_with_an_api_key_the_model_is_reached_through_the_proxy_and_relay(tmp_path: Path) -> None:
    """With ANTHROPIC_API_KEY, the pods reach the upstream API through a relay on the host
    (the pod network has no NAT), and the key the upstream sees is the one the proxy
    sidecar read from the Secret. The scripted model stands in for the upstream here."""
    key = "sk-ant-e2e-" + os.urandom(8).hex()
    with (
        FakeModelServer(demo_script) as upstream,
        LocalStack(
            bridge="paddock-e2e2", pod_cidr="10.246.0.0/16", anthropic_api_key=key,
            anthropic_url=upstream.url,
        ) as stack,
    ):  # fmt: skip
        stack.apply_file(EXAMPLES / "hello-agent.yaml")
        stack.apply(_session("keyed", "How many primes are below 100?"))

        def finished() -> bool:
            status = stack.get(PADDOCK, "Session", "default", "keyed").get("status") or {}
            return status.get("stopReason") == "end_turn"

        _wait(stack, "the session's end_turn", finished)
    assert {r.headers["x-api-key"] for r in upstream.requests} == {key}


def test_a_files_api_file_is_mounted_in_the_sandbox_pod_and_an_output_downloaded(
    stack: LocalStack,
) -> None:
    # Real pods: the harness fetches the file from the gateway at its bridge address and
    # streams it into the sandbox pod at the default mount path; the output comes back.
    stack.apply_file(EXAMPLES / "hello-agent.yaml")
    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=stack.api_key)
    uploaded = client.beta.files.upload(file=("notes.md", b"the answer is 42\n", "text/markdown"))
    mounted = f"/mnt/session/uploads/{uploaded.id}"
    agent = next(a for a in client.beta.agents.list() if a.name == "hello")
    session = client.beta.sessions.create(
        agent=agent.id,
        environment_id=next(e.id for e in client.beta.environments.list() if e.name == "python"),
        resources=[{"type": "file", "file_id": uploaded.id}],
    )
    command = f"cat {mounted} && cp {mounted} /mnt/session/outputs/copy.md"
    client.beta.sessions.events.send(
        session.id,
        events=[{"type": "user.message", "content": [{"type": "text", "text": f"Run: {command}"}]}],
    )

    def outputs() -> list[Any]:
        return [f for f in client.beta.files.list(scope_id=session.id) if f.filename == "copy.md"]

    _wait(stack, "the session's output file", outputs)
    results = [
        e.to_dict()
        for e in client.beta.sessions.events.list(session.id)
        if e.type == "agent.tool_result"
    ]
    assert "the answer is 42" in str(results[0]["content"]), results
    (copy,) = outputs()
    assert client.beta.files.download(copy.id).read() == b"the answer is 42\n"


def _condition(
    stack: LocalStack, environment: str, kind: str, namespace: str = "default"
) -> dict[str, Any]:
    found = stack.get(PADDOCK, "Environment", namespace, environment) or {}
    for condition in (found.get("status") or {}).get("conditions") or []:
        if condition["type"] == kind:
            return dict(condition)
    return {}


def _with_packages(packages: dict[str, list[str]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """examples/hello-agent.yaml with ``packages`` in its Environment, one warm sandbox."""
    documents = list(yaml.safe_load_all((EXAMPLES / "hello-agent.yaml").read_text()))
    environment = next(d for d in documents if d["kind"] == "Environment")
    environment["spec"]["packages"] = packages
    environment["spec"]["warmPool"] = {"size": 1}
    return documents, environment


def _wait_installed(stack: LocalStack, what: str, namespace: str) -> None:
    _wait(
        stack,
        what,
        lambda: (
            _condition(stack, "python", "PackagesReady", namespace).get("status") == "True"
            and _ready_pods(stack, "sandbox", namespace)
        ),
        timeout=180,
    )


def _run_to_end(
    stack: LocalStack, tenant: tuple[str, str], name: str, command: str
) -> tuple[dict[str, Any], str]:
    """A session that runs ``command`` in ``tenant`` (namespace, its gateway key), to its
    end_turn: the Session and its tool result."""
    namespace, api_key = tenant
    stack.apply(_session(name, f"Run: {command}"), namespace=namespace)

    def finished() -> bool:
        status = stack.get(PADDOCK, "Session", namespace, name).get("status") or {}
        return status.get("stopReason") == "end_turn"

    _wait(stack, "the session's end_turn", finished)
    session = stack.get(PADDOCK, "Session", namespace, name)
    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=api_key)
    session_id = session["metadata"]["labels"]["paddock.dev/session-id"]
    results = [
        e.to_dict()
        for e in client.beta.sessions.events.list(session_id)
        if e.type == "agent.tool_result"
    ]
    return session, str(results[0]["content"])


def test_an_environments_pip_package_is_in_its_warm_sandboxes_and_the_claim_stays_warm(
    stack: LocalStack, repositories: Repositories
) -> None:
    """The Environment's pip package comes from a real index on the host's loopback, through
    the package proxy (the development-only address exception lets it reach loopback), into
    the warm pool's pods before they are ready. A session claims one of those pods, started
    before the session existed, and imports the package. A package no index has fails the
    install: the Environment says why and the pod is replaced."""
    index = repositories.index
    tenant = namespace, _ = _tenant(stack, "pip")
    documents, environment = _with_packages({"pip": ["paddock-demo-pkg==1.0"]})
    stack.apply(*documents, namespace=namespace)
    _wait_installed(stack, "a warm sandbox with its packages", namespace)
    assert _condition(stack, "python", "PackagesReady", namespace)["reason"] == "Installed"
    warm = {p["metadata"]["name"] for p in _ready_pods(stack, "sandbox", namespace)}
    assert any(path.startswith("/files/paddock_demo_pkg-1.0") for path in index.requests), (
        index.requests,
        _ready_pods(stack, "sandbox", namespace),
        stack.logs(),
    )

    command = "python3 -c 'import paddock_demo_pkg as p; print(p.MESSAGE)'"
    session, result = _run_to_end(stack, tenant, "imports", command)
    sandbox = session["status"]["sandbox"]
    # Warm: a pod that was ready before the session existed; none started for it.
    assert sandbox["claim"] == "warm", sandbox
    assert sandbox["podName"] in warm, (sandbox, warm)
    claimed = stack.get("v1", "Pod", namespace, sandbox["podName"])
    assert "paddock.dev/packages" not in claimed["metadata"]["labels"]
    assert "paddock.dev/package-token" not in claimed["metadata"]["annotations"]
    assert "installed from the local index" in result, result
    assert stack.package_proxy is not None
    audited = [e for e in stack.package_proxy.audit() if e.get("host") == index.host]
    assert audited, stack.package_proxy.logs()

    # A package the index does not have: the install fails, the status says so, and
    # the pod is replaced (after the backoff).
    broken = {**environment, "metadata": {"name": "broken", "namespace": namespace}}
    broken["spec"] = {**environment["spec"], "packages": {"pip": ["no-such-package"]}}
    stack.apply(broken)
    _wait(
        stack,
        "the failed install in the Environment's status",
        lambda: (
            _condition(stack, "broken", "PackagesReady", namespace).get("reason") == "InstallFailed"
        ),
        timeout=180,
    )
    message = _condition(stack, "broken", "PackagesReady", namespace)["message"]
    assert "No matching distribution found for no-such-package" in message, message
    assert "pdk1." not in message
    assert _condition(stack, "broken", "Ready", namespace)["reason"] == "SandboxFailing"
    seen: set[str] = set()

    def replaced() -> bool:
        seen.update(
            p["metadata"]["name"]
            for p in _pods(stack, namespace, **{"paddock.dev/environment": "broken"})
        )
        return len(seen) >= 2

    _wait(stack, "the failed sandbox to be replaced", replaced, timeout=60)
    # Its sandboxes would go on failing for the rest of the module's tests.
    stack.delete(PADDOCK, "Environment", namespace, "broken")


def test_an_environments_apt_package_and_its_dependency_run_in_a_claimed_warm_sandbox(
    stack: LocalStack, repositories: Repositories
) -> None:
    """The Environment's apt package and its dependency come from a real Debian repository
    on the host's loopback (the operator's apt sources), through the package proxy, into the
    warm pod as the sandbox user; a session claims the pod and runs the package's command."""
    repo = repositories.apt
    tenant = namespace, _ = _tenant(stack, "apt")
    documents, _ = _with_packages({"apt": ["paddock-demo-apt"]})
    stack.apply(*documents, namespace=namespace)
    _wait_installed(stack, "a warm sandbox with its apt packages", namespace)
    debs = {p.rsplit("/", 1)[-1] for p in repo.requests if p.endswith(".deb")}
    assert debs == {"paddock-demo-apt_1.0_all.deb", "paddock-demo-data_1.0_all.deb"}
    command = (
        "paddock-demo-apt && cat $(dirname $(which paddock-demo-apt))/../share/paddock-demo/message"
    )
    session, result = _run_to_end(stack, tenant, "apt", command)
    assert session["status"]["sandbox"]["claim"] == "warm", session["status"]
    assert "run from the local repository" in result, result
    assert "a dependency" in result, result
