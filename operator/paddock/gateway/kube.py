"""The few Kubernetes API calls the gateway makes, asynchronous, over httpx.

Credentials come from `paddock.kube.Credentials`, the loader every Paddock client shares
(kubeconfig with client certificates, tokens or exec plugins; or the in-cluster
ServiceAccount, whose token file it re-reads as it rotates). Requests go through one
`httpx.AsyncClient`, so the gateway's event loop never waits on a thread pool (except for an
exec plugin's refresh) and calls to the apiserver multiplex over a few connections.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import httpx

from paddock.kube import Credentials
from paddock.models.common import GROUP, VERSION

_JSON_MERGE = {"Content-Type": "application/merge-patch+json"}
_ATTEMPTS = 4


def _retry_after(header: str | None) -> float:
    try:
        return min(max(float(header or 1), 0.1), 2.0)
    except ValueError:
        return 1.0


class KubeError(Exception):
    """The apiserver refused a request, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Kube:
    """Namespaced reads and writes of Paddock objects and Secrets.

    Every method raises ``KubeError`` when the apiserver answers with an error (``get``
    returns None on 404 instead) or cannot be reached.
    """

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.http = httpx.AsyncClient(
            base_url=credentials.host,
            verify=credentials.ssl_context,
            timeout=httpx.Timeout(15, connect=5),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None) -> Kube:
        """The client of ``kubeconfig``; with None, the in-cluster ServiceAccount when
        running in a pod, else the default kubeconfig ($KUBECONFIG or ~/.kube/config)."""
        return cls(Credentials.load(kubeconfig))

    async def close(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call; the decoded JSON answer. A 429 (the apiserver's priority and
        fairness shedding load) is retried after its Retry-After, as client-go does."""
        for attempt in range(_ATTEMPTS):
            try:
                response = await self.http.request(
                    method,
                    path,
                    params=params,
                    json=json,
                    headers={**await self.credentials.headers(), **(headers or {})},
                )
            except httpx.HTTPError as exc:
                raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from exc
            if response.status_code != 429 or attempt == _ATTEMPTS - 1:
                break
            await asyncio.sleep(_retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 400:
            try:
                status = response.json()
            except ValueError:
                status = {}
            raise KubeError(
                response.status_code,
                str(status.get("reason") or response.reason_phrase),
                str(status.get("message") or response.text[:500]),
            )
        result: dict[str, Any] = response.json()
        return result

    # Paddock objects (`plural` is agents, environments or sessions).

    @staticmethod
    def _path(plural: str, namespace: str, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
        return f"{base}/{name}" if name else base

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", self._path(plural, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, plural: str, namespace: str, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        answer = await self.request("GET", self._path(plural, namespace), params=params)
        items: list[dict[str, Any]] = answer.get("items", [])
        return items

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request(
            "POST", self._path(plural, namespace), json=body, params={"fieldValidation": "Strict"}
        )

    async def replace(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT ``body``; its ``metadata.resourceVersion`` makes it fail with 409 if the
        object changed since it was read."""
        path = self._path(plural, namespace, body["metadata"]["name"])
        return await self.request("PUT", path, json=body, params={"fieldValidation": "Strict"})

    async def patch(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch."""
        path = self._path(plural, namespace, name)
        return await self.request("PATCH", path, json=patch, headers=_JSON_MERGE)

    async def delete(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Delete; the answer is the object (still there while finalizers run) or a Status
        (gone at once). None if it did not exist."""
        try:
            return await self.request("DELETE", self._path(plural, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_secrets(
        self, namespace: str, label_selector: str
    ) -> builtins.list[dict[str, Any]]:  # `list` here is the method above
        answer = await self.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/secrets",
            params={"labelSelector": label_selector},
        )
        items: list[dict[str, Any]] = answer.get("items", [])
        return items
