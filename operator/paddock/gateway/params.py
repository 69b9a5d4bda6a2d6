"""Request bodies of the API, as Pydantic models: the gateway validates with them and the
OpenAPI document (`/v1/openapi.json`) is generated from them, so both always agree.

They follow the official SDK's `*_params.py` types (reference §3). Unknown fields are
refused (400), so a misspelt field never silently does nothing. Fields Paddock does not
implement are still declared, so that their use gets a precise "not supported" answer
instead of "extra field" (see `convert/`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from paddock.eventlog import ToolResultContent, UserContent


class Param(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenParam(BaseModel):
    """A body part Paddock refuses as a whole; its content is not checked further."""

    model_config = ConfigDict(extra="allow")


MetadataKey = Annotated[str, Field(min_length=1, max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]
MetadataPatch = Annotated[dict[MetadataKey, MetadataValue | None], Field(max_length=16)]
"""On update: a string sets the key, null deletes it, an absent key is kept."""
Name = Annotated[str, Field(min_length=1, max_length=256)]

# Agents (§3.1, §6).

BuiltinTool = Literal["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"]


class PermissionPolicyParam(Param):
    type: Literal["always_allow", "always_ask", "auto"]


class ToolsetDefaultConfigParam(Param):
    enabled: bool | None = None
    permission_policy: PermissionPolicyParam | None = None


class ToolConfigParam(Param):
    name: BuiltinTool
    type: BuiltinTool | None = None
    """Responses carry it (equal to `name`); accepted so a response can be sent back."""
    enabled: bool | None = None
    permission_policy: PermissionPolicyParam | None = None


class AgentToolsetParam(Param):
    type: Literal["agent_toolset_20260401"]
    default_config: ToolsetDefaultConfigParam | None = None
    configs: Annotated[list[ToolConfigParam], Field(max_length=8)] | None = None


class McpToolConfigParam(Param):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    enabled: bool | None = None
    permission_policy: PermissionPolicyParam | None = None


class McpToolsetParam(Param):
    type: Literal["mcp_toolset"]
    mcp_server_name: Annotated[str, Field(min_length=1, max_length=255)]
    default_config: ToolsetDefaultConfigParam | None = None
    configs: Annotated[list[McpToolConfigParam], Field(max_length=256)] | None = None


class InputSchemaParam(BaseModel):
    """A JSON Schema; only `type: object` is checked, the rest goes to the model as is."""

    model_config = ConfigDict(extra="allow")

    type: Literal["object"]


class CustomToolParam(Param):
    type: Literal["custom"]
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
    description: Annotated[str, Field(min_length=1, max_length=4096)]
    input_schema: InputSchemaParam


ToolParam = Annotated[
    AgentToolsetParam | McpToolsetParam | CustomToolParam, Field(discriminator="type")
]


class McpServerParam(Param):
    type: Literal["url"]
    name: Annotated[str, Field(min_length=1, max_length=255)]
    url: Annotated[str, Field(min_length=1, max_length=2048)]


EffortLevel = Literal["low", "medium", "high", "xhigh", "max"]


class EffortParam(Param):
    type: EffortLevel


class ModelConfigParam(Param):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    effort: EffortLevel | EffortParam | None = None
    speed: Literal["standard", "fast"] | None = None
    inference_geo: str | None = None


ModelParam = Annotated[str, Field(min_length=1, max_length=256)] | ModelConfigParam


class ExecutionIdentityParam(OpenParam):
    type: str


class AgentCreateParams(Param):
    name: Name
    model: ModelParam
    description: Annotated[str, Field(max_length=2048)] | None = None
    system: Annotated[str, Field(max_length=100_000)] | None = None
    tools: Annotated[list[ToolParam], Field(max_length=256)] | None = None
    mcp_servers: Annotated[list[McpServerParam], Field(max_length=20)] | None = None
    skills: list[dict[str, Any]] | None = None
    multiagent: dict[str, Any] | None = None
    execution_identity: ExecutionIdentityParam | None = None
    metadata: Metadata | None = None


class AgentUpdateParams(Param):
    """Each given field replaces the stored one (`metadata` is a patch); omitted fields are
    kept. With `version`, the update fails with 409 unless it is the current version."""

    version: Annotated[int, Field(ge=1)] | None = None
    name: Name | None = None
    model: ModelParam | None = None
    description: Annotated[str, Field(max_length=2048)] | None = None
    system: Annotated[str, Field(max_length=100_000)] | None = None
    tools: Annotated[list[ToolParam], Field(max_length=256)] | None = None
    mcp_servers: Annotated[list[McpServerParam], Field(max_length=20)] | None = None
    skills: list[dict[str, Any]] | None = None
    multiagent: dict[str, Any] | None = None
    execution_identity: ExecutionIdentityParam | None = None
    metadata: MetadataPatch | None = None


# Environments (§3.2).


class UnrestrictedNetworkParam(Param):
    type: Literal["unrestricted"]


class LimitedNetworkParam(Param):
    type: Literal["limited"]
    allowed_hosts: Annotated[list[str], Field(max_length=256)] | None = None
    allow_mcp_servers: bool | None = None
    allow_package_managers: bool | None = None


NetworkParam = Annotated[
    UnrestrictedNetworkParam | LimitedNetworkParam, Field(discriminator="type")
]
PackageList = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=100)
]


class PackagesParam(Param):
    type: Literal["packages"] | None = None
    apt: PackageList | None = None
    cargo: PackageList | None = None
    gem: PackageList | None = None
    go: PackageList | None = None
    npm: PackageList | None = None
    pip: PackageList | None = None


class CloudConfigParam(Param):
    """On update, omitted `networking` or `packages` keep their stored value."""

    type: Literal["cloud"]
    networking: NetworkParam | None = None
    packages: PackagesParam | None = None


class SelfHostedConfigParam(OpenParam):
    type: Literal["self_hosted"]


ConfigParam = Annotated[CloudConfigParam | SelfHostedConfigParam, Field(discriminator="type")]
Scope = Literal["organization", "account"]


class EnvironmentCreateParams(Param):
    name: Name
    config: ConfigParam | None = None
    description: Annotated[str, Field(max_length=2048)] | None = None
    metadata: Metadata | None = None
    scope: Scope | None = None


class EnvironmentUpdateParams(Param):
    name: Name | None = None
    config: ConfigParam | None = None
    description: Annotated[str, Field(max_length=2048)] | None = None
    metadata: MetadataPatch | None = None
    scope: Scope | None = None


# Sessions (§3.3).

AgentId = Annotated[str, Field(min_length=1, max_length=256)]


class AgentRefParam(Param):
    type: Literal["agent"]
    id: AgentId
    version: Annotated[int, Field(ge=1)] | None = None


class AgentWithOverridesParam(OpenParam):
    type: Literal["agent_with_overrides"]


AgentParam = (
    AgentId | Annotated[AgentRefParam | AgentWithOverridesParam, Field(discriminator="type")]
)


class BranchCheckoutParam(Param):
    type: Literal["branch"]
    name: Annotated[str, Field(min_length=1, max_length=255)]


class CommitCheckoutParam(Param):
    type: Literal["commit"]
    sha: Annotated[str, Field(min_length=1, max_length=64)]


class GitHubRepositoryParam(Param):
    type: Literal["github_repository"]
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    authorization_token: str | None = None
    checkout: (
        Annotated[BranchCheckoutParam | CommitCheckoutParam, Field(discriminator="type")] | None
    ) = None
    mount_path: Annotated[str, Field(max_length=1024)] | None = None


class FileResourceParam(Param):
    type: Literal["file"]
    file_id: Annotated[str, Field(min_length=1, max_length=128)]
    mount_path: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^/")] | None = None
    """Default `/mnt/session/uploads/<file_id>`."""


class MemoryStoreResourceParam(OpenParam):
    type: Literal["memory_store"]


ResourceParam = Annotated[
    GitHubRepositoryParam | FileResourceParam | MemoryStoreResourceParam,
    Field(discriminator="type"),
]


class MoneyParam(Param):
    amount: Annotated[str, Field(pattern=r"^[0-9]{1,12}$")]
    """Minor units (cents) as an integer string."""
    currency: Literal["USD"]


class BudgetParam(Param):
    type: Literal["limit"]
    max_list_cost: MoneyParam


class UserMessageParam(Param):
    type: Literal["user.message"]
    content: Annotated[list[UserContent], Field(min_length=1, max_length=1000)]


class TextRubricParam(Param):
    type: Literal["text"]
    content: Annotated[str, Field(min_length=1, max_length=100_000)]


class FileRubricParam(Param):
    type: Literal["file"]
    file_id: Annotated[str, Field(min_length=1, max_length=128)]
    """A Files API file of the caller's namespace, UTF-8 text; stored as its text."""


class DefineOutcomeParam(Param):
    type: Literal["user.define_outcome"]
    description: Annotated[str, Field(min_length=1, max_length=100_000)]
    rubric: Annotated[TextRubricParam | FileRubricParam, Field(discriminator="type")]
    max_iterations: Annotated[int, Field(ge=1, le=20)] | None = None
    """Evaluate-then-revise cycles; unset means 3."""


InitialEventParam = Annotated[UserMessageParam | DefineOutcomeParam, Field(discriminator="type")]


class SessionCreateParams(Param):
    agent: AgentParam
    """An agent id, `{type: agent, id, version?}`; Paddock also takes the Agent's
    Kubernetes name."""
    environment_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """Required by the Managed Agents API; Paddock falls back to the Agent's
    `environmentRef` when it is omitted."""
    title: Annotated[str, Field(max_length=256)] | None = None
    metadata: Metadata | None = None
    resources: Annotated[list[ResourceParam], Field(max_length=20)] | None = None
    vault_ids: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=20)]
        | None
    ) = None
    """Create-only: the vaults whose credentials the session may use."""
    initial_events: Annotated[list[InitialEventParam], Field(max_length=50)] | None = None
    budget: BudgetParam | None = None


class ResourceAddParams(RootModel[ResourceParam]):
    """`sessions.resources.add`: a file (the SDK's one type) or, as the reference allows, a
    repository."""


class ResourceUpdateParams(Param):
    authorization_token: Annotated[str, Field(min_length=1, max_length=4096)]


class SessionUpdateParams(Param):
    title: Annotated[str, Field(max_length=256)] | None = None
    metadata: MetadataPatch | None = None
    budget: BudgetParam | None = None
    """Replaces the budget; null removes it."""
    agent: dict[str, Any] | None = None
    vault_ids: list[str] | None = None


# Session events (§5.2).

EventId = Annotated[str, Field(min_length=1, max_length=64)]


class UserInterruptParam(Param):
    type: Literal["user.interrupt"]
    session_thread_id: EventId | None = None
    """Interrupt only this thread (absent: the whole session, its threads with it)."""


class UserToolConfirmationParam(Param):
    type: Literal["user.tool_confirmation"]
    tool_use_id: EventId
    result: Literal["allow", "deny"]
    deny_message: Annotated[str, Field(max_length=10_000)] | None = None
    message: Annotated[str, Field(max_length=10_000)] | None = None
    """Older docs' name of `deny_message`."""
    session_thread_id: EventId | None = None
    """The thread the call is of (optional: the server routes by ``tool_use_id``)."""


class UserCustomToolResultParam(Param):
    type: Literal["user.custom_tool_result"]
    custom_tool_use_id: EventId
    content: Annotated[list[ToolResultContent], Field(max_length=1000)] | None = None
    is_error: bool | None = None
    session_thread_id: EventId | None = None
    """The thread the call is of (optional: the server routes by ``custom_tool_use_id``)."""


EventParam = Annotated[
    UserMessageParam
    | UserInterruptParam
    | UserToolConfirmationParam
    | UserCustomToolResultParam
    | DefineOutcomeParam,
    Field(discriminator="type"),
]


class SendEventsParams(Param):
    events: Annotated[list[EventParam], Field(min_length=1, max_length=100)]


# Vaults and credentials (§2.6, §3.4).

DisplayName = Annotated[str, Field(min_length=1, max_length=255)]
Secret = Annotated[str, Field(min_length=1, max_length=16_384)]
"""A secret value: write-only, stored in a Kubernetes Secret and never returned."""
ServerUrl = Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s@#]+$")]


class VaultCreateParams(Param):
    display_name: DisplayName
    metadata: Metadata | None = None


class VaultUpdateParams(Param):
    display_name: DisplayName | None = None
    metadata: MetadataPatch | None = None


class TokenEndpointAuthParam(Param):
    type: Literal["none", "client_secret_basic", "client_secret_post"]
    client_secret: Secret | None = None


class OAuthRefreshParam(Param):
    refresh_token: Secret
    client_id: Annotated[str, Field(min_length=1, max_length=512)]
    token_endpoint: ServerUrl
    token_endpoint_auth: TokenEndpointAuthParam
    scope: Annotated[str, Field(max_length=2048)] | None = None
    resource: Annotated[str, Field(max_length=2048)] | None = None


class StaticBearerParam(Param):
    type: Literal["static_bearer"]
    token: Secret
    mcp_server_url: ServerUrl


class McpOAuthParam(Param):
    type: Literal["mcp_oauth"]
    access_token: Secret
    mcp_server_url: ServerUrl
    expires_at: Annotated[str, Field(max_length=64)] | None = None
    refresh: OAuthRefreshParam | None = None


class EnvironmentVariableParam(OpenParam):
    type: Literal["environment_variable"]


CredentialAuthParam = Annotated[
    StaticBearerParam | McpOAuthParam | EnvironmentVariableParam, Field(discriminator="type")
]


class CredentialCreateParams(Param):
    auth: CredentialAuthParam
    display_name: Annotated[str, Field(max_length=255)] | None = None
    metadata: Metadata | None = None


class StaticBearerUpdateParam(Param):
    type: Literal["static_bearer"]
    token: Secret | None = None


class OAuthRefreshUpdateParam(Param):
    refresh_token: Secret | None = None
    scope: Annotated[str, Field(max_length=2048)] | None = None
    """An empty string clears the stored scope."""
    token_endpoint_auth: TokenEndpointAuthParam | None = None


class McpOAuthUpdateParam(Param):
    type: Literal["mcp_oauth"]
    access_token: Secret | None = None
    expires_at: Annotated[str, Field(max_length=64)] | None = None
    refresh: OAuthRefreshUpdateParam | None = None


CredentialAuthUpdateParam = Annotated[
    StaticBearerUpdateParam | McpOAuthUpdateParam | EnvironmentVariableParam,
    Field(discriminator="type"),
]


class CredentialUpdateParams(Param):
    auth: CredentialAuthUpdateParam | None = None
    display_name: DisplayName | None = None
    metadata: MetadataPatch | None = None


REQUEST_BODIES: tuple[type[BaseModel], ...] = (
    AgentCreateParams,
    AgentUpdateParams,
    EnvironmentCreateParams,
    EnvironmentUpdateParams,
    SessionCreateParams,
    SessionUpdateParams,
    SendEventsParams,
    ResourceAddParams,
    ResourceUpdateParams,
    VaultCreateParams,
    VaultUpdateParams,
    CredentialCreateParams,
    CredentialUpdateParams,
)
"""The models the OpenAPI document describes as request bodies."""
