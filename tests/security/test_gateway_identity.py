"""Kubernetes identities at the gateway, against the real kube-apiserver (token
authentication with ServiceAccount tokens from TokenRequest, RBAC authorization).

A ServiceAccount's token is sent as `Authorization: Bearer`; the namespace comes from
`x-paddock-namespace`. What the apiserver's RBAC allows decides, as it would for kubectl:
nothing bound is 403, a Role on sessions in the namespace is 200, the same Role in another
namespace is 403, a token the apiserver does not know is 401. Each test tries what an
attacker would (someone else's namespace, a forged or foreign token, a flood) and checks
the answer a client sees.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest
import yaml
from tests.gateway.stack import Stack

from paddock.gateway.auth import KubernetesAuth
from paddock.kube import Credentials, KubeClient
from paddock.testing.ports import free_port, wait_until_async

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def envelope(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == error_type, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body


@dataclass
class Accounts:
    """ServiceAccounts in tenant A's namespace and a fresh token of each."""

    namespace: str
    tokens: dict[str, str]

    def headers(self, name: str, namespace: str | None = None) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.tokens[name]}",
            "x-paddock-namespace": namespace or self.namespace,
        }


def _token(kube: httpx.Client, namespace: str, name: str) -> str:
    created = kube.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts", json={"metadata": {"name": name}}
    )
    assert created.status_code == 201, created.text
    reply = kube.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        json={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["status"]["token"])


def grant(
    kube: httpx.Client,
    namespace: str,
    account: tuple[str, str],
    rules: list[dict[str, Any]],
) -> None:
    """A Role with ``rules`` in ``namespace``, bound to ServiceAccount (namespace, name)."""
    name = f"paddock-{secrets.token_hex(3)}"
    role = kube.post(
        f"{RBAC}/namespaces/{namespace}/roles", json={"metadata": {"name": name}, "rules": rules}
    )
    assert role.status_code == 201, role.text
    binding = kube.post(
        f"{RBAC}/namespaces/{namespace}/rolebindings",
        json={
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "namespace": account[0], "name": account[1]}],
        },
    )
    assert binding.status_code == 201, binding.text


SESSION_DRIVER = [
    {"apiGroups": ["paddock.dev"], "resources": ["sessions"], "verbs": ["get", "list", "create", "update"]}
]  # fmt: skip


@pytest.fixture
async def accounts(stack: Stack) -> AsyncIterator[Accounts]:
    """``nobody`` (no RBAC), ``driver`` (may read and drive sessions in A's namespace) and
    ``elsewhere`` (the same Role, in B's namespace only), all ServiceAccounts of A's
    namespace."""
    namespace = stack.a.namespace
    with stack.kube() as kube:
        tokens = {name: _token(kube, namespace, name) for name in ("nobody", "driver", "elsewhere")}
        grant(kube, namespace, (namespace, "driver"), SESSION_DRIVER)
        grant(kube, stack.b.namespace, (namespace, "elsewhere"), SESSION_DRIVER)
    return Accounts(namespace, tokens)


async def _agent_and_environment(stack: Stack) -> tuple[str, str]:
    async with stack.http() as http:  # the tenant's API key sets up what sessions need
        agent = await http.post("/v1/agents", json={"name": "k8s", "model": "claude-sonnet-4-6"})
        environment = await http.post("/v1/environments", json={"name": "k8s-env"})
    return agent.json()["id"], environment.json()["id"]


async def test_rbac_decides_what_a_service_account_may_do(stack: Stack, accounts: Accounts) -> None:
    agent, environment = await _agent_and_environment(stack)
    body = {"agent": agent, "environment_id": environment}
    async with stack.http(auth=False) as http:
        # Authenticated, but nothing bound: 403, for reading and for writing alike.
        denied = envelope(
            await http.get("/v1/sessions", headers=accounts.headers("nobody")),
            403,
            "permission_error",
        )
        assert "nobody" in denied["error"]["message"]
        assert "list" in denied["error"]["message"]
        envelope(
            await http.post("/v1/sessions", json=body, headers=accounts.headers("nobody")),
            403,
            "permission_error",
        )
        # A Role on sessions in the namespace: list and create work.
        listed = await http.get("/v1/sessions", headers=accounts.headers("driver"))
        assert listed.status_code == 200, listed.text
        created = await http.post("/v1/sessions", json=body, headers=accounts.headers("driver"))
        assert created.status_code == 200, created.text
        session = created.json()["id"]
        got = await http.get(f"/v1/sessions/{session}", headers=accounts.headers("driver"))
        assert got.status_code == 200
        assert got.json()["id"] == session
        listed = await http.get("/v1/sessions", headers=accounts.headers("driver"))
        assert [s["id"] for s in listed.json()["data"]] == [session]
        # The Role covers sessions only: agents need their own grant, deleting its own verb.
        envelope(
            await http.get("/v1/agents", headers=accounts.headers("driver")),
            403,
            "permission_error",
        )
        envelope(
            await http.delete(f"/v1/sessions/{session}", headers=accounts.headers("driver")),
            403,
            "permission_error",
        )
    # What the API made is a Session in the namespace the caller named.
    (resource,) = stack.resources("sessions", accounts.namespace)
    assert resource["metadata"]["labels"]["paddock.dev/session-id"] == session


async def test_rbac_of_another_namespace_does_not_reach_this_one(
    stack: Stack, accounts: Accounts
) -> None:
    async with stack.http(auth=False) as http:
        # `elsewhere` may drive sessions in B's namespace, not in its own (A's).
        envelope(
            await http.get("/v1/sessions", headers=accounts.headers("elsewhere")),
            403,
            "permission_error",
        )
        ok = await http.get(
            "/v1/sessions", headers=accounts.headers("elsewhere", stack.b.namespace)
        )
        assert ok.status_code == 200, ok.text
        # `driver` may drive A's sessions, and naming B's namespace gets it nothing there.
        envelope(
            await http.get("/v1/sessions", headers=accounts.headers("driver", stack.b.namespace)),
            403,
            "permission_error",
        )
        # An API key grants one namespace; naming another is refused, not obeyed.
        envelope(
            await http.get(
                "/v1/sessions",
                headers={"x-api-key": stack.a.key, "x-paddock-namespace": stack.b.namespace},
            ),
            403,
            "permission_error",
        )


async def test_bad_tokens_get_401_and_bad_namespaces_400(stack: Stack, accounts: Accounts) -> None:
    real = accounts.tokens["driver"]
    header, payload, signature = real.split(".")
    forged = [
        "not-a-token",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl",  # made up
        f"{header}.{payload}.{signature[::-1]}",  # the real token, signature broken
        f"{header}.{payload}.",  # signature dropped
    ]
    async with stack.http(auth=False) as http:
        for token in forged:
            headers = {
                "Authorization": f"Bearer {token}",
                "x-paddock-namespace": accounts.namespace,
            }
            envelope(await http.get("/v1/sessions", headers=headers), 401, "authentication_error")
        # A token that is valid but names no namespace (the gateway has no default).
        no_namespace = {"Authorization": f"Bearer {real}"}
        body = envelope(
            await http.get("/v1/sessions", headers=no_namespace), 400, "invalid_request_error"
        )
        assert "x-paddock-namespace" in body["error"]["message"]
        for bad in ("UPPER", "a" * 64, "../kube-system", "a_b", "-a"):
            headers = accounts.headers("driver", bad)
            envelope(await http.get("/v1/sessions", headers=headers), 400, "invalid_request_error")


async def test_the_official_sdk_works_with_a_kubernetes_token(
    stack: Stack, accounts: Accounts
) -> None:
    # The SDK sends `api_key` and `auth_token` alike as `Authorization: Bearer`.
    for credential in ("api_key", "auth_token"):
        client = anthropic.AsyncAnthropic(
            base_url=stack.url,
            max_retries=0,
            default_headers={"x-paddock-namespace": accounts.namespace},
            **{credential: accounts.tokens["driver"]},
        )
        async with client:
            page = await client.beta.sessions.list()
            assert page.data == []
            with pytest.raises(anthropic.PermissionDeniedError) as denied:
                await client.beta.agents.list()
            assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


async def test_reviews_are_cached_and_a_new_grant_applies_within_seconds(
    stack: Stack, accounts: Accounts
) -> None:
    assert stack.gateway is not None
    assert stack.gateway.kubernetes is not None
    kubernetes = stack.gateway.kubernetes
    tokens_before, access_before = kubernetes.tokens.reviews, kubernetes.access.reviews
    async with stack.http(auth=False) as http:
        for _ in range(50):
            response = await http.get("/v1/sessions", headers=accounts.headers("driver"))
            assert response.status_code == 200
    # A stream of requests costs the apiserver one review of each kind, not fifty.
    assert kubernetes.tokens.reviews - tokens_before == 1
    assert kubernetes.access.reviews - access_before == 1
    # A denial is cached briefly, not for good: a Role granted now applies within seconds.
    async with stack.http(auth=False) as http:
        envelope(
            await http.get("/v1/sessions", headers=accounts.headers("nobody")),
            403,
            "permission_error",
        )
        with stack.kube() as kube:
            grant(kube, accounts.namespace, (accounts.namespace, "nobody"), SESSION_DRIVER)

        async def allowed() -> bool:
            response = await http.get("/v1/sessions", headers=accounts.headers("nobody"))
            assert response.status_code in (200, 403), response.text
            return response.status_code == 200

        await wait_until_async(allowed, timeout=15, what="the new RoleBinding to apply")


def _unreachable_kube(stack: Stack) -> KubeClient:
    """A client with the admin's credentials for an apiserver address nothing listens on."""
    config = yaml.safe_load(stack.control_plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    path = stack.control_plane.dir / f"kubeconfig-unreachable-{secrets.token_hex(3)}"
    path.write_text(yaml.safe_dump(config))
    return KubeClient.from_credentials(Credentials.load(str(path)), connect_timeout_s=2)


async def test_an_apiserver_outage_is_a_503_and_is_not_remembered_as_a_denial(
    stack: Stack, accounts: Accounts
) -> None:
    assert stack.gateway is not None
    assert stack.gateway.kubernetes is not None
    working = stack.gateway.kubernetes
    async with stack.http(auth=False) as http:
        # API keys are still read through the working client; only the reviews fail.
        unreachable = _unreachable_kube(stack)
        stack.gateway.kubernetes = KubernetesAuth(unreachable)
        try:
            for _ in range(3):  # every try asks again: the failure is not cached
                body = envelope(
                    await http.get("/v1/sessions", headers=accounts.headers("driver")),
                    503,
                    "api_error",
                )
                assert "Kubernetes" in body["error"]["message"]
            assert stack.gateway.kubernetes.tokens.reviews == 3
            assert len(stack.gateway.kubernetes.tokens) == 0
            # The apiserver is back (the same caches, a working client): the token works.
            stack.gateway.kubernetes.kube = working.kube
            ok = await http.get("/v1/sessions", headers=accounts.headers("driver"))
            assert ok.status_code == 200, ok.text
        finally:
            stack.gateway.kubernetes = working
            await unreachable.aclose()


async def test_the_consoles_status_of_a_collection_takes_the_verb_of_listing_it(
    stack: Stack, accounts: Accounts
) -> None:
    async with stack.http(auth=False) as http:
        listed = await http.get("/v1/console/sessions", headers=accounts.headers("driver"))
        assert listed.status_code == 200, listed.text
        for plural in ("agents", "environments"):
            denied = envelope(
                await http.get(f"/v1/console/{plural}", headers=accounts.headers("driver")),
                403,
                "permission_error",
            )
            assert f"list {plural}.paddock.dev" in denied["error"]["message"]
