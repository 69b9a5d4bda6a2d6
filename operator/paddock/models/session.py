"""Session: one conversation of an Agent. Its transcript lives in Redis, never in etcd."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from paddock.models.agent import AgentSpec, Money
from paddock.models.common import (
    Condition,
    Duration,
    LocalObjectReference,
    Model,
    ObjectMeta,
    cel_rule,
    map_list,
)

SessionPhase = Literal["Pending", "Running", "Idle", "Rescheduling", "Terminated"]
StopReason = Literal[
    "end_turn", "requires_action", "retries_exhausted", "budget_reached", "refusal"
]


class TextBlock(Model):
    """A text content block."""

    type: Literal["text"] = "text"
    """Block type; only `text` is accepted in a manifest."""
    text: Annotated[str, Field(min_length=1, max_length=100_000)]
    """The text."""


class Rubric(Model):
    """How an outcome's work is graded."""

    type: Literal["text"] = "text"
    """Rubric type; a manifest gives the rubric's text."""
    content: Annotated[str, Field(min_length=1, max_length=100_000)]
    """The rubric."""


class InitialEvent(Model):
    """An event appended to the log when the session is created: the task, as a message or
    as an outcome (graded against a rubric after each turn, docs/harness.md)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "self.type == 'user.message' ? has(self.content) && !has(self.rubric) : "
                    "has(self.description) && has(self.rubric) && !has(self.content)",
                    "user.message takes content; user.define_outcome takes description and rubric",
                )
            ]
        }
    }

    type: Literal["user.message", "user.define_outcome"] = "user.message"
    """Event type."""
    content: Annotated[list[TextBlock], Field(min_length=1, max_length=100)] | None = None
    """Content blocks of a `user.message`."""
    description: Annotated[str, Field(min_length=1, max_length=100_000)] | None = None
    """What a `user.define_outcome` asks the agent to produce."""
    rubric: Rubric | None = None
    """How a `user.define_outcome`'s work is graded."""
    max_iterations: Annotated[int, Field(ge=1, le=20)] | None = None
    """Evaluate-then-revise cycles of a `user.define_outcome`; unset means 3."""


class GitRepository(Model):
    """A repository cloned into the sandbox when it is bound, through the credential proxy
    (which adds the Agent's token for the host)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "!(has(self.branch) && has(self.commit))",
                    "branch and commit are mutually exclusive",
                )
            ]
        }
    }

    url: Annotated[str, Field(max_length=2048, pattern=r"^https://[^\s@]+$")]
    """HTTPS clone URL without credentials."""
    branch: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    """Branch to check out. Unset (and no commit): the default branch."""
    commit: Annotated[str, Field(pattern=r"^[0-9a-f]{7,40}$")] | None = None
    """Commit to check out."""
    mount_path: Annotated[str, Field(max_length=1024, pattern=r"^/")] | None = None
    """Where to clone. Unset: `<workingDir>/<repository name>`."""


class FileResource(Model):
    """A file written into the sandbox: inline `content`, or a file of the Files API
    (`fileId`, in the Session's namespace), which the harness streams from the gateway."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.content) != has(self.fileId)",
                    "exactly one of content or fileId must be set",
                )
            ]
        }
    }

    path: Annotated[str, Field(max_length=1024, pattern=r"^/")]
    """Absolute path of the file."""
    content: Annotated[str, Field(max_length=262_144)] | None = None
    """File content (UTF-8 text, at most 256 KiB), written when the sandbox is bound."""
    file_id: Annotated[str, Field(pattern=r"^file_[0-9A-Za-z]{1,64}$")] | None = None
    """A file uploaded with the Files API (`file_...`), mounted before the next tool call."""


class SessionResource(Model):
    """Something mounted into the sandbox: exactly one of `gitRepository` or `file`."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "[has(self.gitRepository), has(self.file)].filter(x, x).size() == 1",
                    "exactly one of gitRepository or file must be set",
                )
            ]
        }
    }

    git_repository: GitRepository | None = None
    """A repository to clone."""
    file: FileResource | None = None
    """A file to write."""


class Budget(Model):
    """Spending caps. When one is reached the session idles with `budget_reached`."""

    max_list_cost: Money | None = None
    """Cap on cost at list prices."""
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    """Cap on input plus output tokens."""


class AgentReference(LocalObjectReference):
    """The Agent that runs a session, and which of its versions."""

    version: Annotated[int, Field(ge=1)] | None = None
    """The Agent version to run (its `metadata.generation` when that version was made; see
    `agent versions` in docs/api-design.md). Unset: the Agent's current version when the
    session is accepted. The session runs this version to its end, whatever later changes."""


class SessionSpec(Model):
    """Desired state of a Session."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.environmentRef) == has(oldSelf.environmentRef) && "
                    "(!has(self.environmentRef) || self.environmentRef == oldSelf.environmentRef)",
                    "environmentRef is immutable",
                ),
                cel_rule(
                    "has(self.vaultIds) == has(oldSelf.vaultIds) && "
                    "(!has(self.vaultIds) || self.vaultIds == oldSelf.vaultIds)",
                    "vaultIds is immutable",
                ),
            ]
        }
    }

    agent_ref: Annotated[
        AgentReference,
        Field(
            json_schema_extra={
                "x-kubernetes-validations": [cel_rule("self == oldSelf", "agentRef is immutable")]
            }
        ),
    ]
    """The Agent that runs this session (and its version). Immutable."""
    environment_ref: LocalObjectReference | None = None
    """The Environment of the sandbox. Unset: the Agent's `environmentRef`."""
    title: Annotated[str, Field(max_length=256)] | None = None
    """Human-readable title."""
    initial_events: Annotated[list[InitialEvent], Field(max_length=50)] = Field(
        default_factory=list
    )
    """Events appended when the session is created; they start the first turn. Read once."""
    resources: Annotated[list[SessionResource], Field(max_length=20)] = Field(default_factory=list)
    """Repositories and files mounted into the sandbox."""
    vault_ids: Annotated[
        list[Annotated[str, Field(pattern=r"^vlt_[0-9A-Za-z]{1,56}$", max_length=60)]],
        Field(max_length=20),
    ] = Field(default_factory=list)
    """Ids (`vlt_…`) of the namespace's Vaults whose credentials this session may use for
    its Agent's MCP servers. Immutable."""
    budget: Budget | None = None
    """Caps for this session. Unset: the Agent's limits."""
    ttl: Duration | None = None
    """Delete the session once it has been idle or terminated for this long."""
    cancel: Annotated[
        bool,
        Field(
            json_schema_extra={
                "x-kubernetes-validations": [
                    cel_rule("!oldSelf || self", "cancel cannot be undone")
                ]
            }
        ),
    ] = False
    """Set to true to stop the session for good: the running turn is interrupted and the
    session is terminated. Cannot be set back to false."""


class Usage(Model):
    """Cumulative usage of the session."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    list_cost: Money | None = None
    """Cost at list prices."""
    active_seconds: float = 0
    """Seconds spent running (billed runtime)."""


class SandboxStatus(Model):
    """The sandbox bound to the session."""

    pod_name: str | None = None
    """The bound sandbox pod."""
    claim: Literal["warm", "cold"] | None = None
    """`warm`: taken from the pool; `cold`: created on demand because the pool was empty."""
    bound_at: datetime | None = None
    """When the sandbox was bound."""


class SessionStatus(Model):
    """Observed state of a Session, synced from its event log."""

    observed_generation: int | None = None
    """The `metadata.generation` this status describes."""
    session_id: Annotated[str, Field(pattern=r"^sesn_[0-9A-Za-z]+$")] | None = None
    """Id of the session in the event log and the Managed Agents API (`sesn_...`)."""
    agent_version: int | None = None
    """The Agent version the session is pinned to (runs to its end)."""
    phase: SessionPhase | None = None
    """`Pending` until a worker picks it up, then `Running`, `Idle`, `Rescheduling` or `Terminated`."""
    stop_reason: StopReason | None = None
    """Why the last turn stopped."""
    usage: Usage | None = None
    """Tokens, cost and active time."""
    event_count: int | None = None
    """Events in the log."""
    last_event_id: str | None = None
    """Id of the newest event synced into this status."""
    last_active_time: datetime | None = None
    """When the session last ran; `ttl` counts from here."""
    sandbox: SandboxStatus | None = None
    """The bound sandbox, if any."""
    conditions: Annotated[list[Condition], Field(json_schema_extra=map_list("type"))] = Field(
        default_factory=list
    )
    """`Ready`: references resolve and the session is accepted; `SandboxBound`; `Scheduled`:
    a harness worker took its input (False with `WaitingForWorker` and why, when none can)."""


def environment_name(session: SessionSpec, agent: AgentSpec | None) -> str | None:
    """The Environment a session runs in: its own, else its Agent's default. Resolved once,
    by whoever starts the session, and kept in its settings in Redis."""
    ref = session.environment_ref or (agent.environment_ref if agent is not None else None)
    return ref.name if ref is not None else None


class Session(Model):
    """One conversation with an Agent. The transcript is an event log in Redis."""

    api_version: Literal["paddock.dev/v1alpha1"] = "paddock.dev/v1alpha1"
    kind: Literal["Session"] = "Session"
    metadata: ObjectMeta = ObjectMeta()
    spec: SessionSpec
    status: SessionStatus | None = None
