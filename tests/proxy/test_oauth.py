"""`mcp_oauth` vault credentials against a real authorization server and an MCP-like server
on loopback: the access token is refreshed before it expires and after a 401, rotated
refresh tokens are kept, a revoked refresh token is a `CredentialError` with a stable
reason, and no token is in any error message or metric."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from paddock.proxy.config import ProxyConfig
from paddock.proxy.files import SecretFiles
from paddock.proxy.oauth import REFRESH_AHEAD_S
from paddock.proxy.vaults import CredentialError, CredentialFailure, VaultCredentials
from paddock.testing.oauth import AuthorizationServer, Clock, ProtectedServer

pytestmark = pytest.mark.timeout(30)
VAULT, CREDENTIAL = "vlt_team", "vcrd_docs"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def build() -> AsyncIterator[Callable[..., VaultCredentials]]:
    """`VaultCredentials` of a config (their HTTP sessions closed after the test)."""
    made: list[VaultCredentials] = []

    def make(config: ProxyConfig, **options: Any) -> VaultCredentials:
        made.append(VaultCredentials(config, SecretFiles(), **options))
        return made[-1]

    yield make
    for vaults in made:
        await vaults.close()


def write(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    return path


def config(
    tmp_path: Path,
    auth: AuthorizationServer,
    server: ProtectedServer,
    tokens: tuple[str, str, float],
    *,
    except_endpoint: bool = True,
    client_auth: str = "client_secret_basic",
) -> ProxyConfig:
    access, refresh, expires = tokens
    directory = tmp_path / "vaults" / VAULT / CREDENTIAL
    refresh_config: dict[str, Any] = {
        "token_endpoint": auth.token_endpoint,
        "client_id": auth.client_id,
        "refresh_token_file": str(write(directory / "refresh_token", refresh)),
        "token_endpoint_auth": client_auth,
        "scope": "tools",
    }
    if client_auth != "none":
        secret = write(directory / "client_secret", auth.client_secret)
        refresh_config["client_secret_file"] = str(secret)
    return ProxyConfig.model_validate(
        {
            "api_key_file": str(write(tmp_path / "api-key", "sk")),
            "token_key_file": str(write(tmp_path / "token-key", "k" * 32)),
            "address_exceptions": [f"127.0.0.1:{auth.port}"] if except_endpoint else [],
            "vault_credentials": [
                {
                    "type": "mcp_oauth",
                    "vault_id": VAULT,
                    "credential_id": CREDENTIAL,
                    "mcp_server_url": server.url,
                    "access_token_file": str(write(directory / "access_token", access)),
                    "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
                    "refresh": refresh_config,
                }
            ],
        }
    )


async def call(http: aiohttp.ClientSession, server: ProtectedServer, header: str) -> int:
    async with http.post(server.url, json={}, headers={"Authorization": header}) as response:
        return response.status


async def test_an_expiring_token_is_refreshed_and_a_revoked_refresh_token_fails(
    tmp_path: Path,
    auth_server: AuthorizationServer,
    protected: ProtectedServer,
    clock: Clock,
    http: aiohttp.ClientSession,
    build: Callable[..., VaultCredentials],
) -> None:
    first = auth_server.issue()
    vaults = build(config(tmp_path, auth_server, protected, first), clock=clock)
    url = protected.url
    # Another vault of the session, or a URL without a credential: nothing to add.
    assert await vaults.authorization(url, ["vlt_other"]) is None
    assert await vaults.authorization("https://elsewhere.example/mcp", [VAULT]) is None

    header = await vaults.authorization(url, ["vlt_other", VAULT])
    assert header == f"Bearer {first[0]}"
    assert await call(http, protected, header) == 200
    assert auth_server.refreshes == []

    # Close to expiry: refreshed before the request, with the configured client and scope.
    clock.advance(auth_server.access_ttl_s - REFRESH_AHEAD_S / 2)
    refreshed = await vaults.authorization(url, [VAULT])
    assert refreshed is not None
    assert refreshed != header
    assert len(auth_server.refreshes) == 1
    assert auth_server.refreshes[0]["refresh_token"] == first[1]
    assert auth_server.refreshes[0]["scope"] == "tools"
    clock.advance(REFRESH_AHEAD_S)  # the first token is dead now, the new one is not
    assert await call(http, protected, header) == 401
    assert await call(http, protected, refreshed) == 200
    assert await vaults.authorization(url, [VAULT]) == refreshed  # no second refresh

    # A 401 (the server revoked the token early): one refresh, with the rotated token.
    auth_server.revoke(refreshed.removeprefix("Bearer "))
    assert await call(http, protected, refreshed) == 401
    retried = await vaults.unauthorized(url, [VAULT], refreshed)
    assert await call(http, protected, retried) == 200
    assert len(auth_server.refreshes) == 2
    assert auth_server.refreshes[1]["refresh_token"] not in (first[1], "")

    # The refresh token is revoked: the next refresh fails with the documented reason.
    for token in list(auth_server.refresh):
        auth_server.revoke(token)
    clock.advance(auth_server.access_ttl_s)
    with pytest.raises(CredentialError) as failed:
        await vaults.authorization(url, [VAULT])
    assert failed.value.reason == CredentialFailure.REFRESH_REJECTED
    assert "invalid_grant" in failed.value.message
    # The refused refresh token is not sent again (each MCP request would ask once more).
    asked = len(auth_server.refreshes)
    with pytest.raises(CredentialError) as again:
        await vaults.authorization(url, [VAULT])
    assert again.value.reason == CredentialFailure.REFRESH_REJECTED
    assert len(auth_server.refreshes) == asked
    metrics = vaults.metrics()
    assert (
        f'paddock_proxy_vault_credential_failing{{vault_id="{VAULT}",credential_id="{CREDENTIAL}",'
        'reason="refresh-rejected"} 1'
    ) in metrics
    secrets = [first[0], first[1], auth_server.client_secret, *auth_server.access]
    secrets += [form["refresh_token"] for form in auth_server.refreshes]
    for secret in secrets:
        assert secret not in failed.value.message
        assert secret not in metrics


async def test_a_reload_keeps_refreshed_tokens_and_an_update_replaces_them(
    tmp_path: Path,
    auth_server: AuthorizationServer,
    protected: ProtectedServer,
    clock: Clock,
    http: aiohttp.ClientSession,
    build: Callable[..., VaultCredentials],
) -> None:
    first = config(tmp_path, auth_server, protected, auth_server.issue())
    vaults = build(first, clock=clock)
    clock.advance(auth_server.access_ttl_s)
    refreshed = await vaults.authorization(protected.url, [VAULT])
    # A config reload (another Environment, say) keeps the state of unchanged credentials.
    reloaded = build(first, previous=vaults, clock=clock)
    assert await reloaded.authorization(protected.url, [VAULT]) == refreshed
    assert len(auth_server.refreshes) == 1
    # An API update: a new access token in the Secret and its expiry in the config.
    new_tokens = auth_server.issue()
    updated = config(tmp_path, auth_server, protected, new_tokens)
    again = build(updated, previous=reloaded, clock=clock)
    header = await again.authorization(protected.url, [VAULT])
    assert header == f"Bearer {new_tokens[0]}"
    assert await call(http, protected, header) == 200
    assert len(auth_server.refreshes) == 1


@pytest.mark.parametrize("client_auth", ["client_secret_post", "none"])
async def test_the_other_client_authentications(
    tmp_path: Path,
    clock: Clock,
    http: aiohttp.ClientSession,
    client_auth: str,
    build: Callable[..., VaultCredentials],
) -> None:
    auth = await AuthorizationServer(clock=clock, client_auth=client_auth, rotate=False).start()  # type: ignore[arg-type]
    server = await ProtectedServer(valid=auth.valid).start()
    try:
        vaults = build(
            config(tmp_path, auth, server, auth.issue(), client_auth=client_auth), clock=clock
        )
        clock.advance(auth.access_ttl_s)
        header = await vaults.authorization(server.url, [VAULT])
        assert header is not None
        assert await call(http, server, header) == 200
        clock.advance(auth.access_ttl_s)  # the refresh token was not rotated: still good
        assert (
            await call(http, server, await vaults.authorization(server.url, [VAULT]) or "") == 200
        )
    finally:
        await server.close()
        await auth.close()


async def test_a_wrong_client_secret_and_a_private_token_endpoint_are_refused(
    tmp_path: Path,
    auth_server: AuthorizationServer,
    protected: ProtectedServer,
    clock: Clock,
    http: aiohttp.ClientSession,
    build: Callable[..., VaultCredentials],
) -> None:
    tokens = auth_server.issue()
    refused = config(tmp_path / "a", auth_server, protected, tokens, except_endpoint=False)
    vaults = build(refused, clock=clock)
    clock.advance(auth_server.access_ttl_s)
    with pytest.raises(CredentialError) as forbidden:
        await vaults.authorization(protected.url, [VAULT])
    # The token endpoint is reached only where egress could go: loopback needs an exception.
    assert forbidden.value.reason == CredentialFailure.TOKEN_ENDPOINT_FORBIDDEN
    assert auth_server.refreshes == []

    wrong = config(tmp_path / "b", auth_server, protected, tokens)
    credential = wrong.vault_credentials[0]
    assert credential.type == "mcp_oauth"
    assert credential.refresh is not None
    assert credential.refresh.client_secret_file is not None
    write(credential.refresh.client_secret_file, "not-the-secret")
    with pytest.raises(CredentialError) as rejected:
        await build(wrong, clock=clock).authorization(protected.url, [VAULT])
    assert rejected.value.reason == CredentialFailure.REFRESH_REJECTED
    assert "invalid_client" in rejected.value.message
