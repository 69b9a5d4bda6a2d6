"""The console's files and status routes (gateway/console.py): the files are public and
carry a strict policy, the status is the operator's view of the caller's namespace only.
The console in a browser is tested in tests/console."""

from __future__ import annotations

from typing import Any

from tests.gateway.stack import Stack

API = "/apis/paddock.dev/v1alpha1/namespaces"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _set_status(
    stack: Stack, plural: str, namespace: str, name: str, status: dict[str, Any]
) -> None:
    """What the operator would write: the resource's status subresource."""
    with stack.kube() as kube:
        kube.patch(
            f"{API}/{namespace}/{plural}/{name}/status", json={"status": status}, headers=MERGE
        ).raise_for_status()


async def test_the_console_files_are_public_and_strict(stack: Stack) -> None:
    async with stack.http(auth=False) as http:
        page = await http.get("/console/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="main.js"></script>' in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        moved = await http.get("/console", follow_redirects=False)
        assert moved.status_code == 308
        assert moved.headers["location"] == "/console/"
        for missing in ("/console/nothing.js", "/console/%2e%2e%2fapp.py", "/console/static"):
            answer = await http.get(missing)
            assert answer.status_code == 404, missing
        # The status is data: behind the key like the rest of the API.
        for plural in ("agents", "environments", "sessions"):
            assert (await http.get(f"/v1/console/{plural}")).status_code == 401


async def test_the_status_routes_show_the_operators_view_of_the_namespace(stack: Stack) -> None:
    namespace = stack.a.namespace
    async with stack.http() as http:
        agent = (
            await http.post("/v1/agents", json={"name": "coder", "model": "claude-sonnet-4-6"})
        ).json()
        environment = (await http.post("/v1/environments", json={"name": "py"})).json()
        session = (
            await http.post(
                "/v1/sessions", json={"agent": agent["id"], "environment_id": environment["id"]}
            )
        ).json()
    agent_name = next(r["metadata"]["name"] for r in stack.resources("agents", namespace))
    environment_name = next(
        r["metadata"]["name"] for r in stack.resources("environments", namespace)
    )
    ready = {"type": "Ready", "status": "False", "reason": "HarnessStarting", "message": "0 of 1 ready",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    _set_status(stack, "agents", namespace, agent_name,
                {"conditions": [ready], "replicas": 1, "readyReplicas": 0, "activeSessions": 1})  # fmt: skip
    _set_status(stack, "environments", namespace, environment_name,
                {"warmPool": {"desired": 2, "ready": 1, "bound": 1}})  # fmt: skip
    session_name = next(r["metadata"]["name"] for r in stack.resources("sessions", namespace))
    _set_status(
        stack, "sessions", namespace, session_name, {"phase": "Idle", "stopReason": "end_turn"}
    )

    async with stack.http() as http:
        agents = (await http.get("/v1/console/agents")).json()["data"]
        environments = (await http.get("/v1/console/environments")).json()["data"]
        sessions = (await http.get("/v1/console/sessions")).json()["data"]
    assert agents == [
        {
            "id": agent["id"], "name": "coder",
            "conditions": [{"type": "Ready", "status": "False", "reason": "HarnessStarting", "message": "0 of 1 ready"}],
            "replicas": 1, "ready_replicas": 0, "active_sessions": 1,
        }
    ]  # fmt: skip
    (env,) = environments
    assert env["id"] == environment["id"]
    assert env["warm_pool"]["ready"] == 1
    assert env["warm_pool"]["bound"] == 1
    assert sessions == [
        {"id": session["id"], "name": session_name, "phase": "Idle", "stop_reason": "end_turn"}
    ]
    # Another tenant sees none of it.
    async with stack.http(stack.b) as http:
        for plural in ("agents", "environments", "sessions"):
            assert (await http.get(f"/v1/console/{plural}")).json() == {"data": []}
