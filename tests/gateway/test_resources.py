"""API objects are custom resources: what the gateway writes to the apiserver, how it reads
objects created with kubectl, versions, archive, delete and list pages."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from paddock.eventlog import EventLog, SessionState, session_keys, tenant_prefix

from .stack import Stack

pytestmark = pytest.mark.timeout(60)

MCP_AGENT: dict[str, Any] = {
    "name": "Release helper ✓",
    "model": {"id": "claude-sonnet-4-6", "speed": "standard"},
    "description": "Ships things",
    "system": "Be careful.",
    "tools": [
        {
            "type": "agent_toolset_20260401",
            "default_config": {"enabled": False},
            "configs": [
                {"name": "read", "enabled": True},
                {"name": "bash", "enabled": True, "permission_policy": {"type": "always_ask"}},
            ],
        },
        {
            "type": "mcp_toolset",
            "mcp_server_name": "tickets",
            "default_config": {"permission_policy": {"type": "always_allow"}},
        },
        {
            "type": "custom",
            "name": "deploy",
            "description": "Deploy a build",
            "input_schema": {
                "type": "object",
                "properties": {"env": {"type": "string"}},
                "required": ["env"],
            },
        },
    ],
    "mcp_servers": [{"type": "url", "name": "tickets", "url": "https://tickets.example.com/mcp"}],
    "metadata": {"team": "platform"},
}


async def test_an_agent_is_an_agent_resource_and_back(stack: Stack) -> None:
    async with stack.http() as http:
        created = (await http.post("/v1/agents", json=MCP_AGENT)).json()
    resource = stack.agent_resource(created["id"])
    name = resource["metadata"]["name"]
    assert name.startswith("release-helper-")
    assert resource["metadata"]["labels"]["paddock.dev/agent-id"] == created["id"]
    assert resource["metadata"]["annotations"]["paddock.dev/name"] == "Release helper ✓"
    assert json.loads(resource["metadata"]["annotations"]["paddock.dev/metadata"]) == {
        "team": "platform"
    }
    spec = resource["spec"]
    assert spec["credentials"] == {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}}
    assert spec["model"] == "claude-sonnet-4-6"
    assert spec["tools"]["builtin"] == {
        "enabled": False,
        "permissionPolicy": "always_allow",
        "configs": [
            {"name": "read", "enabled": True},
            {"name": "bash", "enabled": True, "permissionPolicy": "always_ask"},
        ],
    }
    assert spec["tools"]["mcp"] == [
        {
            "serverName": "tickets",
            "enabled": True,
            "permissionPolicy": "always_allow",
            "configs": [],
        }
    ]
    assert spec["tools"]["custom"][0]["inputSchema"]["required"] == ["env"]
    assert spec["mcpServers"] == [{"name": "tickets", "url": "https://tickets.example.com/mcp"}]

    # The response is the resolved shape of reference §3.1 / §11.2.
    assert created["version"] == 1
    assert created["model"] == {"id": "claude-sonnet-4-6", "speed": "standard"}
    assert created["execution_identity"] == {"type": "service_account"}
    assert created["skills"] == []
    toolset, mcp, custom = created["tools"]
    assert toolset["configs"] == [
        {
            "name": "read",
            "type": "read",
            "enabled": True,
            "permission_policy": {"type": "always_allow"},
        },
        {
            "name": "bash",
            "type": "bash",
            "enabled": True,
            "permission_policy": {"type": "always_ask"},
        },
    ]
    assert mcp == {
        "type": "mcp_toolset",
        "mcp_server_name": "tickets",
        "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
        "configs": [],
    }
    assert custom == MCP_AGENT["tools"][2]
    async with stack.http() as http:
        # Kubernetes names work wherever ids do (a Paddock extension).
        assert (await http.get(f"/v1/agents/{name}")).json() == created


async def test_disabling_tools_paddock_lacks_is_accepted_and_enabling_them_is_not(
    stack: Stack,
) -> None:
    """Client code written for Managed Agents turns off web_search and web_fetch: Paddock has
    neither, so that is accepted, stored in the Agent and shown as the SDK types it; asking
    for one of them stays a clear 400."""
    client = stack.client()
    toolset: dict[str, Any] = {
        "type": "agent_toolset_20260401",
        "configs": [
            {"name": "web_search", "enabled": False},
            {"name": "web_fetch", "enabled": False},
        ],
    }
    agent = await client.beta.agents.create(
        name="offline", model="claude-sonnet-4-6", tools=[toolset]
    )
    (tools,) = agent.tools
    assert [(type(c).__name__, c.name, c.enabled) for c in tools.configs] == [
        ("BetaManagedAgentsWebSearchToolConfig", "web_search", False),
        ("BetaManagedAgentsWebFetchToolConfig", "web_fetch", False),
    ]
    assert tools.default_config.enabled is True  # the six tools Paddock has stay on
    resource = stack.agent_resource(agent.id)
    assert resource["spec"]["tools"]["builtin"]["configs"] == [
        {"name": "web_search", "enabled": False},
        {"name": "web_fetch", "enabled": False},
    ]
    # Sending the tools back as they came is no change.
    tools_back = [t.to_dict() for t in agent.tools]
    same = await client.beta.agents.update(agent.id, version=1, tools=tools_back)  # type: ignore[arg-type]
    assert same.version == 1
    assert (await client.beta.agents.retrieve(agent.id)).tools == agent.tools
    # Left to the default (off here), an absent tool is off too.
    quiet = {
        "type": "agent_toolset_20260401",
        "default_config": {"enabled": False},
        "configs": [{"name": "web_search"}, {"name": "bash", "enabled": True}],
    }
    only_bash = await client.beta.agents.create(
        name="quiet", model="claude-sonnet-4-6", tools=[quiet]
    )
    assert [(c.name, c.enabled) for c in only_bash.tools[0].configs] == [
        ("web_search", False),
        ("bash", True),
    ]

    for config in ({"name": "web_search", "enabled": True}, {"name": "web_fetch"}):
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.beta.agents.create(
                name="online",
                model="claude-sonnet-4-6",
                tools=[{"type": "agent_toolset_20260401", "configs": [config]}],  # type: ignore[list-item]
            )
        assert refused.value.status_code == 400
        assert f"the built-in tool {config['name']} is not supported by Paddock" in str(
            refused.value
        )


async def test_agent_versions_follow_the_spec(stack: Stack) -> None:
    client = stack.client()
    agent = await client.beta.agents.create(name="v", model="claude-sonnet-4-6")
    assert agent.tools == []  # no toolset given: no built-in tools
    same = await client.beta.agents.update(agent.id, version=1, name="v")
    assert same.version == 1  # a no-op makes no version
    renamed = await client.beta.agents.update(agent.id, metadata={"a": "1"}, description="d")
    assert renamed.version == 2
    assert renamed.metadata == {"a": "1"}
    patched = await client.beta.agents.update(agent.id, version=2, metadata={"a": None, "b": "2"})
    assert patched.metadata == {"b": "2"}
    assert patched.description == "d"
    toolset = {"type": "agent_toolset_20260401", "configs": [{"name": "bash", "enabled": False}]}
    tooled = await client.beta.agents.update(agent.id, version=2, tools=[toolset], system="new")
    assert tooled.version == 3
    assert tooled.system == "new"
    assert tooled.tools[0].default_config.enabled is True
    assert (await client.beta.agents.update(agent.id, name="v", description="d")).version == 3
    assert (await client.beta.agents.retrieve(agent.id, version=3)).version == 3
    # Older versions are kept (tests/gateway/test_versions.py); later ones do not exist.
    assert (await client.beta.agents.retrieve(agent.id, version=1)).description is None
    async with stack.http() as http:
        assert (await http.get(f"/v1/agents/{agent.id}", params={"version": 4})).status_code == 404

    archived = await client.beta.agents.archive(agent.id)
    assert archived.archived_at is not None
    assert agent.id not in [a.id async for a in client.beta.agents.list()]
    assert agent.id in [a.id async for a in client.beta.agents.list(include_archived=True)]
    async with stack.http() as http:
        assert (await http.post(f"/v1/agents/{agent.id}", json={"system": "x"})).status_code == 409
        session = await http.post("/v1/sessions", json={"agent": agent.id})
        assert session.status_code == 400


async def test_an_environment_is_an_environment_resource(stack: Stack) -> None:
    client = stack.client()
    limited = await client.beta.environments.create(
        name="py-data",
        description="pandas",
        config={
            "type": "cloud",
            "networking": {
                "type": "limited",
                "allowed_hosts": ["api.example.com"],
                "allow_package_managers": True,
            },
            "packages": {"type": "packages", "pip": ["pandas==2.2.2"]},
        },
    )
    (resource,) = [
        r
        for r in stack.resources("environments", stack.a.namespace)
        if r["metadata"]["labels"]["paddock.dev/environment-id"] == limited.id
    ]
    assert resource["spec"]["networking"] == {
        "mode": "limited",
        "allowedDomains": ["api.example.com"],
        "allowPackageManagers": True,
    }
    assert resource["spec"]["packages"] == {"pip": ["pandas==2.2.2"]}
    assert limited.config.networking.allowed_hosts == ["api.example.com"]
    assert limited.config.packages.pip == ["pandas==2.2.2"]
    assert limited.description == "pandas"
    assert limited.scope == "organization"

    default = await client.beta.environments.create(name="no-network")
    assert default.config.networking.type == "limited"
    assert default.config.networking.allowed_hosts == []
    async with stack.http() as http:
        duplicate = await http.post("/v1/environments", json={"name": "py-data"})
        assert duplicate.status_code == 409
    opened = await client.beta.environments.update(
        default.id, config={"type": "cloud", "networking": {"type": "unrestricted"}}
    )
    assert opened.config.networking.type == "unrestricted"
    assert {e.id async for e in client.beta.environments.list()} >= {limited.id, default.id}
    deleted = await client.beta.environments.delete(default.id)
    assert (deleted.id, deleted.type) == (default.id, "environment_deleted")
    async with stack.http() as http:
        assert (await http.get(f"/v1/environments/{default.id}")).status_code == 404


async def test_archiving_an_environment_frees_its_name(stack: Stack) -> None:
    """Client code that makes its environment, archives it when done, and runs again."""
    client = stack.client()
    first = await client.beta.environments.create(name="nightly")
    with pytest.raises(anthropic.ConflictError, match="an environment named 'nightly'"):
        await client.beta.environments.create(name="nightly")
    await client.beta.environments.archive(first.id)
    second = await client.beta.environments.create(name="nightly")
    assert second.id != first.id
    assert second.name == "nightly"
    with pytest.raises(anthropic.ConflictError):
        await client.beta.environments.create(name="nightly")
    # Both are there, as resources of their own; only the live one is listed by default.
    listed = [e async for e in client.beta.environments.list(include_archived=True)]
    assert {e.id for e in listed if e.name == "nightly"} == {first.id, second.id}
    assert [e.id async for e in client.beta.environments.list() if e.name == "nightly"] == [
        second.id
    ]
    names = {
        r["metadata"]["labels"]["paddock.dev/environment-id"]: r["metadata"]["name"]
        for r in stack.resources("environments", stack.a.namespace)
    }
    assert names[first.id] != names[second.id]
    assert (await client.beta.environments.retrieve(first.id)).archived_at is not None
    # A live environment may take an archived one's name too.
    other = await client.beta.environments.create(name="weekly")
    await client.beta.environments.archive(second.id)
    renamed = await client.beta.environments.update(other.id, name="nightly")
    assert renamed.name == "nightly"
    # Agents have no name rule: an archived agent's name is as free as any other.
    agent = await client.beta.agents.create(name="nightly", model="claude-sonnet-4-6")
    await client.beta.agents.archive(agent.id)
    again = await client.beta.agents.create(name="nightly", model="claude-sonnet-4-6")
    assert again.id != agent.id


async def test_a_session_is_a_session_resource_with_a_live_log(stack: Stack) -> None:
    client = stack.client()
    environment = await client.beta.environments.create(name="session-env")
    agent = await client.beta.agents.create(name="s", model="claude-sonnet-4-6")
    session = await client.beta.sessions.create(
        agent={"type": "agent", "id": agent.id, "version": 1},
        environment_id=environment.id,
        title="Fix the bug",
        metadata={"ticket": "42"},
        resources=[
            {
                "type": "github_repository",
                "url": "https://github.com/example/repo",
                "checkout": {"type": "branch", "name": "dev"},
            }
        ],
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "Start"}]}],
        budget={"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}},
    )
    name = session.id.lower().replace("_", "-")
    resource = stack.resource("sessions", stack.a.namespace, name)
    assert resource is not None
    assert resource["metadata"]["labels"]["paddock.dev/session-id"] == session.id
    spec = resource["spec"]
    assert spec["agentRef"]["name"] == stack.agent_resource(agent.id)["metadata"]["name"]
    assert spec["environmentRef"]["name"].startswith("session-env-")
    assert spec["title"] == "Fix the bug"
    assert spec["initialEvents"] == [
        {"type": "user.message", "content": [{"type": "text", "text": "Start"}]}
    ]
    assert spec["resources"] == [
        {"gitRepository": {"url": "https://github.com/example/repo", "branch": "dev"}}
    ]
    assert spec["budget"] == {"maxListCost": {"amount": "2500", "currency": "USD"}}

    # The log exists at once and holds the initial message; settings name the environment.
    log = EventLog(stack.redis, stack.a.namespace)
    events = await log.replay(session.id)
    assert [e.type for e in events] == ["user.message"]
    settings = await SessionState(stack.redis, stack.a.namespace).settings(session.id)
    assert settings.environment == spec["environmentRef"]["name"]
    assert settings.budget.max_list_cost.amount == "2500"

    assert session.resources[0].url == "https://github.com/example/repo"
    assert session.resources[0].checkout.name == "dev"
    assert session.budget.max_list_cost.amount == "2500"
    assert session.metadata == {"ticket": "42"}
    assert (await client.beta.sessions.retrieve(name)).id == session.id

    updated = await client.beta.sessions.update(session.id, title="Fixed", budget=None)
    assert updated.title == "Fixed"
    assert updated.budget is None
    assert (await SessionState(stack.redis, stack.a.namespace).settings(session.id)).budget is None

    archived = await client.beta.sessions.archive(session.id)
    assert archived.archived_at is not None
    assert stack.resource("sessions", stack.a.namespace, name)["spec"]["cancel"] is True

    deleted = await client.beta.sessions.delete(session.id)
    assert (deleted.id, deleted.type) == (session.id, "session_deleted")
    # No operator (and so no finalizer) here: the resource is gone and so is the log.
    assert stack.resource("sessions", stack.a.namespace, name) is None
    assert not await stack.redis.exists(*session_keys(stack.a.namespace, session.id))


async def test_a_session_the_apiserver_refuses_leaves_no_log(stack: Stack) -> None:
    """The gateway starts the log before it writes the resource: when the write is refused
    (here by an admission policy, as a platform team might have), the log is taken back."""
    client = stack.client()
    environment = await client.beta.environments.create(name="policy-env")
    agent = await client.beta.agents.create(name="p", model="claude-sonnet-4-6")
    namespace = stack.a.namespace
    admission = "/apis/admissionregistration.k8s.io/v1"
    policy = f"no-sessions-{namespace}"
    with stack.kube() as kube:
        kube.post(
            f"{admission}/validatingadmissionpolicies",
            json={
                "metadata": {"name": policy},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": ["paddock.dev"],
                                "apiVersions": ["*"],
                                "operations": ["CREATE"],
                                "resources": ["sessions"],
                            }
                        ]
                    },
                    "validations": [{"expression": "false", "message": "no sessions today"}],
                },
            },
        ).raise_for_status()
        kube.post(
            f"{admission}/validatingadmissionpolicybindings",
            json={
                "metadata": {"name": policy},
                "spec": {
                    "policyName": policy,
                    "validationActions": ["Deny"],
                    "matchResources": {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": namespace}
                        }
                    },
                },
            },
        ).raise_for_status()
    keys = tenant_prefix(stack.a.namespace) + "*"
    try:
        before = {k async for k in stack.redis.scan_iter(match=keys)}
        async with stack.http() as http:
            # The apiserver loads a new policy within a moment: until then sessions are made.
            for _ in range(100):
                refused = await http.post(
                    "/v1/sessions", json={"agent": agent.id, "environment_id": environment.id}
                )
                if refused.status_code != 200:
                    break
                await http.delete(f"/v1/sessions/{refused.json()['id']}")
                before = {k async for k in stack.redis.scan_iter(match=keys)}
        assert 400 <= refused.status_code < 500, refused.text
        assert refused.json()["type"] == "error"
        assert "no sessions today" in refused.json()["error"]["message"]
        after = {k async for k in stack.redis.scan_iter(match=keys)}
        assert after == before
    finally:
        with stack.kube() as kube:
            kube.delete(f"{admission}/validatingadmissionpolicybindings/{policy}")
            kube.delete(f"{admission}/validatingadmissionpolicies/{policy}")


async def test_session_without_environment_uses_the_agents(stack: Stack) -> None:
    client = stack.client()
    environment = await client.beta.environments.create(name="agent-default")
    agent = await client.beta.agents.create(name="d", model="claude-sonnet-4-6")
    async with stack.http() as http:
        refused = await http.post("/v1/sessions", json={"agent": agent.id})
        assert refused.status_code == 400
        assert "environment_id" in refused.json()["error"]["message"]
    resource = stack.agent_resource(agent.id)
    with stack.kube() as kube:
        env_name = next(
            r
            for r in stack.resources("environments", stack.a.namespace)
            if r["metadata"]["labels"]["paddock.dev/environment-id"] == environment.id
        )["metadata"]["name"]
        kube.patch(
            f"/apis/paddock.dev/v1alpha1/namespaces/{stack.a.namespace}/agents/{resource['metadata']['name']}",
            json={"spec": {"environmentRef": {"name": env_name}}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
    async with stack.http() as http:
        created = await http.post("/v1/sessions", json={"agent": resource["metadata"]["name"]})
    assert created.status_code == 200, created.text
    assert created.json()["environment_id"] == environment.id
    assert (
        "environmentRef"
        not in stack.resource(
            "sessions", stack.a.namespace, created.json()["id"].lower().replace("_", "-")
        )["spec"]
    )


async def test_objects_made_with_kubectl_appear_once_labelled(stack: Stack) -> None:
    namespace = stack.a.namespace
    base = f"/apis/paddock.dev/v1alpha1/namespaces/{namespace}/agents"
    body = {
        "apiVersion": "paddock.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "hand-made"},
        "spec": {
            "model": "claude-haiku-4-5",
            "credentials": {"anthropicApiKey": {"name": "k", "key": "v"}},
        },
    }
    with stack.kube() as kube:
        assert kube.post(base, json=body).status_code == 201
    async with stack.http() as http:
        assert (await http.get("/v1/agents/hand-made")).status_code == 404
        assert (await http.get("/v1/agents")).json()["data"] == []
        with stack.kube() as kube:
            # What the operator does on its first reconcile.
            kube.patch(
                f"{base}/hand-made",
                json={"metadata": {"labels": {"paddock.dev/agent-id": "agent_handmade1"}}},
                headers={"Content-Type": "application/merge-patch+json"},
            ).raise_for_status()
        agent = (await http.get("/v1/agents/agent_handmade1")).json()
    assert agent["name"] == "hand-made"
    assert agent["model"]["id"] == "claude-haiku-4-5"
    # The default toolset of a manifest: every built-in tool, always allowed.
    assert agent["tools"] == [
        {
            "type": "agent_toolset_20260401",
            "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
            "configs": [],
        }
    ]


async def test_lists_page_newest_first(stack: Stack) -> None:
    client = stack.client()
    ids = [
        (await client.beta.agents.create(name=f"p{i}", model="claude-sonnet-4-6")).id
        for i in range(5)
    ]
    first = await client.beta.agents.list(limit=2)
    assert len(first.data) == 2
    assert first.next_page
    walked = [a.id async for a in client.beta.agents.list(limit=2)]
    assert sorted(walked) == sorted(ids)
    assert len(set(walked)) == 5
    # Creation times have one-second resolution; ids break ties, so the order is stable.
    assert walked == [a.id async for a in client.beta.agents.list(limit=3)]

    environment = await client.beta.environments.create(name="pages")
    agent = ids[0]
    sessions = [
        (await client.beta.sessions.create(agent=agent, environment_id=environment.id)).id
        for _ in range(3)
    ]
    page = await client.beta.sessions.list(limit=2, order="asc")
    assert page.prev_page is None
    second = await client.beta.sessions.list(limit=2, order="asc", page=page.next_page)
    assert [s.id for s in page.data + second.data] == sessions
    assert second.next_page is None
    back = await client.beta.sessions.list(limit=2, order="asc", page=second.prev_page)
    assert [s.id for s in back.data] == sessions[:2]
    async with stack.http() as http:
        mixed = await http.get("/v1/sessions", params={"order": "desc", "page": page.next_page})
        assert mixed.status_code == 400
        by_agent = await http.get("/v1/sessions", params={"agent_id": agent, "statuses[]": "idle"})
        assert len(by_agent.json()["data"]) == 3
        none = await http.get("/v1/sessions", params={"statuses[]": "running"})
        assert none.json()["data"] == []
