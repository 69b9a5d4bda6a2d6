"""Response bodies of the API, as Pydantic models: the converters (`convert/`) build them,
the handlers serialise them (`respond`), and the OpenAPI document is generated from them.

They follow the official SDK's response types (`anthropic/types/beta/...`, reference §2):
every field the SDK reads is here, `null` where the SDK allows it. A field declared with
`omitted()` is left out of the JSON when it is None; every other field is always present.
Session events are the event log's own models (`paddock.eventlog`), sent as stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema

from paddock.eventlog import AnyEvent
from paddock.gateway.params import BuiltinTool


def _is_none(value: object) -> bool:
    return value is None


def omitted() -> Any:
    """A field left out of the JSON when None (the others are sent as `null`)."""
    return Field(default=None, exclude_if=_is_none)


class View(BaseModel):
    # Every field but the `omitted()` ones is in every answer: the schema says so.
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


def respond(view: View) -> web.Response:
    return web.json_response(text=view.model_dump_json())


Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
"""RFC 3339, as the apiserver or the gateway wrote it."""
Metadata = dict[str, str]
SessionStatus = Literal["idle", "running", "rescheduling", "terminated"]

# Agents.

PolicyType = Literal["always_allow", "always_ask"]


class PermissionPolicy(View):
    type: PolicyType


class ToolsetDefaultConfig(View):
    enabled: bool
    permission_policy: PermissionPolicy


class ToolConfig(View):
    name: BuiltinTool
    type: BuiltinTool
    enabled: bool
    permission_policy: PermissionPolicy


class AgentToolset(View):
    type: Literal["agent_toolset_20260401"] = "agent_toolset_20260401"
    default_config: ToolsetDefaultConfig
    configs: list[ToolConfig]


class McpToolConfig(View):
    name: str
    enabled: bool
    permission_policy: PermissionPolicy


class McpToolset(View):
    type: Literal["mcp_toolset"] = "mcp_toolset"
    mcp_server_name: str
    default_config: ToolsetDefaultConfig
    configs: list[McpToolConfig]
    """The per-tool overrides, resolved against the toolset's defaults."""


class CustomTool(View):
    type: Literal["custom"] = "custom"
    name: str
    description: str
    input_schema: dict[str, Any]
    """The JSON Schema as stored (`type: object`)."""


Tool = Annotated[AgentToolset | McpToolset | CustomTool, Field(discriminator="type")]


class McpServer(View):
    type: Literal["url"] = "url"
    name: str
    url: str


class ModelConfig(View):
    id: str
    speed: Literal["standard"] | None = omitted()
    """Absent only on the stand-in for an Agent that is gone."""


class ExecutionIdentity(View):
    type: Literal["service_account"] = "service_account"


class SessionAgent(View):
    """An agent as a session shows it: no metadata, no timestamps."""

    type: Literal["agent"] = "agent"
    id: str
    version: int
    name: str
    description: str | None
    model: ModelConfig
    system: str | None
    tools: list[Tool]
    mcp_servers: list[McpServer]
    skills: list[dict[str, Any]] = []
    """Always empty: Paddock has no skills."""
    multiagent: dict[str, Any] | None = None
    """A coordinator's roster: `{type: coordinator, agents: [{type: agent, id, version}]}`."""
    execution_identity: ExecutionIdentity = ExecutionIdentity()


class Agent(SessionAgent):
    metadata: Metadata
    created_at: Timestamp
    updated_at: Timestamp
    archived_at: Timestamp | None


class AgentPage(View):
    data: list[Agent]
    next_page: str | None


# Environments.


class UnrestrictedNetwork(View):
    type: Literal["unrestricted"] = "unrestricted"


class LimitedNetwork(View):
    type: Literal["limited"] = "limited"
    allowed_hosts: list[str]
    allow_mcp_servers: bool
    allow_package_managers: bool


class Packages(View):
    type: Literal["packages"] = "packages"
    apt: list[str]
    cargo: list[str]
    gem: list[str]
    go: list[str]
    npm: list[str]
    pip: list[str]


class CloudConfig(View):
    type: Literal["cloud"] = "cloud"
    networking: Annotated[UnrestrictedNetwork | LimitedNetwork, Field(discriminator="type")]
    packages: Packages


class Environment(View):
    type: Literal["environment"] = "environment"
    id: str
    name: str
    description: str | None
    metadata: Metadata
    scope: Literal["organization"] = "organization"
    config: CloudConfig
    created_at: Timestamp
    updated_at: Timestamp
    archived_at: Timestamp | None


class EnvironmentPage(View):
    data: list[Environment]
    next_page: str | None


class EnvironmentDeleted(View):
    id: str
    type: Literal["environment_deleted"] = "environment_deleted"


# Sessions.


class BranchCheckout(View):
    type: Literal["branch"] = "branch"
    name: str


class CommitCheckout(View):
    type: Literal["commit"] = "commit"
    sha: str


class GitHubRepositoryResource(View):
    id: str
    created_at: Timestamp
    updated_at: Timestamp
    type: Literal["github_repository"] = "github_repository"
    url: str
    mount_path: str
    checkout: Annotated[BranchCheckout | CommitCheckout, Field(discriminator="type")] | None


class FileResource(View):
    id: str
    created_at: Timestamp
    updated_at: Timestamp
    type: Literal["file"] = "file"
    file_id: str
    mount_path: str


SessionResource = Annotated[GitHubRepositoryResource | FileResource, Field(discriminator="type")]


class MonetaryAmount(View):
    amount: str
    """Minor units (cents) as an integer string."""
    currency: Literal["USD"]


class BudgetLimit(View):
    type: Literal["limit"] = "limit"
    max_list_cost: MonetaryAmount


class CacheCreation(View):
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0


class SessionStats(View):
    active_seconds: float
    duration_seconds: float


class SessionUsage(View):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation: CacheCreation = CacheCreation()
    active_seconds: float = 0
    list_cost: MonetaryAmount | None = omitted()
    """Once the operator has priced the session's usage."""


class OutcomeEvaluation(View):
    type: Literal["outcome_evaluation"] = "outcome_evaluation"
    outcome_id: str
    description: str
    iteration: int
    result: Literal[
        "pending",
        "running",
        "evaluating",
        "satisfied",
        "max_iterations_reached",
        "failed",
        "interrupted",
    ]
    explanation: str | None = None
    completed_at: Timestamp | None = None


class Session(View):
    type: Literal["session"] = "session"
    id: str
    status: SessionStatus
    title: str | None
    environment_id: str
    agent: SessionAgent
    resources: list[SessionResource]
    vault_ids: list[str] = []
    metadata: Metadata
    outcome_evaluations: list[OutcomeEvaluation] = []
    """One per `user.define_outcome`, folded from the log (`gateway.outcomes`)."""
    budget: BudgetLimit | None
    deployment_id: None = None
    stats: SessionStats
    usage: SessionUsage
    created_at: Timestamp
    updated_at: Timestamp
    archived_at: Timestamp | None
    status_message: str | None
    """A Paddock extension: why an idle or rescheduling session makes no progress."""


class SessionPage(View):
    data: list[Session]
    next_page: str | None
    prev_page: str | None


class SessionDeleted(View):
    id: str
    type: Literal["session_deleted"] = "session_deleted"


# Events.


class SentEvents(View):
    data: list[AnyEvent]
    """The events as stored; `processed_at` is null until the agent takes them."""


class EventPage(View):
    data: list[AnyEvent]
    next_page: str | None


# Session resources (`sessions.resources`).


class AnySessionResource(RootModel[SessionResource]):
    """One session resource, of either type (`sessions.resources` add, get)."""


class SessionResourcePage(View):
    data: list[SessionResource]
    next_page: str | None


class SessionResourceDeleted(View):
    id: str
    type: Literal["session_resource_deleted"] = "session_resource_deleted"


# Files (`files`).


class FileScope(View):
    type: Literal["session"] = "session"
    id: str


class FileMetadata(View):
    id: str
    type: Literal["file"] = "file"
    filename: str
    mime_type: str
    size_bytes: int
    created_at: Timestamp
    downloadable: bool
    expires_at: Timestamp | None
    scope: FileScope | None
    """The session whose outputs directory the file came from; null for an upload."""


class FilePage(View):
    data: list[FileMetadata]
    next_page: str | None


class FileDeleted(View):
    id: str
    type: Literal["file_deleted"] = "file_deleted"


# Vaults and credentials (`vaults`, `vaults.credentials`). No secret value is ever here.


class Vault(View):
    type: Literal["vault"] = "vault"
    id: str
    display_name: str
    metadata: Metadata
    created_at: Timestamp
    updated_at: Timestamp
    archived_at: Timestamp | None


class VaultPage(View):
    data: list[Vault]
    next_page: str | None


class VaultDeleted(View):
    id: str
    type: Literal["vault_deleted"] = "vault_deleted"


class TokenEndpointAuth(View):
    type: Literal["none", "client_secret_basic", "client_secret_post"]


class OAuthRefresh(View):
    client_id: str
    token_endpoint: str
    token_endpoint_auth: TokenEndpointAuth
    resource: str | None
    scope: str | None


class StaticBearerAuth(View):
    type: Literal["static_bearer"] = "static_bearer"
    mcp_server_url: str


class McpOAuthAuth(View):
    type: Literal["mcp_oauth"] = "mcp_oauth"
    mcp_server_url: str
    expires_at: Timestamp | None = omitted()
    refresh: OAuthRefresh | None


class Credential(View):
    type: Literal["vault_credential"] = "vault_credential"
    id: str
    vault_id: str
    display_name: str | None
    metadata: Metadata
    auth: Annotated[StaticBearerAuth | McpOAuthAuth, Field(discriminator="type")]
    created_at: Timestamp
    updated_at: Timestamp
    archived_at: Timestamp | None


class CredentialPage(View):
    data: list[Credential]
    next_page: str | None


class CredentialDeleted(View):
    id: str
    type: Literal["vault_credential_deleted"] = "vault_credential_deleted"


class CredentialValidation(View):
    type: Literal["vault_credential_validation"] = "vault_credential_validation"
    credential_id: str
    vault_id: str
    has_refresh_token: bool
    status: Literal["valid", "invalid", "unknown"]
    mcp_probe: None = None
    refresh: None = None
    validated_at: Timestamp
    status_message: str | None = omitted()
    """A Paddock extension: why the status is `unknown`."""


# Errors (reference §1.4).


class ErrorObject(View):
    type: str
    """`invalid_request_error`, `not_found_error`, ... (`errors.ERROR_TYPES`)."""
    message: str
    details: dict[str, Any] | None = omitted()


class ErrorResponse(View):
    type: Literal["error"] = "error"
    error: ErrorObject
    request_id: str


# The console's read-only status (a Paddock extension: gateway/console.py).


class ResourceCondition(View):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


class ConsoleAgent(View):
    """An Agent as the operator sees it: whether its harness runs."""

    id: str
    name: str
    conditions: list[ResourceCondition]
    replicas: int | None
    ready_replicas: int | None
    active_sessions: int | None


class WarmPoolState(View):
    size: int | None
    """`warmPool.size`: the sandboxes the pool aims for."""
    desired: int | None
    ready: int | None
    bound: int | None


class ConsoleEnvironment(View):
    """An Environment as the operator sees it: its warm pool."""

    id: str
    name: str
    conditions: list[ResourceCondition]
    warm_pool: WarmPoolState


class ConsoleSession(View):
    """A Session's phase and stop reason as the operator synced them (`status`)."""

    id: str
    name: str
    phase: str | None
    stop_reason: str | None


class ConsoleAgentList(View):
    data: list[ConsoleAgent]


class ConsoleEnvironmentList(View):
    data: list[ConsoleEnvironment]


class ConsoleSessionList(View):
    data: list[ConsoleSession]


RESPONSE_BODIES: tuple[type[BaseModel], ...] = (
    Agent,
    AgentPage,
    Environment,
    EnvironmentPage,
    EnvironmentDeleted,
    Session,
    SessionPage,
    SessionDeleted,
    SentEvents,
    EventPage,
    AnySessionResource,
    SessionResourcePage,
    SessionResourceDeleted,
    FileMetadata,
    FilePage,
    FileDeleted,
    Vault,
    VaultPage,
    VaultDeleted,
    Credential,
    CredentialPage,
    CredentialDeleted,
    CredentialValidation,
    ConsoleAgentList,
    ConsoleEnvironmentList,
    ConsoleSessionList,
    ErrorResponse,
)
"""The models the OpenAPI document describes as response bodies."""
