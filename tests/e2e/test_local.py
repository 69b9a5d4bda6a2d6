"""End to end on one machine: the examples applied to a real apiserver, the operator and
gateway as processes, the pods run by the local pod runner, the scripted model.

A session goes from `kubectl apply` to `end_turn`, its tool calls executed in a sandbox
process, and deleting the resources leaves no pod, Deployment or Redis key behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import redis
import yaml

from paddock.testing.controlplane import REPO_ROOT
from paddock.testing.fakemodel import DEMO_PROGRAM, FakeModelServer, demo_script
from paddock.testing.ports import wait_until
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


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # Its own bridge and addresses, so a `make demo` on the same machine does not collide.
    with LocalStack(bridge="paddock-e2e", pod_cidr="10.245.0.0/16") as running:
        yield running


def _wait(stack: LocalStack, what: str, check: Any, timeout: float = 120) -> None:
    try:
        wait_until(check, timeout=timeout, what=what, interval=0.25)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None


def _pods(stack: LocalStack, **labels: str) -> list[dict[str, Any]]:
    return [
        p
        for p in stack.get("v1", "Pod", "default")
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
    log = redis.Redis(port=stack.redis.port)

    def cleaned_up() -> bool:
        return (
            stack.get(PADDOCK, "Session", "default", "primes") is None
            and not _pods(stack, **{"paddock.dev/session-id": session_id})
            and not list(log.scan_iter(match=f"*{session_id}*"))
        )

    _wait(stack, "the session's pods and Redis keys to go", cleaned_up)
    assert not written[0].exists(), "the runner left the sandbox's files behind"


def test_only_the_proxy_container_can_read_the_api_key(stack: LocalStack) -> None:
    """The runner lays out Secret volumes so that only the container mounting them (the
    proxy, by its uid) can read them: the harness's and sandboxes' uid cannot."""
    stack.apply_file(EXAMPLES / "hello-agent.yaml")
    _wait(stack, "a ready harness pod", lambda: any(
        c["type"] == "Ready" and c["status"] == "True"
        for p in _pods(stack, **{"paddock.dev/component": "harness"})
        for c in p["status"].get("conditions", [])
    ))  # fmt: skip
    pod = _pods(stack, **{"paddock.dev/component": "harness"})[0]
    (pod_dir,) = (stack.dir / "runner" / "pods").glob(f"default_{pod['metadata']['name']}_*")
    key_file = pod_dir / "volumes" / "anthropic-key" / "api-key"
    harness_uid = pod["spec"]["containers"][0]["securityContext"]["runAsUser"]
    proxy_uid = pod["spec"]["containers"][1]["securityContext"]["runAsUser"]

    def read_as(uid: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "cat", str(key_file)],
            capture_output=True,
            text=True,
        )

    denied = read_as(harness_uid)
    assert denied.returncode != 0
    assert "Permission denied" in denied.stderr
    assert read_as(proxy_uid).stdout.startswith("sk-ant-")
    # And nothing of the key is in the harness container's environment or command line.
    for part in ("cmdline", "environ"):
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and _owned_by(proc, harness_uid):
                assert "sk-ant-" not in _read(proc / part)


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
