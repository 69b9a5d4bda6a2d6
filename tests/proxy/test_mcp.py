"""The API listener's MCP route: `/mcp/<server>` forwarded to the server's URL with the
session's vault credential, the vault header and caller credentials dropped, streams
unbuffered, unknown servers refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from tests.proxy.support import Upstream

from paddock.testing.mcpserver import McpServerProcess
from paddock.testing.proxy import ProxyProcess, Secrets

TOKEN = "mcp-static-" + "7" * 24


def authority(url: str) -> str:
    """The ``ip:port`` of a test server on loopback, for the proxy's address exceptions."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


@pytest.fixture
def proxy(tmp_path: Path, secret_files: Secrets, upstream: Upstream) -> Iterator[ProxyProcess]:
    token_file = tmp_path / "vault-token"
    token_file.write_text(TOKEN + "\n")
    other_file = tmp_path / "other-token"
    other_file.write_text("other-vault-token\n")
    process = ProxyProcess(
        tmp_path,
        secret_files,
        upstream=upstream.url,
        address_exceptions=[authority(upstream.url)],
        mcp_servers=[
            {"name": "docs", "url": f"{upstream.url}/mcp"},
            {"name": "metadata", "url": "http://169.254.169.254/latest/meta-data/"},
            {"name": "plain", "url": f"{upstream.url}/plain"},
            {"name": "my docs", "url": f"{upstream.url}/spaced"},
        ],
        vault_credentials=[
            {
                "vault_id": "vlt_other",
                "credential_id": "vcrd_other",
                "mcp_server_url": "https://elsewhere.example/mcp",
                "type": "static_bearer",
                "token_file": str(other_file),
            },
            {
                "vault_id": "vlt_docs",
                "credential_id": "vcrd_docs",
                "mcp_server_url": f"{upstream.url}/mcp",
                "type": "static_bearer",
                "token_file": str(token_file),
            },
        ],
    )
    process.start()
    yield process
    process.stop()


def test_the_vault_token_is_added_and_the_callers_credentials_and_vault_header_are_not(
    proxy: ProxyProcess, upstream: Upstream
) -> None:
    reply = httpx.post(
        f"{proxy.api_url}/mcp/docs/sub/path?x=1",
        json={"jsonrpc": "2.0"},
        headers={
            "authorization": "Bearer from-the-harness",
            "x-api-key": "guessed",
            "x-paddock-vault-ids": "vlt_other, vlt_docs",
            "mcp-session-id": "s-1",
            "mcp-protocol-version": "2026-07-28",
            "accept": "application/json, text/event-stream",
        },
    )
    assert reply.status_code == 200
    seen = upstream.seen[-1]
    assert (seen.method, seen.path) == ("POST", "/mcp/sub/path?x=1")
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert "x-paddock-vault-ids" not in seen.headers
    assert "x-api-key" not in seen.headers
    assert seen.headers["mcp-session-id"] == "s-1"
    assert seen.headers["mcp-protocol-version"] == "2026-07-28"
    assert seen.headers["accept"] == "application/json, text/event-stream"
    # Audited by server name and decision, never with the token.
    entry = proxy.last_entry(rule="mcp:docs")
    assert entry["decision"] == "allow"
    assert entry["injected"] == "vault"
    assert TOKEN not in proxy.logs()


def test_without_a_matching_vault_no_credential_is_sent(
    proxy: ProxyProcess, upstream: Upstream
) -> None:
    for vaults in ("", "vlt_other", "vlt_unknown"):
        httpx.get(
            f"{proxy.api_url}/mcp/docs",
            headers={"authorization": "Bearer x", "x-paddock-vault-ids": vaults},
        )
        assert "authorization" not in upstream.seen[-1].headers
    # A server whose URL no credential names gets none, even from a vault the session has.
    httpx.get(f"{proxy.api_url}/mcp/plain", headers={"x-paddock-vault-ids": "vlt_docs"})
    assert upstream.seen[-1].path == "/plain"
    assert "authorization" not in upstream.seen[-1].headers


def test_an_unknown_server_is_a_404_in_the_error_envelope(
    proxy: ProxyProcess, upstream: Upstream
) -> None:
    for path in ("/mcp/nope", "/mcp/nope/sub", "/mcp", "/mcp/"):
        reply = httpx.post(f"{proxy.api_url}{path}", json={})
        assert reply.status_code == 404, path
        assert reply.json()["type"] == "error"
        assert reply.json()["error"]["type"] == "not_found_error"
    assert proxy.last_entry(rule="mcp-unknown-server")["decision"] == "deny"
    assert upstream.seen == []  # nothing went to the Claude API either


def test_a_server_name_is_percent_encoded_in_the_path(
    proxy: ProxyProcess, upstream: Upstream
) -> None:
    assert httpx.get(f"{proxy.api_url}/mcp/my%20docs").status_code == 200
    assert upstream.seen[-1].path == "/spaced"


def test_an_unreadable_token_file_is_a_401_that_names_no_secret(
    proxy: ProxyProcess, tmp_path: Path
) -> None:
    (tmp_path / "vault-token").unlink()
    reply = httpx.post(
        f"{proxy.api_url}/mcp/docs", json={}, headers={"x-paddock-vault-ids": "vlt_docs"}
    )
    assert reply.status_code == 401
    assert "vcrd_docs" in reply.json()["error"]["message"]
    assert proxy.last_entry(rule="mcp:docs:credential-unavailable")["status"] == 401


def test_an_mcp_server_url_gets_the_egress_address_rules(
    proxy: ProxyProcess, tmp_path: Path, secret_files: Secrets, upstream: Upstream
) -> None:
    # Whoever writes an Agent picks its server URLs: the metadata address is refused, and so
    # is a loopback server without an address exception, before any credential is added.
    reply = httpx.get(f"{proxy.api_url}/mcp/metadata", headers={"x-paddock-vault-ids": "vlt_docs"})
    assert reply.status_code == 403
    assert reply.json()["error"]["type"] == "permission_error"
    assert proxy.last_entry(rule="mcp:metadata:address:metadata")["status"] == 403
    (tmp_path / "bare").mkdir()
    bare = ProxyProcess(
        tmp_path / "bare", secret_files, mcp_servers=[{"name": "local", "url": upstream.url}]
    ).start()
    try:
        before = len(upstream.seen)
        assert httpx.post(f"{bare.api_url}/mcp/local", json={}).status_code == 403
        assert bare.last_entry(rule="mcp:local:address:loopback")["status"] == 403
        assert len(upstream.seen) == before
    finally:
        bare.stop()


def test_mcp_server_sent_events_pass_unbuffered(
    tmp_path: Path, secret_files: Secrets, upstream: Upstream
) -> None:
    process = ProxyProcess(
        tmp_path,
        secret_files,
        address_exceptions=[authority(upstream.url)],
        mcp_servers=[{"name": "events", "url": upstream.url}],
    ).start()
    try:
        started = time.monotonic()
        with httpx.stream("POST", f"{process.api_url}/mcp/events/sse", json={}, timeout=5) as r:
            events = (line for line in r.iter_lines() if line.startswith("event:"))
            assert next(events) == "event: first"
            assert not upstream.release.is_set()  # the second is still held upstream
            upstream.release.set()
            assert list(events) == ["event: second"]
        assert time.monotonic() - started < 5
    finally:
        process.stop()


async def test_a_real_mcp_server_through_the_proxy(tmp_path: Path, secret_files: Secrets) -> None:
    server = McpServerProcess(tmp_path / "mcp").start()
    process = ProxyProcess(
        tmp_path,
        secret_files,
        address_exceptions=[authority(server.url)],
        mcp_servers=[{"name": "tools", "url": server.url}],
        vault_credentials=[
            {
                "vault_id": "vlt_a",
                "credential_id": "vcrd_a",
                "mcp_server_url": server.url,
                "type": "static_bearer",
                "token_file": str(server.token_file),
            }
        ],
    ).start()
    try:
        http = httpx2.AsyncClient(headers={"X-Paddock-Vault-Ids": "vlt_a"})
        async with Client(
            streamable_http_client(f"{process.api_url}/mcp/tools", http_client=http)
        ) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            assert "echo" in names
            result = await client.call_tool("echo", {"text": "hi"})
            assert result.content[0].text == "echo: hi"  # type: ignore[union-attr]
        await http.aclose()
        assert server.token not in process.logs()
    finally:
        process.stop()
        server.stop()
