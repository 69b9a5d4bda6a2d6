"""The sandbox's HTTP wire types, shared by the server and its client.

Field names are snake_case on the wire. Unknown fields are ignored so that a newer peer
can add fields without breaking an older one.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from paddock.models import FileResource, GitRepository

SESSION_ID_PATTERN = r"^sesn_[0-9A-Za-z]+$"
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")


class Wire(BaseModel):
    """Base of every wire type."""

    model_config = ConfigDict(extra="ignore")


class TextContent(Wire):
    """A text block of a tool result."""

    type: Literal["text"] = "text"
    text: str


class ToolResult(Wire):
    """What a tool call produced, in the shape of a `tool_result` content list."""

    content: list[TextContent]
    is_error: bool = False

    @classmethod
    def of(cls, text: str, *, is_error: bool = False) -> ToolResult:
        """A result with one text block (never empty: the Messages API rejects empty text)."""
        return cls(content=[TextContent(text=text or "(no output)")], is_error=is_error)

    @property
    def text(self) -> str:
        """All text blocks joined."""
        return "".join(block.text for block in self.content)


class ToolCall(Wire):
    """Body of `POST /v1/tools/{name}`."""

    input: dict[str, Any]
    call_id: str | None = Field(default=None, min_length=1, max_length=256)
    """The `tool_use` id. A call id runs at most once; repeats get the recorded result."""


class BindRequest(Wire):
    """Body of `POST /v1/bind`: everything session-specific, delivered to a warm sandbox."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    proxy_url: str
    """The credential proxy, `http://host:port`; the sandbox's only egress."""
    proxy_token: str = Field(min_length=1, max_length=4096)
    """Per-session token the proxy accepts from this sandbox (not an upstream credential)."""
    git_credential_hosts: list[str] = Field(default_factory=list, max_length=64)
    """Hosts whose HTTPS git traffic goes to the proxy's `/git/<host>/` route, which adds the
    Agent's token upstream."""
    repositories: list[GitRepository] = Field(default_factory=list, max_length=20)
    files: list[FileResource] = Field(default_factory=list, max_length=1000)

    @field_validator("proxy_url")
    @classmethod
    def _plain_origin(cls, value: str) -> str:
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError("must be an origin like http://host:port, without credentials or path")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("git_credential_hosts")
    @classmethod
    def _hostnames(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not _HOST.match(host):
                raise ValueError(f"not a host name: {host!r}")
        return hosts


class RepositoryStatus(Wire):
    """The outcome of cloning one repository. A failed clone never fails the bind."""

    url: str
    mount_path: str
    ok: bool
    error: str | None = None


class FileStatus(Wire):
    """The outcome of writing one file."""

    path: str
    ok: bool
    error: str | None = None


class BindResult(Wire):
    """Response of `POST /v1/bind`; a repeated bind of the same session returns the same result."""

    session_id: str
    repositories: list[RepositoryStatus] = Field(default_factory=list)
    files: list[FileStatus] = Field(default_factory=list)


class CancelResult(Wire):
    """Response of `POST /v1/calls/{call_id}/cancel`."""

    cancelled: bool
    """True when the call was stopped (its process group killed) or prevented from starting."""


class Stats(Wire):
    """Response of `GET /v1/stats`: real executions, after call-id deduplication."""

    executions: dict[str, int]
    total: int


class ErrorDetail(Wire):
    type: str
    message: str


class ErrorBody(Wire):
    """Every non-2xx response, in the Anthropic error envelope."""

    type: Literal["error"] = "error"
    error: ErrorDetail
