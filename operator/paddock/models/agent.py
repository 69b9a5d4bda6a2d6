"""Agent: which model runs, with what prompt, tools, credentials and limits."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field

from paddock.models.common import (
    Condition,
    Duration,
    ImageReference,
    LocalObjectReference,
    Model,
    ObjectMeta,
    ResourceRequirements,
    SecretKeyReference,
    cel_rule,
    map_list,
)

BuiltinToolName = Literal["bash", "read", "write", "edit", "glob", "grep"]
BUILTIN_TOOL_NAMES: tuple[str, ...] = get_args(BuiltinToolName)
ToolsetToolName = Literal[
    "bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"
]
"""The tools of Managed Agents' `agent_toolset_20260401`."""
ABSENT_TOOL_NAMES: tuple[str, ...] = tuple(
    name for name in get_args(ToolsetToolName) if name not in BUILTIN_TOOL_NAMES
)
"""Tools of the toolset that Paddock's sandbox lacks: a config may only disable them, so an
agent written for Managed Agents that turns them off applies unchanged."""
PermissionPolicy = Literal["always_allow", "always_ask"]
CLAUDE_MODEL_PATTERN = r"^claude-[a-z0-9]([-a-z0-9.@]*[a-z0-9])?$"
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]
ToolName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


class BuiltinToolConfig(Model):
    """Per-tool override of the built-in toolset's defaults."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "!(self.name in ['web_fetch', 'web_search']) || "
                    "(has(self.enabled) && !self.enabled)",
                    "Paddock has no web_fetch or web_search tool: such an entry must set "
                    "enabled: false",
                )
            ]
        }
    }

    name: ToolsetToolName
    """The built-in tool this entry configures. `web_fetch` and `web_search`, which Paddock
    does not have, may only be disabled."""
    enabled: bool | None = None
    """Whether the model is offered this tool. Unset: the toolset's `enabled`."""
    permission_policy: PermissionPolicy | None = None
    """`always_allow` runs the call at once; `always_ask` waits for a `user.tool_confirmation`.
    Unset: the toolset's `permissionPolicy`."""


class BuiltinToolset(Model):
    """The built-in sandbox tools (`agent_toolset_20260401`): bash, read, write, edit, glob, grep."""

    enabled: bool = True
    """Default for every tool that has no entry in `configs`."""
    permission_policy: PermissionPolicy = "always_allow"
    """Default permission policy for every tool that has no entry in `configs`."""
    configs: Annotated[
        list[BuiltinToolConfig], Field(max_length=8, json_schema_extra=map_list("name"))
    ] = Field(default_factory=list)
    """Per-tool overrides, at most one entry per tool."""


class InputSchema(Model):
    """A JSON Schema for a tool's input. Only `type` is checked here; the rest is passed to
    the model as written."""

    model_config = {"extra": "allow"}

    type: Literal["object"]
    """Tool inputs are JSON objects."""


class CustomTool(Model):
    """A tool the API client executes: the session idles with `requires_action` until the
    client sends a `user.custom_tool_result`."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "!(self.name in ['bash', 'read', 'write', 'edit', 'glob', 'grep'])",
                    "custom tool names must differ from the built-in tools",
                )
            ]
        }
    }

    name: ToolName
    """Name the model calls the tool by."""
    description: Annotated[str, Field(min_length=1, max_length=4096)]
    """What the tool does, for the model."""
    input_schema: InputSchema
    """JSON Schema of the tool's input; its `type` must be `object`."""


class McpServer(Model):
    """An MCP server reached over streamable HTTP through the credential proxy."""

    name: Annotated[str, Field(min_length=1, max_length=255)]
    """Name that `tools.mcp[].serverName` refers to."""
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://")]
    """Endpoint of the server."""


class McpToolConfig(Model):
    """Per-tool override of an MCP toolset's defaults."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    """The tool's name as the server lists it."""
    enabled: bool | None = None
    """Whether the model is offered this tool. Unset: the toolset's `enabled`."""
    permission_policy: PermissionPolicy | None = None
    """Unset: the toolset's `permissionPolicy`."""


class McpToolset(Model):
    """Tools of one MCP server."""

    server_name: Annotated[str, Field(min_length=1, max_length=255)]
    """The `mcpServers[].name` whose tools this offers."""
    enabled: bool = True
    """Default for every tool without an entry in `configs` (false: allow-list with
    `configs`)."""
    permission_policy: PermissionPolicy = "always_ask"
    """MCP tools ask by default: a new server tool never runs unconfirmed."""
    configs: Annotated[
        list[McpToolConfig], Field(max_length=256, json_schema_extra=map_list("name"))
    ] = Field(default_factory=list)
    """Per-tool overrides, at most one entry per tool."""


class Tools(Model):
    """Tools offered to the model."""

    builtin: BuiltinToolset = BuiltinToolset()
    """The built-in sandbox toolset."""
    custom: Annotated[
        list[CustomTool], Field(max_length=128, json_schema_extra=map_list("name"))
    ] = Field(default_factory=list)
    """Tools executed by the API client."""
    mcp: Annotated[
        list[McpToolset], Field(max_length=20, json_schema_extra=map_list("serverName"))
    ] = Field(default_factory=list)
    """Toolsets of the servers in `mcpServers`."""


class ApiRoute(Model):
    """Requests to a credential host, besides git, that get its token."""

    methods: Annotated[
        list[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]],
        Field(min_length=1, max_length=6),
    ]
    """Methods that get the token."""
    path_prefix: Annotated[
        str,
        Field(
            max_length=256,
            pattern=r"^/([A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*/)*$",
        ),
    ]
    """A path ending in `/`, for example `/api/v4/` (`/` for every path); no segment starting
    with a dot, no percent-encoding. Request paths with `.` or `..` segments never get the
    token."""


class HostCredential(Model):
    """A token the credential proxy adds to sandbox requests for one host: git smart-HTTP
    (clone, fetch, push) always, other requests only as `apiRoutes` say. The sandbox never
    sees it."""

    host: Hostname
    """Host the token is for, for example `github.com`."""
    secret_ref: SecretKeyReference
    """Where the token is stored."""
    scheme: Literal["bearer", "basic"] = "bearer"
    """`bearer` sends `Authorization: Bearer <token>`; `basic` sends the token as the password of
    HTTP basic auth (what git hosts expect)."""
    api_routes: Annotated[list[ApiRoute], Field(max_length=16)] = Field(default_factory=list)
    """HTTPS API calls through the proxy's `/git/<host>/` route that get the token too."""


class Credentials(Model):
    """Secrets the Agent uses. They are mounted only into the credential-proxy sidecar."""

    anthropic_api_key: SecretKeyReference
    """The Claude API key the proxy adds to model requests."""
    hosts: Annotated[
        list[HostCredential], Field(max_length=64, json_schema_extra=map_list("host"))
    ] = Field(default_factory=list)
    """Per-host tokens injected into sandbox egress."""


class Money(Model):
    """An amount in minor units (cents), as a string: `"2500"` is 25.00 USD."""

    amount: Annotated[str, Field(pattern=r"^[0-9]{1,12}$")]
    """Non-negative integer amount in minor units."""
    currency: Literal["USD"] = "USD"
    """Currency of the amount."""


class Harness(Model):
    """The harness Deployment that runs this Agent's sessions."""

    replicas: Annotated[int, Field(ge=0, le=100)] = 1
    """Harness worker pods. Any worker can resume any session of the Agent."""
    concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    """Sessions one worker runs at the same time."""
    resources: ResourceRequirements | None = None
    """Resources of the harness container. Unset: the operator's defaults."""
    image: ImageReference | None = None
    """Override of the Paddock image for this Agent's harness and proxy."""


class AgentLimits(Model):
    """Limits applied to every session of the Agent."""

    max_turns: Annotated[int, Field(ge=1, le=10000)] = 100
    """Model requests allowed per user turn before the session stops with `retries_exhausted`."""
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 8192
    """`max_tokens` of each model request."""
    max_session_tokens: Annotated[int, Field(ge=1)] | None = None
    """Default token budget of a session (input plus output); a Session's `budget` overrides it."""
    max_list_cost: Money | None = None
    """Default cost budget of a session at list prices; a Session's `budget` overrides it."""
    model_timeout: Duration = "10m"
    """Longest a single model request may take."""
    tool_timeout: Duration = "10m"
    """Longest a single tool call may take."""
    sandbox_wait_timeout: Duration = "2m"
    """Longest a tool call waits for the session's sandbox to be bound."""


class Multiagent(Model):
    """The Agents a coordinator may delegate to (API `multiagent` `{type: "coordinator"}`):
    its model gets the tools `list_agents` and `send_to_agent`, and each call runs a thread
    on the callee's harness workers. Depth 1: a rostered Agent that itself has `multiagent`
    gets no delegation tools in a thread, is refused by the gateway, and is reported as
    `RosterInvalid` in the coordinator's `Ready` condition."""

    type: Literal["coordinator"] = "coordinator"
    agents: Annotated[
        list[LocalObjectReference],
        Field(min_length=1, max_length=20, json_schema_extra=map_list("name")),
    ]
    """Agents of this namespace the coordinator may call, by name (1-20)."""


class AgentSpec(Model):
    """Desired state of an Agent."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.tools) || !has(self.tools.mcp) || self.tools.mcp.all(t, "
                    "has(self.mcpServers) && self.mcpServers.exists(s, s.name == t.serverName))",
                    "every tools.mcp[].serverName must name an entry of mcpServers",
                )
            ]
        }
    }

    model: Annotated[str, Field(min_length=1, max_length=256, pattern=CLAUDE_MODEL_PATTERN)]
    """Claude model id, for example `claude-sonnet-4-6`: `claude-` and lower-case letters,
    digits, `.`, `-` or `@` (dated and platform-pinned ids included), so a model id that is
    not Claude's is refused at admission, not at the session's first model call."""
    system: Annotated[str, Field(max_length=100_000)] | None = None
    """System prompt."""
    description: Annotated[str, Field(max_length=2048)] | None = None
    """What the Agent is for."""
    tools: Tools = Tools()
    """Tools offered to the model."""
    mcp_servers: Annotated[
        list[McpServer], Field(max_length=20, json_schema_extra=map_list("name"))
    ] = Field(default_factory=list)
    """MCP servers the Agent may use."""
    environment_ref: LocalObjectReference | None = None
    """Environment of sessions that name none."""
    multiagent: Multiagent | None = None
    """The Agents this one may delegate to, as a coordinator."""
    credentials: Credentials
    """Secrets for the model API and for hosts the sandbox reaches."""
    harness: Harness = Harness()
    """The worker Deployment."""
    limits: AgentLimits = AgentLimits()
    """Per-session limits."""
    revision_history_limit: Annotated[int, Field(ge=1)] = 10
    """Versions of the Agent kept (as `ControllerRevision`s `<name>-v<version>`), the current
    one included, as a StatefulSet's `revisionHistoryLimit`. A version a live Session runs is
    never pruned."""


class AgentStatus(Model):
    """Observed state of an Agent."""

    observed_generation: int | None = None
    """The `metadata.generation` this status describes."""
    conditions: Annotated[list[Condition], Field(json_schema_extra=map_list("type"))] = Field(
        default_factory=list
    )
    """`Ready`: the harness Deployment is available and every reference resolves."""
    replicas: int | None = None
    """Harness pods that exist."""
    ready_replicas: int | None = None
    """Harness pods ready to serve sessions."""
    active_sessions: int | None = None
    """Sessions of this Agent that are running or waiting on the user."""


class Agent(Model):
    """A Claude agent: model, system prompt, tools, credentials and limits. The operator runs
    it as a harness Deployment with a credential-proxy sidecar."""

    api_version: Literal["paddock.dev/v1alpha1"] = "paddock.dev/v1alpha1"
    kind: Literal["Agent"] = "Agent"
    metadata: ObjectMeta = ObjectMeta()
    spec: AgentSpec
    status: AgentStatus | None = None
