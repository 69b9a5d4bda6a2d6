"""The proxy's configuration: a YAML file rendered by the operator into a ConfigMap.

`parse_config` either returns a fully validated `ProxyConfig` or raises `ConfigError` with one
line per problem, each naming the field (``environments.default.mode: ...``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from paddock.models import Hostname, NetworkingMode, ObjectName
from paddock.proxy.addresses import IPAddress, classify, parse_ip

Port = Annotated[int, Field(ge=1, le=65535)]


class ConfigError(Exception):
    """The config file is missing, is not YAML, or does not validate."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently drop a rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(_Strict):
    """An address the proxy listens on."""

    host: str
    port: Port

    @field_validator("host")
    @classmethod
    def _ip_literal(cls, host: str) -> str:
        if parse_ip(host) is None:
            raise ValueError(f"{host!r} is not an IP address")
        return host


class Listeners(_Strict):
    """The three listeners. They are bound at start; changing them needs a restart."""

    api: Listener = Listener(host="127.0.0.1", port=8081)
    """Claude API reverse proxy for the harness in the same pod. Loopback only."""
    egress: Listener = Listener(host="0.0.0.0", port=3128)
    """HTTP forward proxy for the sandboxes: their only way out."""
    admin: Listener = Listener(host="127.0.0.1", port=8082)
    """Token minting and health for the harness in the same pod. Loopback only."""

    @model_validator(mode="after")
    def _check(self) -> Listeners:
        # The API listener injects the API key and the admin listener mints egress tokens:
        # anything off-loopback could use them from outside the pod.
        for name in ("api", "admin"):
            ip = parse_ip(getattr(self, name).host)
            if ip is None or not ip.is_loopback:
                raise ValueError(f"{name} must listen on a loopback address")
        if len(self.ports) != 3:
            raise ValueError("the three listeners need three different ports")
        return self

    @property
    def ports(self) -> frozenset[int]:
        """The proxy's own ports, which egress never connects to."""
        return frozenset({self.api.port, self.egress.port, self.admin.port})


class EnvironmentPolicy(_Strict):
    """Egress rules of one Environment (its `spec.networking`)."""

    mode: NetworkingMode = "none"
    """`none` refuses all egress, `limited` allows `allowed_domains`, `open` any public host."""
    allowed_domains: list[Hostname] = Field(default_factory=list)
    """Hosts allowed in `limited` mode; `*.example.com` matches every subdomain."""
    allow_package_managers: bool = False
    """In `limited` mode, also allow the public package registries."""

    @model_validator(mode="after")
    def _limited_only(self) -> EnvironmentPolicy:
        # Same rules as the Environment CRD, so a hand-written config cannot mean more.
        if self.mode != "limited" and (self.allowed_domains or self.allow_package_managers):
            raise ValueError(
                "allowed_domains and allow_package_managers may only be set when mode is 'limited'"
            )
        return self


ApiMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class ApiRoute(_Strict):
    """Requests on the git path that get the host's credential besides git smart-HTTP: one of
    `methods` to a path under `path_prefix`."""

    methods: Annotated[list[ApiMethod], Field(min_length=1)]
    """Methods that get the credential (never TRACE, OPTIONS or CONNECT)."""
    path_prefix: Annotated[
        str, Field(pattern=r"^/([A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*/)*$")
    ]
    """A path ending in `/`, for example `/api/v4/`; `/` means every path. No segment starts
    with a dot and nothing is percent-encoded, so upstream normalization cannot lead outside
    it."""


class Credential(_Strict):
    """A token the proxy adds to git smart-HTTP requests for `host` on the git path, and to
    the requests `api_routes` name."""

    host: Hostname
    """Host the token is for; `*.example.com` matches every subdomain."""
    secret_file: Path
    """Mounted Secret file holding the token; re-read when it changes."""
    scheme: Literal["bearer", "basic"] = "bearer"
    """`bearer`: `Authorization: Bearer <token>`; `basic`: user `x-access-token`, password
    `<token>` (what GitHub and most git hosts accept)."""
    api_routes: list[ApiRoute] = Field(default_factory=list)
    """Non-git requests that get the credential too (an HTTPS API of the host)."""


class McpServer(_Strict):
    """An MCP server of the Agent (its `spec.mcpServers`), reached by the harness at
    `http://<api listener>/mcp/<name>`."""

    name: Annotated[str, Field(min_length=1, max_length=255)]
    """The Agent's name for the server (`tools.mcp[].serverName`)."""
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")]
    """Its streamable-HTTP endpoint; subpaths and queries of a request are appended."""


class _VaultCredentialBase(_Strict):
    """What every vault credential has: whose it is and which MCP server it is for."""

    vault_id: Annotated[str, Field(min_length=1, max_length=128)]
    credential_id: Annotated[str, Field(min_length=1, max_length=128)]
    mcp_server_url: Annotated[str, Field(max_length=2048, pattern=r"^https?://")]
    """Matched exactly against an `mcp_servers[].url`."""


class StaticBearerCredential(_VaultCredentialBase):
    """A vault's `static_bearer` credential: `Authorization: Bearer <token file content>`."""

    type: Literal["static_bearer"]
    token_file: Path
    """Mounted Secret file holding the token; re-read when it changes."""


class OAuthRefreshConfig(_Strict):
    """The `refresh_token` grant of an `mcp_oauth` credential (paddock.proxy.oauth)."""

    token_endpoint: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s@#]+$")]
    """The only URL the proxy sends this credential's refresh token to."""
    client_id: str
    refresh_token_file: Path
    token_endpoint_auth: Literal["none", "client_secret_basic", "client_secret_post"] = "none"
    client_secret_file: Path | None = None
    scope: str | None = None
    resource: str | None = None

    @model_validator(mode="after")
    def _secret(self) -> OAuthRefreshConfig:
        if (self.token_endpoint_auth == "none") != (self.client_secret_file is None):
            raise ValueError(
                "client_secret_file goes with client_secret_basic or client_secret_post"
            )
        return self


class McpOAuthCredential(_VaultCredentialBase):
    """A vault credential: an OAuth access token for the MCP server at `mcp_server_url`,
    refreshed before `expires_at` (and after a 401) when `refresh` is set."""

    type: Literal["mcp_oauth"]
    access_token_file: Path
    expires_at: datetime | None = None
    refresh: OAuthRefreshConfig | None = None


VaultCredential = Annotated[
    StaticBearerCredential | McpOAuthCredential, Field(discriminator="type")
]
"""A vault credential, by `type`."""


class AddressException(_Strict):
    """One non-public ip:port that egress may reach anyway. For development and tests only."""

    ip: IPAddress
    port: Port

    @model_validator(mode="after")
    def _internal_only(self) -> AddressException:
        category = classify(self.ip)
        if category not in ("loopback", "private"):
            raise ValueError(
                f"{self} is {category or 'public'}; only loopback and private addresses can be "
                "excepted"
            )
        return self

    def __str__(self) -> str:
        host = f"[{self.ip}]" if self.ip.version == 6 else str(self.ip)
        return f"{host}:{self.port}"


def _parse_exception(value: object) -> object:
    """Accept ``"127.0.0.1:8443"`` and ``"[::1]:8443"``; anything else goes to normal validation."""
    if not isinstance(value, str):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{value!r} is not ip:port")
    ip = parse_ip(host)
    if ip is None:
        raise ValueError(f"{value!r} is not ip:port")
    return {"ip": ip, "port": int(port)}


class ProxyConfig(_Strict):
    """Everything the proxy reads from its config file."""

    listeners: Listeners = Listeners()
    upstream: Annotated[str, Field(pattern=r"^https?://[^/?#]+(/[^?#]*)?$")] = (
        "https://api.anthropic.com"
    )
    """Base URL of the Claude API; request paths are appended to it."""
    api_key_file: Path
    """Mounted Secret file with the Claude API key."""
    token_key_file: Path
    """Mounted Secret file with the HMAC key that signs egress tokens (at least 32 bytes)."""
    token_max_age_seconds: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    """Egress tokens older than this are refused. Rotating the key file revokes all tokens."""
    max_egress_connections: Annotated[int, Field(ge=1)] = 512
    """Open egress connections beyond this are closed at once, so a flood from a sandbox cannot
    exhaust the file descriptors the API listener needs."""
    environments: dict[ObjectName, EnvironmentPolicy] = Field(default_factory=dict)
    """Egress policy per Environment name; tokens name one of these."""
    credentials: list[Credential] = Field(default_factory=list)
    """Per-host tokens injected on the git path."""
    mcp_servers: list[McpServer] = Field(default_factory=list)
    """The Agent's MCP servers, by name, for the API listener's `/mcp/<name>` route."""
    vault_credentials: list[VaultCredential] = Field(default_factory=list)
    """The namespace's vault credentials for MCP servers; a session's vault ids pick them."""
    blocked_ports: list[Port] = Field(default_factory=lambda: [6379])
    """Ports egress never connects to, on any host (Redis by default)."""
    address_exceptions: list[AddressException] = Field(default_factory=list)
    """Development and tests only: loopback or private ip:port pairs egress may reach. Never the
    metadata address, a blocked port, or one of the proxy's own ports."""
    upstream_scheme_overrides: dict[str, Literal["http", "https"]] = Field(default_factory=dict)
    """Development and tests only: git-path authorities (``host`` or ``host:port``) forwarded
    with another scheme than https. With ``http`` the injected token crosses the network in
    clear text."""

    @field_validator("address_exceptions", mode="before")
    @classmethod
    def _parse_exceptions(cls, value: object) -> object:
        if isinstance(value, list):
            return [_parse_exception(item) for item in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> ProxyConfig:
        hosts = [credential.host for credential in self.credentials]
        if len(hosts) != len(set(hosts)):
            raise ValueError("credentials: each host may appear only once")
        names = [server.name for server in self.mcp_servers]
        if len(names) != len(set(names)):
            raise ValueError("mcp_servers: each name may appear only once")
        forbidden_ports = self.listeners.ports | set(self.blocked_ports)
        for exception in self.address_exceptions:
            if exception.port in forbidden_ports:
                raise ValueError(
                    f"address_exceptions: {exception} names a blocked port or one of the "
                    "proxy's own ports"
                )
        return self


def parse_config(text: str | bytes, source: str = "config") -> ProxyConfig:
    """Validate YAML text; raise `ConfigError` listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return ProxyConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            lines.append(f"{source}: {where}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError("\n".join(lines)) from None
