"""Vaults and credentials through the official SDK: Vault resources whose credentials
reference Secrets; the secret values are in those Secrets and in no answer."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx2
import pytest

from paddock.eventlog import SessionState
from paddock.gateway.objects import METADATA_ONLY
from paddock.kube import MERGE, path

from .stack import Stack

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """Every response body the SDK client received, to search for secrets in."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    async def __call__(self, response: httpx2.Response) -> None:
        await response.aread()
        self.bodies.append(response.text)

    def client(self, stack: Stack) -> anthropic.AsyncAnthropic:
        http = httpx2.AsyncClient(event_hooks={"response": [self]}, timeout=30)
        return stack.client(http_client=http)


def secret_data(stack: Stack, namespace: str, name: str) -> dict[str, str]:
    with stack.kube() as kube:
        response = kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    assert response.status_code == 200, response.text
    return {k: base64.b64decode(v).decode() for k, v in response.json()["data"].items()}


def vault_resource(stack: Stack, vault_id: str) -> dict[str, Any]:
    (found,) = [
        r
        for r in stack.resources("vaults", stack.a.namespace)
        if r["metadata"]["labels"]["paddock.dev/vault-id"] == vault_id
    ]
    return found


async def test_vault_and_credential_crud_keeps_secrets_write_only(stack: Stack) -> None:
    recorder = Recorder()
    client = recorder.client(stack)
    bearer = f"bearer-{secrets.token_hex(8)}"
    access, refresh, client_secret = (f"{w}-{secrets.token_hex(8)}" for w in ("at", "rt", "cs"))
    new_bearer, new_refresh = f"bearer2-{secrets.token_hex(8)}", f"rt2-{secrets.token_hex(8)}"

    vault = await client.beta.vaults.create(display_name="Team tools", metadata={"team": "a"})
    assert vault.id.startswith("vlt_")
    assert vault.type == "vault"
    assert (vault.display_name, vault.metadata, vault.archived_at) == (
        "Team tools",
        {"team": "a"},
        None,
    )
    assert (await client.beta.vaults.retrieve(vault.id)).id == vault.id

    static = await client.beta.vaults.credentials.create(
        vault.id,
        display_name="Tickets",
        auth={
            "type": "static_bearer",
            "token": bearer,
            "mcp_server_url": "https://t.example.com/mcp",
        },
    )
    assert static.id.startswith("vcrd_")
    assert static.vault_id == vault.id
    assert static.auth.type == "static_bearer"
    assert static.auth.mcp_server_url == "https://t.example.com/mcp"
    expires = datetime.now(UTC) + timedelta(hours=1)
    oauth = await client.beta.vaults.credentials.create(
        vault.id,
        auth={
            "type": "mcp_oauth",
            "access_token": access,
            "mcp_server_url": "https://docs.example.com/mcp",
            "expires_at": expires,
            "refresh": {
                "refresh_token": refresh,
                "client_id": "paddock",
                "token_endpoint": "https://auth.example.com/token",
                "token_endpoint_auth": {
                    "type": "client_secret_basic",
                    "client_secret": client_secret,
                },
                "scope": "read",
            },
        },
    )
    assert oauth.auth.type == "mcp_oauth"
    assert oauth.auth.refresh is not None
    assert oauth.auth.refresh.token_endpoint_auth.type == "client_secret_basic"
    assert (oauth.auth.refresh.client_id, oauth.auth.refresh.scope) == ("paddock", "read")
    assert oauth.auth.expires_at is not None
    assert abs(oauth.auth.expires_at - expires) < timedelta(seconds=1)

    # The values are in Secrets the Vault owns; the Vault references them by key.
    resource = vault_resource(stack, vault.id)
    entries = {e["id"]: e for e in resource["spec"]["credentials"]}
    token_ref = entries[static.id]["tokenRef"]
    assert secret_data(stack, stack.a.namespace, token_ref["name"]) == {"token": bearer}
    oauth_secret = entries[oauth.id]["accessTokenRef"]["name"]
    assert secret_data(stack, stack.a.namespace, oauth_secret) == {
        "access_token": access,
        "refresh_token": refresh,
        "client_secret": client_secret,
    }
    with stack.kube() as kube:
        owned = kube.get(f"/api/v1/namespaces/{stack.a.namespace}/secrets/{oauth_secret}").json()
    assert owned["metadata"]["ownerReferences"][0]["uid"] == resource["metadata"]["uid"]

    updated = await client.beta.vaults.credentials.update(
        static.id,
        vault_id=vault.id,
        auth={"type": "static_bearer", "token": new_bearer},
        metadata={"rotated": "yes"},
    )
    assert updated.metadata == {"rotated": "yes"}
    assert secret_data(stack, stack.a.namespace, token_ref["name"]) == {"token": new_bearer}
    await client.beta.vaults.credentials.update(
        oauth.id,
        vault_id=vault.id,
        auth={"type": "mcp_oauth", "refresh": {"refresh_token": new_refresh, "scope": ""}},
    )
    got = await client.beta.vaults.credentials.retrieve(oauth.id, vault_id=vault.id)
    assert got.auth.type == "mcp_oauth"
    assert got.auth.refresh is not None
    assert got.auth.refresh.scope is None
    assert secret_data(stack, stack.a.namespace, oauth_secret)["refresh_token"] == new_refresh

    listed = [c.id async for c in client.beta.vaults.credentials.list(vault.id)]
    assert listed == [oauth.id, static.id]
    validation = await client.beta.vaults.credentials.mcp_oauth_validate(
        oauth.id, vault_id=vault.id
    )
    assert (validation.status, validation.has_refresh_token) == ("unknown", True)

    archived = await client.beta.vaults.credentials.archive(static.id, vault_id=vault.id)
    assert archived.archived_at is not None
    assert [c.id async for c in client.beta.vaults.credentials.list(vault.id)] == [oauth.id]
    everything = client.beta.vaults.credentials.list(vault.id, include_archived=True)
    assert {c.id async for c in everything} == {oauth.id, static.id}
    deleted = await client.beta.vaults.credentials.delete(oauth.id, vault_id=vault.id)
    assert (deleted.id, deleted.type) == (oauth.id, "vault_credential_deleted")
    with stack.kube() as kube:
        for name in (oauth_secret, token_ref["name"]):  # deleted; archived: its value goes
            assert (
                kube.get(f"/api/v1/namespaces/{stack.a.namespace}/secrets/{name}").status_code
                == 404
            )

    renamed = await client.beta.vaults.update(
        vault.id, display_name="Renamed", metadata={"team": None}
    )
    assert (renamed.display_name, renamed.metadata) == ("Renamed", {})
    assert vault.id in {v.id async for v in client.beta.vaults.list()}
    archived_vault = await client.beta.vaults.archive(vault.id)
    assert archived_vault.archived_at is not None
    assert vault.id not in {v.id async for v in client.beta.vaults.list()}
    assert vault.id in {v.id async for v in client.beta.vaults.list(include_archived=True)}
    gone = await client.beta.vaults.delete(vault.id)
    assert (gone.id, gone.type) == (vault.id, "vault_deleted")
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.vaults.retrieve(vault.id)

    # No answer carried a secret value, nor does the Vault resource.
    assert len(recorder.bodies) > 15
    values = (bearer, access, refresh, client_secret, new_bearer, new_refresh)
    for body in recorder.bodies:
        for value in values:
            assert value not in body
    for value in values:
        assert value not in str(resource)


async def test_credentials_refused_cleanly(stack: Stack) -> None:
    client = stack.client()
    vault = await client.beta.vaults.create(display_name="refusals")
    async with stack.http() as http:
        base = f"/v1/vaults/{vault.id}/credentials"
        cases = [
            {
                "auth": {
                    "type": "environment_variable",
                    "secret_name": "X",
                    "secret_value": "v",
                    "networking": {"type": "unrestricted"},
                }
            },
            {"auth": {"type": "static_bearer", "token": "t", "mcp_server_url": "ftp://x"}},
            {
                "auth": {
                    "type": "mcp_oauth",
                    "access_token": "t",
                    "mcp_server_url": "https://x.example",
                    "expires_at": "2001-01-01T00:00:00Z",
                }
            },
            {"auth": {"type": "basic"}},
        ]
        for body in cases:
            response = await http.post(base, json=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["type"] == "invalid_request_error"
            assert "secret_value" not in response.json()["error"]["message"]
        made = await http.post(
            base,
            json={
                "auth": {
                    "type": "static_bearer",
                    "token": "t1",
                    "mcp_server_url": "https://x.example/mcp",
                }
            },
        )
        assert made.status_code == 200
        twice = await http.post(
            base,
            json={
                "auth": {
                    "type": "static_bearer",
                    "token": "t2",
                    "mcp_server_url": "https://x.example/mcp",
                }
            },
        )
        assert twice.status_code == 409
        retyped = await http.post(
            f"{base}/{made.json()['id']}", json={"auth": {"type": "mcp_oauth", "access_token": "a"}}
        )
        assert retyped.status_code == 400
        other = stack.http(stack.b)
        async with other:
            assert (await other.get(f"/v1/vaults/{vault.id}")).status_code == 404
        assert (await http.get(f"{base}/vcrd_nothere")).status_code == 404


async def test_a_session_uses_the_vaults_it_is_created_with(stack: Stack) -> None:
    client = stack.client()
    environment = await client.beta.environments.create(name="vault-env")
    agent = await client.beta.agents.create(name="v", model="claude-sonnet-4-6")
    first = await client.beta.vaults.create(display_name="first")
    second = await client.beta.vaults.create(display_name="second")
    session = await client.beta.sessions.create(
        agent=agent.id, environment_id=environment.id, vault_ids=[first.id, second.id]
    )
    assert session.vault_ids == [first.id, second.id]
    assert (await client.beta.sessions.retrieve(session.id)).vault_ids == [first.id, second.id]
    resource = stack.resource("sessions", stack.a.namespace, session.id.lower().replace("_", "-"))
    assert resource is not None
    assert resource["spec"]["vaultIds"] == [first.id, second.id]
    settings = await SessionState(stack.redis, stack.a.namespace).settings(session.id)
    assert settings is not None
    assert settings.vault_ids == [first.id, second.id]

    async with stack.http() as http:
        # Create-only, as in the reference.
        update = await http.post(f"/v1/sessions/{session.id}", json={"vault_ids": []})
        assert update.status_code == 400
        body = {"agent": agent.id, "environment_id": environment.id}
        missing = await http.post("/v1/sessions", json={**body, "vault_ids": ["vlt_nothere"]})
        assert missing.status_code == 404
        assert missing.json()["error"]["details"] == {"error_code": "vault_not_found_error"}
        await client.beta.vaults.archive(second.id)
        archived = await http.post("/v1/sessions", json={**body, "vault_ids": [second.id]})
        assert archived.status_code == 400
        assert archived.json()["error"]["details"] == {"error_code": "vault_archived_error"}
    # Another tenant's vault is not found either.
    other = await stack.client(stack.b).beta.vaults.create(display_name="b's")
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.create(
            agent=agent.id, environment_id=environment.id, vault_ids=[other.id]
        )
    # The Session refuses a change of its vaults (kubectl).
    resource["spec"]["vaultIds"] = [first.id]
    with stack.kube() as kube:
        path = f"/apis/paddock.dev/v1alpha1/namespaces/{stack.a.namespace}/sessions"
        response = kube.put(f"{path}/{resource['metadata']['name']}", json=resource)
    assert response.status_code == 422
    assert "vaultIds is immutable" in response.text


def test_the_vault_schema_takes_references_not_values(stack: Stack) -> None:
    """The declarative form: a Vault of Secret references is accepted; a value, a reference
    of the other credential type, or a client secret auth without its secret is refused."""
    good = {
        "id": "vcrd_docs",
        "type": "mcp_oauth",
        "mcpServerUrl": "https://docs.example.com/mcp",
        "accessTokenRef": {"name": "docs", "key": "access_token"},
        "refresh": {
            "tokenEndpoint": "https://auth.example.com/token",
            "clientId": "paddock",
            "refreshTokenRef": {"name": "docs", "key": "refresh_token"},
            "tokenEndpointAuth": {
                "type": "client_secret_basic",
                "clientSecretRef": {"name": "docs", "key": "client_secret"},
            },
        },
    }
    bad = [
        {**good, "accessToken": "at-value"},
        {**good, "tokenRef": {"name": "docs", "key": "token"}},
        {
            **good,
            "refresh": {**good["refresh"], "tokenEndpointAuth": {"type": "client_secret_post"}},
        },
        {**good, "type": "static_bearer"},
    ]
    path = f"/apis/paddock.dev/v1alpha1/namespaces/{stack.a.namespace}/vaults"
    with stack.kube() as kube:
        for i, credential in enumerate([good, *bad]):
            body = {
                "apiVersion": "paddock.dev/v1alpha1",
                "kind": "Vault",
                "metadata": {"name": f"gitops-{i}"},
                "spec": {"credentials": [credential]},
            }
            response = kube.post(path, json=body, params={"fieldValidation": "Strict"})
            # Strict field validation refuses the unknown field (400), CEL rules the rest (422).
            refused = (400,) if "accessToken" in credential else (422,)
            expected = (201,) if credential is good else refused
            assert response.status_code in expected, (i, response.text)
            assert "at-value" not in response.text


async def test_the_gateways_secret_writes_get_no_value_back(stack: Stack) -> None:
    """The apiserver answers writes with the object: the gateway asks for metadata only, so
    not even its answers hold a secret value."""
    assert stack.gateway is not None
    kube, namespace = stack.gateway.kube, stack.a.namespace
    url = path("v1", "Secret", namespace)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe"}}
    answers = [
        await kube.request(
            "POST", url, json={**secret, "stringData": {"k": "v-one"}}, headers=METADATA_ONLY
        ),
        await kube.request(
            "PATCH",
            f"{url}/probe",
            content=json.dumps({"stringData": {"k": "v-two"}}),
            headers={**METADATA_ONLY, "Content-Type": MERGE},
        ),
        await kube.request("DELETE", f"{url}/probe", headers=METADATA_ONLY),
    ]
    for answer in answers:
        assert answer["kind"] in ("PartialObjectMetadata", "Status")
        assert "data" not in answer
        assert "v-one" not in json.dumps(answer)
        assert "v-two" not in json.dumps(answer)
